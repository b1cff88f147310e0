"""Documents stay inside their roots, and no file can stop the sync (issue 16, item 1).

Symbolic links are not followed, to a file or to a folder, on the full sync, the watcher and
the file fallback (which reads through the same ``scan``). Files that parse but cannot be
stored, or that would blow up memory, are that file's error; the watcher goes on. Error
reasons name the file and the kind of problem, never its content.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.documents.sync import NOT_FOLLOWED, scan
from service.domain.documents import MAX_DEPTH, DocumentError, parse
from tests.support import eventually
from tests.support.auth import READER_TOKEN, bearer


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the root holding what must never be published."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.json").write_text(json.dumps({"name": "Secret", "password": "hunter2"}))
    return folder


@pytest.fixture
def root(tmp_path: Path, outside: Path) -> Path:
    root = tmp_path / "root"
    (root / "personas").mkdir(parents=True)
    (root / "prompts").mkdir()
    (root / "personas" / "ok.json").write_text(json.dumps({"name": "Ok"}))
    (root / "personas" / "linked.json").symlink_to(outside / "secret.json")
    (root / "prompts").rmdir()
    (root / "prompts").symlink_to(outside, target_is_directory=True)
    (outside / "leak.prompty").write_text("---\nname: Leak\n---\nhunter2\n")
    return root


def test_links_to_a_file_and_to_a_folder_are_not_followed(root: Path) -> None:
    files = scan([root])
    assert sorted(files.documents) == ["personas/ok.json"]
    reasons = {e.file: e.reason for e in files.errors}
    assert reasons == {"personas/linked.json": NOT_FOLLOWED, "prompts/leak.prompty": NOT_FOLLOWED}


async def _sync(client: TestClient) -> dict[str, Any]:
    return dict(await (await client.get("/admin/sync")).json())


async def test_the_server_publishes_nothing_from_outside_and_the_watcher_goes_on(
    make_client: Any, root: Path, outside: Path
) -> None:
    client: TestClient = await make_client(documents_dirs=str(root), documents_debounce_ms=100)

    async def synced() -> dict[str, Any] | None:
        status = await _sync(client)
        return status if status["state"] == "watching" else None

    status = await eventually(synced, what="the first sync")
    assert {e["file"] for e in status["errors"]} == {"personas/linked.json", "prompts/leak.prompty"}
    assert (await client.get("/personas/Secret")).status == 404
    assert (await client.get("/prompts/Leak")).status == 404
    assert "hunter2" not in json.dumps(status)

    # Watched: a link made later is refused too; hostile files are errors; the sync goes on.
    (root / "personas" / "later.json").symlink_to(outside / "secret.json")
    personas = root / "personas"
    (personas / "deep.json").write_text('{"a":' * (MAX_DEPTH + 5) + "1" + "}" * (MAX_DEPTH + 5))
    (personas / "nul.json").write_text(json.dumps({"name": "Nul", "x": "a\u0000b"}))
    (personas / "good.json").write_text(json.dumps({"name": "Good"}))

    async def settled() -> dict[str, Any] | None:
        status = await _sync(client)
        files = {e["file"] for e in status["errors"]}
        wanted = {"personas/later.json", "personas/deep.json", "personas/nul.json"}
        good = (await client.get("/personas/Good")).status == 200
        return status if wanted <= files and good and status["state"] == "watching" else None

    status = await eventually(settled, what="the hostile files reported, the good one synced")
    reasons = {e["file"]: e["reason"] for e in status["errors"]}
    assert reasons["personas/later.json"] == NOT_FOLLOWED
    assert reasons["personas/deep.json"] == f"nested deeper than {MAX_DEPTH} levels"
    assert reasons["personas/nul.json"] == "a value holds a NUL character"
    assert (await client.get("/personas/Secret")).status == 404


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "---\na: &x [1, 2]\nb: [*x, *x, *x]\n---\nhi\n",
            "invalid YAML front matter: aliases (*name) are not allowed, line 3",
        ),
        (
            "---\nname: x\npassword: hunter2\n  bad: [\n---\nhi\n",
            "invalid YAML front matter: ",
        ),
        ("---\n" + "a:\n" + "".join("  " * i + "- \n" for i in range(3)) + "---\n", ""),
    ],
)
def test_yaml_aliases_are_refused_and_reasons_never_quote_the_file(text: str, reason: str) -> None:
    from pathlib import PurePosixPath

    try:
        parse(PurePosixPath("prompts/p.prompty"), text.encode(), 0)
    except DocumentError as exc:
        assert str(exc).startswith(reason)
        assert "hunter2" not in str(exc)
    else:
        assert reason == ""  # the last case is merely odd, and parses


def test_a_billion_laughs_front_matter_is_refused_quickly() -> None:
    from pathlib import PurePosixPath

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "---\n" + "\n".join(lines) + "\n---\nhi\n"
    with pytest.raises(DocumentError, match="aliases"):
        parse(PurePosixPath("prompts/p.prompty"), text.encode(), 0)


async def test_the_open_ops_snapshot_shows_no_roots_or_file_errors(
    make_client: Any, root: Path
) -> None:
    client: TestClient = await make_client(documents_dirs=str(root), token=None)

    async def synced() -> dict[str, Any] | None:
        data = await (await client.get("/ui/data")).json()
        docs = data["documents"]
        return docs if docs["last_full_sync"] is not None else None

    docs = await eventually(synced, what="the first sync")
    assert "roots" not in docs and docs["errors"] == 2  # a count, as /health shows it
    assert str(root) not in json.dumps(docs)
    reader = await (await client.get("/ui/data", headers=bearer(READER_TOKEN))).json()
    assert "roots" not in reader["documents"]


REFUSE = {
    "sqlite": [
        "CREATE TRIGGER refuse_doc BEFORE INSERT ON documents WHEN NEW.name = 'Refused' "
        "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_doc() RETURNS trigger AS $$ BEGIN IF NEW.name = 'Refused' "
        "THEN RAISE EXCEPTION 'refused by a test trigger' USING ERRCODE = 'check_violation'; "
        "END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
        "CREATE TRIGGER refuse_doc BEFORE INSERT OR UPDATE ON documents FOR EACH ROW "
        "EXECUTE FUNCTION refuse_doc()",
    ],
}


async def test_a_document_the_database_refuses_is_its_files_error_only(
    make_client: Any, db_url: Any, backend: str, tmp_path: Path
) -> None:
    """A real trigger refuses one document: the others of its batch are written, it becomes
    its file's error, and live sync goes on."""
    from tests.backends import sql

    for statement in REFUSE[backend]:
        sql(db_url, statement)
    root = tmp_path / "refusing"
    (root / "personas").mkdir(parents=True)
    for name in ("Alpha", "Refused", "Omega"):
        (root / "personas" / f"{name.lower()}.json").write_text(json.dumps({"name": name}))
    client: TestClient = await make_client(documents_dirs=str(root), documents_debounce_ms=100)

    async def synced() -> dict[str, Any] | None:
        status = await _sync(client)
        return status if status["state"] == "watching" else None

    status = await eventually(synced, what="the first sync")
    assert [e["file"] for e in status["errors"]] == ["personas/refused.json"]
    assert status["errors"][0]["reason"] == "the database refused it (IntegrityViolation)"
    assert (await client.get("/personas/Alpha")).status == 200
    assert (await client.get("/personas/Omega")).status == 200

    (root / "personas" / "late.json").write_text(json.dumps({"name": "Late"}))

    async def late() -> bool:
        return (await client.get("/personas/Late")).status == 200

    await eventually(late, what="a later file synced all the same")
    assert (await _sync(client))["state"] == "watching"
