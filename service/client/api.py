"""The client's methods, one group per part of the API (docs/client.md).

Each method names the route it calls with :func:`route`; ``tests/test_client.py`` holds that
set to the server's ``/openapi.json``, so a route added without a method here fails a test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

from service.client.errors import Unavailable
from service.client.transport import Answer, Retries, Row, Transport

F = TypeVar("F", bound=Callable[..., Any])

#: (method, path template) of every route a client method calls.
ROUTES: set[tuple[str, str]] = set()
#: Routes for browsers, not programs: the HTML pages and their static files.
PAGES = frozenset(
    {
        ("GET", "/docs"),
        ("GET", "/docs/static/{name}"),
        ("GET", "/ui"),
        ("GET", "/ui/static/{name}"),
    }
)
PROJECT_COLLECTIONS = ("ideas", "context", "workflows", "gap-analyses")


def route(method: str, path: str) -> Callable[[F], F]:
    """Record that the decorated method calls ``method path``."""
    ROUTES.add((method, path))
    return lambda function: function


def _with_id(body: dict[str, Any], id: str | None) -> tuple[dict[str, Any], bool]:
    """A create body, and whether sending it twice is harmless (the caller chose the id)."""
    if id is None:
        return body, False
    return {**body, "id": id}, True


def _fields(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


class _Group:
    def __init__(self, http: Transport) -> None:
        self._http = http

    async def _row(self, method: str, path: str, **kwargs: Any) -> Row:
        return (await self._http.request(method, path, **kwargs)).row()

    async def _update(self, path: str, row: Row, changes: Mapping[str, Any]) -> Row:
        """PATCH ``changes`` on the version ``row`` was read at (412 -> Conflict)."""
        headers = {"If-Match": row.if_match}
        return await self._row("PATCH", path, json=dict(changes), headers=headers, idempotent=True)


class Status(_Group):
    """``/bobgen/status``: status records."""

    @route("GET", "/bobgen/status")
    async def page(
        self,
        *,
        limit: int | None = None,
        offset: int | None = None,
        cursor: str | None = None,
        fields: Iterable[str] | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """One page as the server sent it: ``items``, ``total``, ``next``..."""
        params = _fields(limit=limit, offset=offset, cursor=cursor, version=version)
        if fields is not None:
            params["fields"] = ",".join(fields)
        body: dict[str, Any] = (
            await self._http.request("GET", "/bobgen/status", params=params)
        ).body
        return body

    def list(self, *, version: str | None = None, limit: int | None = None) -> AsyncIterator[Row]:
        """Every record (of ``version``), in id order, page after page."""
        return self._http.items("/bobgen/status", _fields(version=version, limit=limit))

    @route("GET", "/bobgen/status/{id}")
    async def get(self, id: int, *, fields: Iterable[str] | None = None) -> Row:
        params = {"fields": ",".join(fields)} if fields is not None else None
        return await self._row("GET", f"/bobgen/status/{id}", params=params)

    @route("POST", "/bobgen/status")
    async def create(self, **record: Any) -> Row:
        """``uptime``, ``version``, ``latency``, ``error_rate`` and the optional fields."""
        return await self._row("POST", "/bobgen/status", json=record)


class Runs(_Group):
    """``/runs``: runs and their steps."""

    @route("POST", "/runs")
    async def create(
        self,
        args: Mapping[str, Any] | None = None,
        *,
        git_sha: str | None = None,
        config_hash: str | None = None,
    ) -> Row:
        body = {"args": dict(args or {}), "git_sha": git_sha, "config_hash": config_hash}
        return await self._row("POST", "/runs", json=body)

    @route("GET", "/runs")
    def list(self, **filters: Any) -> AsyncIterator[Row]:
        """Newest first; filters ``since``, ``git_sha``, ``config_hash``."""
        return self._http.items("/runs", filters)

    @route("GET", "/runs/{run_id}")
    async def get(self, run_id: str) -> Row:
        return await self._row("GET", f"/runs/{run_id}")

    @route("POST", "/runs/{run_id}/steps")
    async def add_step(
        self,
        run_id: str,
        name: str,
        *,
        status: str | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> Row:
        body = _fields(name=name, status=status, stats=dict(stats) if stats else None)
        return await self._row("POST", f"/runs/{run_id}/steps", json=body)

    @route("PATCH", "/runs/{run_id}/steps/{step_id}")
    async def update_step(
        self,
        run_id: str,
        step_id: int,
        *,
        status: str | None = None,
        stats: Mapping[str, Any] | None = None,
    ) -> Row:
        body = _fields(status=status, stats=dict(stats) if stats is not None else None)
        return await self._row("PATCH", f"/runs/{run_id}/steps/{step_id}", json=body)


class Audit(_Group):
    @route("GET", "/audit")
    def list(self, **filters: Any) -> AsyncIterator[Row]:
        """Newest first; filters ``run_id``, ``scope``, ``event``, ``since``."""
        return self._http.items("/audit", filters)


class ProjectItems(_Group):
    """One kind of a project's rows: ideas, context items, workflows or gap analyses."""

    def __init__(self, http: Transport, project_id: str, kind: str) -> None:
        super().__init__(http)
        self.base = f"/projects/{project_id}/{kind}"

    async def create(self, *, id: str | None = None, **fields: Any) -> Row:
        body, repeatable = _with_id(fields, id)
        return await self._row("POST", self.base, json=body, idempotent=repeatable)

    def list(self, **filters: Any) -> AsyncIterator[Row]:
        """Filters as the API has them (``status``, ``priority``, ``pinned``, ``type``,
        ``sort``)."""
        return self._http.items(self.base, filters)

    async def get(self, item_id: str) -> Row:
        return await self._row("GET", f"{self.base}/{item_id}")

    async def update(self, row: Row, changes: Mapping[str, Any]) -> Row:
        return await self._update(f"{self.base}/{row['id']}", row, changes)

    async def delete(self, item: Row | str) -> None:
        """With a row: only if it is still at that version (412 -> Conflict)."""
        item_id, headers = _target(item)
        await self._http.request("DELETE", f"{self.base}/{item_id}", headers=headers)


for _kind in PROJECT_COLLECTIONS:
    _base = f"/projects/{{project_id}}/{_kind}"
    ROUTES.update({("POST", _base), ("GET", _base)})
    ROUTES.update({(m, f"{_base}/{{item_id}}") for m in ("GET", "PATCH", "DELETE")})


class Context(ProjectItems):
    @route("POST", "/projects/{project_id}/context/{item_id}/pin")
    async def pin(self, item_id: str) -> Row:
        return await self._row("POST", f"{self.base}/{item_id}/pin", idempotent=True)

    @route("POST", "/projects/{project_id}/context/{item_id}/unpin")
    async def unpin(self, item_id: str) -> Row:
        return await self._row("POST", f"{self.base}/{item_id}/unpin", idempotent=True)

    @route("GET", "/projects/{project_id}/context/totals")
    async def totals(self) -> Row:
        return await self._row("GET", f"{self.base}/totals")


class Workflows(ProjectItems):
    @route("POST", "/projects/{project_id}/workflows/{item_id}/runs")
    async def start_run(
        self, workflow_id: str, *, input: Mapping[str, Any] | None = None, id: str | None = None
    ) -> Row:
        body, repeatable = _with_id(_fields(input=dict(input) if input else None), id)
        path = f"{self.base}/{workflow_id}/runs"
        return await self._row("POST", path, json=body, idempotent=repeatable)


class WorkflowRuns(_Group):
    def __init__(self, http: Transport, project_id: str) -> None:
        super().__init__(http)
        self.base = f"/projects/{project_id}/runs"

    @route("GET", "/projects/{project_id}/runs")
    def list(self, **filters: Any) -> AsyncIterator[Row]:
        return self._http.items(self.base, filters)

    @route("GET", "/projects/{project_id}/runs/{item_id}")
    async def get(self, run_id: str) -> Row:
        return await self._row("GET", f"{self.base}/{run_id}")

    @route("PATCH", "/projects/{project_id}/runs/{item_id}/nodes/{node_id}")
    async def update_node(self, run_id: str, node_id: str, **changes: Any) -> Row:
        """``status``, ``progress``, ``messages`` (appended), ``error``; answers
        ``{"node", "run"}``."""
        return await self._row("PATCH", f"{self.base}/{run_id}/nodes/{node_id}", json=changes)


class Project:
    """Everything under one project."""

    def __init__(self, http: Transport, project_id: str) -> None:
        self.ideas = ProjectItems(http, project_id, "ideas")
        self.context = Context(http, project_id, "context")
        self.workflows = Workflows(http, project_id, "workflows")
        self.gap_analyses = ProjectItems(http, project_id, "gap-analyses")
        self.runs = WorkflowRuns(http, project_id)


class Projects(_Group):
    @route("POST", "/projects")
    async def create(
        self, name: str, *, id: str | None = None, description: str | None = None
    ) -> Row:
        body, repeatable = _with_id(_fields(name=name, description=description), id)
        return await self._row("POST", "/projects", json=body, idempotent=repeatable)

    @route("GET", "/projects")
    def list(self, *, sort: str | None = None) -> AsyncIterator[Row]:
        return self._http.items("/projects", _fields(sort=sort))

    @route("GET", "/projects/{project_id}")
    async def get(self, project_id: str) -> Row:
        return await self._row("GET", f"/projects/{project_id}")

    @route("PATCH", "/projects/{project_id}")
    async def update(self, row: Row, changes: Mapping[str, Any]) -> Row:
        return await self._update(f"/projects/{row['id']}", row, changes)

    @route("DELETE", "/projects/{project_id}")
    async def delete(self, project: Row | str, *, cascade: bool = False) -> None:
        project_id, headers = _target(project)
        params = {"cascade": True} if cascade else None
        await self._http.request(
            "DELETE", f"/projects/{project_id}", params=params, headers=headers
        )

    def __call__(self, project_id: str) -> Project:
        """``client.projects("p1").ideas.create(title=...)``."""
        return Project(self._http, project_id)


class Documents(_Group):
    @route("GET", "/documents")
    def list(self, **filters: Any) -> AsyncIterator[Row]:
        """Filters ``type``, ``q`` (full text), ``field.<path>=value``..."""
        return self._http.items("/documents", filters)

    @route("GET", "/documents/{id}")
    async def get(self, document_id: str) -> Row:
        return await self._row("GET", f"/documents/{document_id}")

    @route("GET", "/personas")
    def personas(self, **filters: Any) -> AsyncIterator[Row]:
        return self._http.items("/personas", filters)

    @route("GET", "/personas/{name}")
    async def persona(self, name: str) -> Row:
        return await self._row("GET", f"/personas/{name}")

    @route("GET", "/prompts")
    def prompts(self, **filters: Any) -> AsyncIterator[Row]:
        return self._http.items("/prompts", filters)

    @route("GET", "/prompts/{name}")
    async def prompt(self, name: str) -> Row:
        return await self._row("GET", f"/prompts/{name}")


class Worktrees(_Group):
    def __init__(self, http: Transport, repository_id: str) -> None:
        super().__init__(http)
        self.base = f"/repositories/{repository_id}/worktrees"

    @route("POST", "/repositories/{repository_id}/worktrees")
    async def create(self, path: str, *, branch: str | None = None, id: str | None = None) -> Row:
        body, repeatable = _with_id(_fields(path=path, branch=branch), id)
        return await self._row("POST", self.base, json=body, idempotent=repeatable)

    @route("GET", "/repositories/{repository_id}/worktrees")
    def list(self, **filters: Any) -> AsyncIterator[Row]:
        return self._http.items(self.base, filters)

    @route("GET", "/repositories/{repository_id}/worktrees/{worktree_id}")
    async def get(self, worktree_id: str) -> Row:
        return await self._row("GET", f"{self.base}/{worktree_id}")

    @route("PATCH", "/repositories/{repository_id}/worktrees/{worktree_id}")
    async def update(self, row: Row, changes: Mapping[str, Any]) -> Row:
        return await self._update(f"{self.base}/{row['id']}", row, changes)

    @route("DELETE", "/repositories/{repository_id}/worktrees/{worktree_id}")
    async def delete(self, worktree: Row | str) -> None:
        worktree_id, headers = _target(worktree)
        await self._http.request("DELETE", f"{self.base}/{worktree_id}", headers=headers)

    @route("POST", "/repositories/{repository_id}/worktrees/reserve")
    async def reserve(self, session_id: str, lease_s: int, *, branch: str | None = None) -> Row:
        """A free (or expired) worktree, held by ``session_id`` for ``lease_s`` seconds."""
        body = _fields(session_id=session_id, lease_s=lease_s, branch=branch)
        return await self._row("POST", f"{self.base}/reserve", json=body)

    @route("POST", "/repositories/{repository_id}/worktrees/{worktree_id}/renew")
    async def renew(self, worktree_id: str, session_id: str, lease_s: int) -> Row:
        body = {"session_id": session_id, "lease_s": lease_s}
        return await self._row("POST", f"{self.base}/{worktree_id}/renew", json=body)

    @route("POST", "/repositories/{repository_id}/worktrees/{worktree_id}/release")
    async def release(self, worktree_id: str, session_id: str) -> Row:
        path = f"{self.base}/{worktree_id}/release"
        return await self._row("POST", path, json={"session_id": session_id})


class Repositories(_Group):
    @route("POST", "/repositories")
    async def create(
        self,
        name: str,
        url: str,
        *,
        default_branch: str | None = None,
        id: str | None = None,
    ) -> Row:
        body, repeatable = _with_id(_fields(name=name, url=url, default_branch=default_branch), id)
        return await self._row("POST", "/repositories", json=body, idempotent=repeatable)

    @route("GET", "/repositories")
    def list(self, *, sort: str | None = None) -> AsyncIterator[Row]:
        return self._http.items("/repositories", _fields(sort=sort))

    @route("GET", "/repositories/{repository_id}")
    async def get(self, repository_id: str) -> Row:
        return await self._row("GET", f"/repositories/{repository_id}")

    @route("PATCH", "/repositories/{repository_id}")
    async def update(self, row: Row, changes: Mapping[str, Any]) -> Row:
        return await self._update(f"/repositories/{row['id']}", row, changes)

    @route("DELETE", "/repositories/{repository_id}")
    async def delete(self, repository: Row | str) -> None:
        repository_id, headers = _target(repository)
        await self._http.request("DELETE", f"/repositories/{repository_id}", headers=headers)

    def worktrees(self, repository_id: str) -> Worktrees:
        return Worktrees(self._http, repository_id)


class Sessions(_Group):
    """Debug sessions, their commands (with logs), artifacts and debugger state."""

    @route("POST", "/sessions")
    async def create(
        self,
        repository_id: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        id: str | None = None,
    ) -> Row:
        fields = _fields(repository_id=repository_id, metadata=dict(metadata or {}))
        body, repeatable = _with_id(fields, id)
        return await self._row("POST", "/sessions", json=body, idempotent=repeatable)

    @route("GET", "/sessions")
    def list(self, **filters: Any) -> AsyncIterator[Row]:
        """Filters ``repository_id``, ``state``, ``user``, ``since``, ``sort``."""
        return self._http.items("/sessions", filters)

    @route("GET", "/sessions/{session_id}")
    async def get(self, session_id: str) -> Row:
        return await self._row("GET", f"/sessions/{session_id}")

    @route("POST", "/sessions/{session_id}/end")
    async def end(self, session_id: str, state: str = "ended") -> Row:
        return await self._row("POST", f"/sessions/{session_id}/end", json={"state": state})

    @route("POST", "/sessions/{session_id}/commands")
    async def run_command(
        self,
        session_id: str,
        argv: Iterable[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Row:
        body = _fields(argv=list(argv), cwd=cwd, env=dict(env) if env is not None else None)
        return await self._row("POST", f"/sessions/{session_id}/commands", json=body)

    @route("GET", "/sessions/{session_id}/commands")
    def commands(self, session_id: str, **filters: Any) -> AsyncIterator[Row]:
        return self._http.items(f"/sessions/{session_id}/commands", filters)

    @route("POST", "/sessions/{session_id}/artifacts")
    async def add_artifact(
        self, session_id: str, name: str, kind: str, uri: str, **more: Any
    ) -> Row:
        """``size_bytes``, ``sha256``, ``content_type``, ``command_id`` are optional."""
        body = {"name": name, "kind": kind, "uri": uri, **more}
        return await self._row("POST", f"/sessions/{session_id}/artifacts", json=body)

    @route("GET", "/sessions/{session_id}/artifacts")
    def artifacts(self, session_id: str, **filters: Any) -> AsyncIterator[Row]:
        return self._http.items(f"/sessions/{session_id}/artifacts", filters)

    @route("GET", "/sessions/{session_id}/debugger")
    async def debugger(self, session_id: str) -> Row:
        """The debugger state row (``state``, ``version``), tagged for :meth:`put_debugger`."""
        return await self._row("GET", f"/sessions/{session_id}/debugger")

    @route("PUT", "/sessions/{session_id}/debugger")
    async def put_debugger(self, row: Row, state: Mapping[str, Any]) -> Row:
        """Replace the state read as ``row`` (412 -> Conflict when it moved meanwhile)."""
        path = f"/sessions/{row['session_id']}/debugger"
        headers = {"If-Match": row.if_match}
        return await self._row("PUT", path, json={"state": dict(state)}, headers=headers)


class Commands(_Group):
    @route("GET", "/commands/{command_id}")
    async def get(self, command_id: str) -> Row:
        return await self._row("GET", f"/commands/{command_id}")

    @route("PATCH", "/commands/{command_id}")
    async def finish(self, command_id: str, state: str, *, exit_code: int | None = None) -> Row:
        body = _fields(state=state, exit_code=exit_code)
        return await self._row("PATCH", f"/commands/{command_id}", json=body)

    @route("POST", "/commands/{command_id}/logs")
    async def append_logs(self, command_id: str, chunks: Iterable[Mapping[str, Any]]) -> Row:
        """``chunks``: ``{"seq", "stream", "text"}``; a repeat of stored seqs is a no-op, so
        this is retried like a read."""
        body = {"chunks": [dict(c) for c in chunks]}
        path = f"/commands/{command_id}/logs"
        return await self._row("POST", path, json=body, idempotent=True)

    @route("GET", "/commands/{command_id}/logs")
    async def logs(self, command_id: str, *, after_seq: int = 0) -> AsyncIterator[Row]:
        """Every chunk after ``after_seq`` stored now, in seq order."""
        while True:
            params = {"after_seq": after_seq}
            page = (
                await self._http.request("GET", f"/commands/{command_id}/logs", params=params)
            ).body
            for chunk in page["items"]:
                yield Row(chunk)
            if not page["items"] or page.get("next_after_seq") in (None, after_seq):
                return
            after_seq = page["next_after_seq"]


class Artifacts(_Group):
    @route("GET", "/artifacts/{artifact_id}")
    async def get(self, artifact_id: str) -> Row:
        return await self._row("GET", f"/artifacts/{artifact_id}")

    @route("DELETE", "/artifacts/{artifact_id}")
    async def delete(self, artifact_id: str) -> None:
        await self._http.request("DELETE", f"/artifacts/{artifact_id}")


class Tokens(_Group):
    @route("POST", "/tokens")
    async def create(self, user: str, name: str, scopes: Iterable[str]) -> Row:
        """The new token's record with its secret under ``token`` (shown this once)."""
        body = {"user": user, "name": name, "scopes": list(scopes)}
        return await self._row("POST", "/tokens", json=body)

    @route("GET", "/tokens")
    def list(self) -> AsyncIterator[Row]:
        return self._http.items("/tokens")

    @route("DELETE", "/tokens/{id}")
    async def revoke(self, token_id: int) -> None:
        await self._http.request("DELETE", f"/tokens/{token_id}")


class Admin(_Group):
    @route("POST", "/admin/seed")
    async def seed(self, rows: int, *, batch_size: int | None = None) -> Row:
        """Start a background seed to ``rows`` rows; its progress (202)."""
        return await self._row(
            "POST", "/admin/seed", json=_fields(rows=rows, batch_size=batch_size)
        )

    @route("GET", "/admin/seed")
    async def seed_progress(self) -> Row:
        return await self._row("GET", "/admin/seed")

    @route("GET", "/admin/sync")
    async def sync_status(self) -> Row:
        return await self._row("GET", "/admin/sync")

    @route("POST", "/admin/sync/reload")
    async def reload_documents(self) -> Row:
        return await self._row("POST", "/admin/sync/reload")


class BobGen:
    """An async client for one BobGen server.

    ``base_url`` defaults to ``$BOBGEN_URL`` (then ``http://127.0.0.1:8080``), ``token`` to
    ``$BOBGEN_TOKEN``. Use it as ``async with BobGen(...) as bobgen:`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        timeout_s: float = 30.0,
        retries: Retries | None = None,
    ) -> None:
        self.http = Transport(base_url, token, timeout_s=timeout_s, retries=retries)
        self.status = Status(self.http)
        self.runs = Runs(self.http)
        self.audit = Audit(self.http)
        self.projects = Projects(self.http)
        self.documents = Documents(self.http)
        self.repositories = Repositories(self.http)
        self.sessions = Sessions(self.http)
        self.commands = Commands(self.http)
        self.artifacts = Artifacts(self.http)
        self.tokens = Tokens(self.http)
        self.admin = Admin(self.http)

    async def __aenter__(self) -> BobGen:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.close()

    async def _json(self, path: str) -> Any:
        return (await self.http.request("GET", path)).body

    @route("GET", "/health")
    async def health(self) -> dict[str, Any]:
        """The server's health document (also when it answers 503: then it is raised)."""
        body: dict[str, Any] = await self._json("/health")
        return body

    @route("GET", "/livez")
    async def live(self) -> bool:
        return (await self.http.request("GET", "/livez")).status == 200

    @route("GET", "/readyz")
    async def ready(self) -> bool:
        """True when the server is ready; False (not an error) when it says it is not."""
        try:
            await self.http.request("GET", "/readyz", idempotent=False)
        except Unavailable:
            return False
        return True

    @route("GET", "/-/versions")
    async def versions(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("/-/versions")
        return body

    @route("GET", "/metrics")
    async def metrics(self) -> str:
        """The Prometheus text exposition."""
        return str(await self._json("/metrics"))

    @route("GET", "/openapi.json")
    async def openapi(self) -> dict[str, Any]:
        body: dict[str, Any] = await self._json("/openapi.json")
        return body

    @route("GET", "/ui/data")
    async def ops_snapshot(self) -> dict[str, Any]:
        """What the ops page shows, in one snapshot."""
        body: dict[str, Any] = await self._json("/ui/data")
        return body


def _target(item: Row | str) -> tuple[str, dict[str, str] | None]:
    """An id to act on, and If-Match when a row (so its version) was given."""
    if isinstance(item, Row):
        return str(item["id"]), {"If-Match": item.if_match}
    return item, None


__all__ = ["PAGES", "ROUTES", "Answer", "BobGen"]
