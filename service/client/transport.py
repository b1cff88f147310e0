"""HTTP for the client: one aiohttp session, the token, time limits, retries, errors, pages.

Retries follow one rule: a request is sent again only when doing it twice cannot do harm.

* Connecting failed (refused, no route): nothing was sent, any request is retried.
* 503 or 507 with ``Retry-After`` (the database busy or full; BobGen wrote nothing), or the
  connection dropped after sending: retried only when the request is idempotent: reads,
  ``PUT`` and ``DELETE``, updates carrying ``If-Match``, creates with an id the caller chose,
  log appends (their sequence numbers make a repeat a no-op). A plain ``POST`` is not: it
  could create a second record.

Waits grow from ``Retries.backoff_s``, doubling, with full jitter (so that many clients that
failed together do not come back together), never shorter than the server's ``Retry-After``
and never longer than ``Retries.max_wait_s``.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from multidict import CIMultiDict

from service.client.errors import BobGenError, ConnectionFailed, Unavailable, error_class

DEFAULT_URL = "http://127.0.0.1:8080"
#: The environment variables the client reads (not the server's: those are in Config).
URL_VARIABLE, TOKEN_VARIABLE = "BOBGEN_URL", "BOBGEN_TOKEN"
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})


class Row(dict[str, Any]):
    """One record as BobGen returned it. ``etag`` is the version the server tagged it with;
    the update methods send it back as ``If-Match``, so a change made by someone else in
    between is refused (:class:`~service.client.errors.Conflict`) instead of overwritten."""

    def __init__(self, data: Mapping[str, Any], etag: str | None = None) -> None:
        super().__init__(data)
        self.etag = etag

    @property
    def if_match(self) -> str:
        """What to send as ``If-Match`` for a change based on this copy."""
        if self.etag:
            return self.etag
        if isinstance(self.get("version"), int):
            return f'"{self["version"]}"'
        raise ValueError("this record carries no version: read it with get() first")


@dataclass(frozen=True, slots=True)
class Retries:
    """How hard to try. ``attempts`` counts the first try; 1 turns retries off."""

    attempts: int = 5
    backoff_s: float = 0.2
    max_wait_s: float = 10.0

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        ceiling = min(self.max_wait_s, self.backoff_s * 2 ** (attempt - 1))
        return min(self.max_wait_s, max(random.uniform(0, ceiling), retry_after or 0.0))


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or text for text/* answers, or None for 204

    def row(self) -> Row:
        if not isinstance(self.body, dict):
            raise TypeError(f"expected a JSON object, got {type(self.body).__name__}")
        return Row(self.body, self.headers.get("ETag"))


class Transport:
    """One aiohttp session and the rules above. Opened lazily, closed by :meth:`close`."""

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: Retries | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = (base_url or os.environ.get(URL_VARIABLE) or DEFAULT_URL).rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_VARIABLE)
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.retries = retries or Retries()
        self._session = session
        self._own_session = session is None
        self.retried = 0  # requests sent again, in all (for logs and tests)

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        headers.update(extra or {})
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> Answer:
        """Send one request (and its safe retries); the answer, or the error it was."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        safe = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        query = _query(params)
        attempt = 0
        while True:
            attempt += 1
            last = attempt >= self.retries.attempts
            try:
                answer = await self._send(method, path, query, json, self._headers(headers))
            except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
                if last:
                    raise ConnectionFailed(0, "connection_failed", str(exc)) from exc
                await self._pause(attempt)
                continue
            except (aiohttp.ClientError, TimeoutError) as exc:  # sent, maybe received
                if last or not safe:
                    raise ConnectionFailed(0, "connection_failed", repr(exc)) from exc
                await self._pause(attempt)
                continue
            if answer.status < 400:
                return answer
            error = _error(answer)
            retry_after = getattr(error, "retry_after", None)
            if isinstance(error, Unavailable) and retry_after is not None and safe and not last:
                await self._pause(attempt, retry_after)
                continue
            raise error

    async def _pause(self, attempt: int, retry_after: float | None = None) -> None:
        self.retried += 1
        await asyncio.sleep(self.retries.wait(attempt, retry_after))

    async def _send(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        json: Any,
        headers: dict[str, str],
    ) -> Answer:
        assert self._session is not None
        url = self.base_url + path
        async with self._session.request(
            method, url, params=params, json=json, headers=headers
        ) as resp:
            if resp.status == 204:
                body: Any = None
            elif resp.content_type == "application/json":
                body = await resp.json()
            else:
                body = await resp.text()
            return Answer(resp.status, CIMultiDict(resp.headers), body)

    async def items(self, path: str, params: Mapping[str, Any] | None = None) -> AsyncIterator[Row]:
        """Every item of a paged list, following ``next`` until there is none."""
        query = dict(params or {})
        while True:
            page = (await self.request("GET", path, params=query)).body
            for item in page["items"]:
                yield Row(item)
            if not page.get("next"):
                return
            query.pop("offset", None)  # a cursor continues where any page left off
            query["cursor"] = page["next"]


def _query(params: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """Query parameters as BobGen reads them: None left out, booleans as true/false."""
    out: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((key, str(value)))
    return out


def _error(answer: Answer) -> BobGenError:
    body = answer.body if isinstance(answer.body, dict) else {}
    found = body.get("error")
    envelope: dict[str, Any] = found if isinstance(found, dict) else {}
    code = str(envelope.get("code") or f"http_{answer.status}")
    message = str(envelope.get("message") or answer.body or "")
    details = envelope.get("details") if isinstance(envelope.get("details"), dict) else {}
    request_id = envelope.get("request_id") or answer.headers.get("X-Request-ID")
    cls = error_class(answer.status)
    if cls is Unavailable:
        return Unavailable(
            answer.status,
            code,
            message,
            details,
            request_id,
            retry_after=_seconds(answer.headers.get("Retry-After")),
        )
    return cls(answer.status, code, message, details, request_id)


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: not what BobGen sends; wait by the back-off alone
        return None
