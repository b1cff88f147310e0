"""Documents synced from persona and prompt files: parsing, reconcile, API, CLI (both backends)."""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.db import Database, DatabaseURL
from service.documents.sync import reconcile
from service.domain.documents import (
    DocumentError,
    DocumentType,
    document_id,
    document_type,
    parse,
)
from tests.backends import cli_db, sql
from tests.helpers import assert_error, run_cli

PROMPTY = """---
name: Summarize
model:
  api: chat
  configuration:
    model: gpt-4o
---
system:
Summarize {{text}} in {{words}} words.
"""


def write(root: Path, relative: str, content: str | bytes, mtime: float | None = None) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def persona(name: str, **extra: Any) -> str:
    return json.dumps({"name": name, "role": "assistant", **extra})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "documents"
    write(root, "personas/alice.json", persona("Alice", expertise=["sql"]))
    write(root, "personas/bob.json", persona("Bob"))
    write(root, "prompts/summarize.prompty", PROMPTY)
    return root


# ---- parsing ---------------------------------------------------------------------------------


def test_a_persona_is_its_json_object_named_by_its_name_field() -> None:
    doc = parse(PurePosixPath("personas/a.json"), persona("Ada Lovelace").encode(), 0)
    assert doc.type is DocumentType.PERSONA and doc.name == "Ada Lovelace"
    assert doc.document == {"name": "Ada Lovelace", "role": "assistant"}
    assert doc.id == document_id(DocumentType.PERSONA, "personas/a.json")
    assert doc.file_modified == "1970-01-01T00:00:00.000Z" and len(doc.content_hash) == 64


def test_a_prompt_is_front_matter_plus_template() -> None:
    doc = parse(PurePosixPath("prompts/s.prompty"), PROMPTY.encode(), 10**18)
    assert doc.type is DocumentType.PROMPT_TEMPLATE and doc.name == "Summarize"
    assert doc.document["metadata"]["model"]["configuration"]["model"] == "gpt-4o"
    assert doc.document["template"] == "system:\nSummarize {{text}} in {{words}} words.\n"


def test_names_fall_back_to_the_file_stem() -> None:
    assert parse(PurePosixPath("personas/zed.json"), b'{"role": "x"}', 0).name == "zed"
    assert parse(PurePosixPath("prompts/p.prompty"), b"---\n---\nhi\n", 0).name == "p"


def test_the_id_is_stable_across_edits_and_differs_by_path() -> None:
    first = parse(PurePosixPath("personas/a.json"), persona("A").encode(), 0)
    edited = parse(PurePosixPath("personas/a.json"), persona("A2").encode(), 5)
    other = parse(PurePosixPath("personas/b.json"), persona("A").encode(), 0)
    assert first.id == edited.id != other.id
    assert first.content_hash != edited.content_hash


@pytest.mark.parametrize(
    ("relative", "data", "reason"),
    [
        ("personas/a.json", b"{not json", "invalid JSON"),
        ("personas/a.json", b"[1, 2]", "must be a JSON object"),
        ("personas/a.json", b"\xff\xfe{}", "not UTF-8"),
        ("personas/a.json", b'{"pad": "' + b"x" * 2000 + b'"}', "larger than"),
        ("prompts/a.prompty", b"no front matter", "starts with '---'"),
        ("prompts/a.prompty", b"---\nname: x\n", "not closed"),
        ("prompts/a.prompty", b"---\nname: [unclosed\n---\nbody", "invalid YAML"),
        ("prompts/a.prompty", b"---\n- a list\n---\nbody", "must be a YAML mapping"),
    ],
)
def test_bad_files_are_document_errors(relative: str, data: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse(PurePosixPath(relative), data, 0, max_bytes=1000)


@pytest.mark.parametrize(
    "relative",
    ["personas/.a.json.swp", "personas/a.txt", "personas/sub/a.json", "other/a.json", "a.json"],
)
def test_other_files_are_not_documents(relative: str) -> None:
    assert document_type(PurePosixPath(relative)) is None


# ---- reconcile -------------------------------------------------------------------------------


async def test_reconcile_adds_updates_deletes_and_skips_unchanged(
    db: Database, db_url: DatabaseURL, root: Path
) -> None:
    first = await reconcile(db, [root], actor="test")
    assert first.counts() == {"added": 3, "updated": 0, "deleted": 0, "unchanged": 0, "errors": 0}
    audits = sql(db_url, "SELECT count(*) FROM audit_log WHERE event = 'documents.synced'")

    again = await reconcile(db, [root], actor="test")
    assert again.counts()["unchanged"] == 3 and again.counts()["added"] == 0
    # Unchanged bytes cost no write at all (not even an audit row).
    assert sql(db_url, "SELECT count(*) FROM audit_log WHERE event = 'documents.synced'") == audits

    write(root, "personas/bob.json", persona("Robert"))
    (root / "prompts" / "summarize.prompty").unlink()
    write(root, "personas/carol.json", persona("Carol"))
    changed = await reconcile(db, [root], actor="test")
    assert (changed.added, changed.updated, changed.deleted) == (
        ["personas/carol.json"],
        ["personas/bob.json"],
        ["prompts/summarize.prompty"],
    )
    names = sql(db_url, "SELECT name FROM documents ORDER BY name")
    assert names == [("Alice",), ("Carol",), ("Robert",)]
    bob_id = document_id(DocumentType.PERSONA, "personas/bob.json")
    assert sql(db_url, "SELECT id FROM documents WHERE name = 'Robert'") == [(bob_id,)]


async def test_a_bad_file_keeps_its_last_good_version_until_fixed(
    db: Database, db_url: DatabaseURL, root: Path
) -> None:
    await reconcile(db, [root], actor="test")
    write(root, "personas/alice.json", '{"name": "Alice", broken')
    broken = await reconcile(db, [root], actor="test")
    assert [(e.file, "invalid JSON" in e.reason) for e in broken.errors] == [
        ("personas/alice.json", True)
    ]
    assert broken.deleted == [] and broken.updated == []
    stored = sql(db_url, "SELECT document FROM documents WHERE name = 'Alice'")
    assert json.loads(stored[0][0])["expertise"] == ["sql"]  # the last good version

    write(root, "personas/alice.json", persona("Alice", expertise=["postgres"]))
    fixed = await reconcile(db, [root], actor="test")
    assert fixed.errors == [] and fixed.updated == ["personas/alice.json"]
    stored = sql(db_url, "SELECT document FROM documents WHERE name = 'Alice'")
    assert json.loads(stored[0][0])["expertise"] == ["postgres"]


async def test_a_rename_is_a_delete_plus_an_add(
    db: Database, db_url: DatabaseURL, root: Path
) -> None:
    await reconcile(db, [root], actor="test")
    (root / "personas" / "bob.json").rename(root / "personas" / "robert.json")
    renamed = await reconcile(db, [root], actor="test")
    assert (renamed.added, renamed.deleted) == (["personas/robert.json"], ["personas/bob.json"])
    paths = [r[0] for r in sql(db_url, "SELECT file_path FROM documents ORDER BY file_path")]
    assert paths == ["personas/alice.json", "personas/robert.json", "prompts/summarize.prompty"]


async def test_a_dry_run_writes_nothing(db: Database, db_url: DatabaseURL, root: Path) -> None:
    report = await reconcile(db, [root], actor="test", dry_run=True)
    assert report.dry_run and len(report.added) == 3
    assert sql(db_url, "SELECT count(*) FROM documents") == [(0,)]


async def test_with_several_roots_the_first_wins(
    db: Database, db_url: DatabaseURL, root: Path, tmp_path: Path
) -> None:
    other = tmp_path / "team"
    write(other, "personas/alice.json", persona("Other Alice"))
    write(other, "personas/dave.json", persona("Dave"))
    report = await reconcile(db, [root, other], actor="test")
    assert sorted(report.added) == [
        "personas/alice.json",
        "personas/bob.json",
        "personas/dave.json",
        "prompts/summarize.prompty",
    ]
    assert [(e.file, e.root) for e in report.errors] == [("personas/alice.json", str(other))]
    assert sql(db_url, "SELECT name FROM documents WHERE file_path = 'personas/alice.json'") == [
        ("Alice",)
    ]


# ---- API -------------------------------------------------------------------------------------


async def synced_client(make_client: Any, root: Path) -> TestClient:
    client = await make_client()
    from service.keys import DB_KEY

    for i in range(5):
        write(root, f"personas/p{i}.json", persona(f"Persona {i}"))
    await reconcile(client.app[DB_KEY], [root], actor="test")
    return client


async def test_list_filter_page_and_get(make_client: Any, root: Path) -> None:
    client = await synced_client(make_client, root)
    everything = await (await client.get("/documents?limit=500")).json()
    assert len(everything["items"]) == 8 and everything["next"] is None
    names = [d["name"] for d in everything["items"]]
    assert names == sorted(names)

    prompts = await (await client.get("/documents?type=prompt_template")).json()
    assert [d["name"] for d in prompts["items"]] == ["Summarize"]
    assert prompts["items"][0]["document"]["metadata"]["name"] == "Summarize"
    by_name = await (await client.get("/documents?name=Bob")).json()
    assert [d["file_path"] for d in by_name["items"]] == ["personas/bob.json"]

    seen, cursor = [], None
    while True:
        url = "/documents?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url)).json()
        seen += [d["id"] for d in page["items"]]
        if (cursor := page["next"]) is None:
            break
    assert seen == [d["id"] for d in everything["items"]]

    one = everything["items"][0]
    got = await client.get(f"/documents/{one['id']}")
    assert got.status == 200 and await got.json() == one


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/documents?type=novel", 400, "invalid_parameter"),
        ("/documents?limit=0", 400, "invalid_parameter"),
        ("/documents?cursor=garbage", 400, "invalid_parameter"),
        ("/documents?nmae=x", 400, "invalid_parameter"),
        ("/documents?name=", 400, "invalid_parameter"),
        ("/documents/not-an-id", 400, "invalid_parameter"),
        ("/documents/" + "0" * 32, 404, "not_found"),
    ],
)
async def test_bad_document_requests(client: TestClient, path: str, status: int, code: str) -> None:
    resp = await client.get(path)
    assert resp.status == status
    assert_error(await resp.json(), code)


# ---- CLI -------------------------------------------------------------------------------------


def test_documents_sync_cli(db_url: DatabaseURL, root: Path, tmp_path: Path) -> None:
    db = cli_db(db_url)
    dry = run_cli("documents", "sync", "--dir", str(root), "--dry-run", "--db", db)
    assert dry.returncode == 0, dry.stderr
    assert "would change: 3 added" in dry.stdout
    done = run_cli("documents", "sync", "--dir", str(root), "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["counts"] == {"added": 3, "updated": 0, "deleted": 0, "unchanged": 0, "errors": 0}
    assert sql(db_url, "SELECT count(*) FROM documents") == [(3,)]

    write(root, "prompts/bad.prompty", "no front matter")
    failing = run_cli("documents", "sync", "--dir", str(root), "--db", db)
    assert failing.returncode == 1 and "prompts/bad.prompty" in failing.stdout
    missing = run_cli("documents", "sync", "--dir", str(tmp_path / "nope"), "--db", db)
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_the_shipped_examples_all_parse() -> None:
    from service.documents.sync import scan
    from tests.support import REPO_ROOT

    files = scan([REPO_ROOT / "seeds" / "documents"])
    assert files.errors == []
    kinds = [d.type for d in files.documents.values()]
    assert kinds.count(DocumentType.PERSONA) >= 19
    assert kinds.count(DocumentType.PROMPT_TEMPLATE) >= 2


# ---- search and JSON-field filters -----------------------------------------------------------


async def searchable_client(make_client: Any, root: Path) -> TestClient:
    from service.keys import DB_KEY

    client = await make_client()
    write(root, "personas/dba.json", persona("Database Admin", model="gpt-4o", topic="indexes"))
    write(root, "personas/sre.json", persona("Site Reliability", model="gpt-4o-mini"))
    write(root, "personas/writer.json", persona("Tech Writer", model="gpt-4o", topic="docs"))
    await reconcile(client.app[DB_KEY], [root], actor="test")
    return client


async def test_full_text_search_matches_every_word_best_first(make_client: Any, root: Path) -> None:
    client = await searchable_client(make_client, root)
    found = await (await client.get("/documents?q=indexes")).json()
    assert [d["name"] for d in found["items"]] == ["Database Admin"] and found["next"] is None
    both = await (await client.get("/documents?q=gpt Summarize")).json()
    assert [d["name"] for d in both["items"]] == ["Summarize"]  # the prompt names gpt-4o
    none = await (await client.get("/documents?q=indexes docs")).json()
    assert none["items"] == []  # no document has both words
    prompt = await (await client.get("/documents?q=summarize%20words&type=prompt_template")).json()
    assert [d["name"] for d in prompt["items"]] == ["Summarize"]
    by_name = await (await client.get("/documents?q=reliability")).json()
    assert [d["name"] for d in by_name["items"]] == ["Site Reliability"]
    # The index follows updates and deletes.
    from service.keys import DB_KEY

    write(root, "personas/dba.json", persona("Database Admin", topic="vacuum"))
    (root / "personas" / "writer.json").unlink()
    await reconcile(client.app[DB_KEY], [root], actor="test")
    assert (await (await client.get("/documents?q=indexes")).json())["items"] == []
    vacuum = await (await client.get("/documents?q=vacuum")).json()
    assert [d["name"] for d in vacuum["items"]] == ["Database Admin"]
    assert (await (await client.get("/documents?q=docs")).json())["items"] == []
    # Words only: FTS syntax in the query is taken literally, never an error.
    odd = await client.get('/documents?q=NEAR(" OR *')
    assert odd.status == 200


async def test_json_field_filters(make_client: Any, root: Path) -> None:
    client = await searchable_client(make_client, root)
    four = await (await client.get("/documents?field.model=gpt-4o")).json()
    assert [d["name"] for d in four["items"]] == ["Database Admin", "Tech Writer"]
    both = await (await client.get("/documents?field.model=gpt-4o&field.topic=docs")).json()
    assert [d["name"] for d in both["items"]] == ["Tech Writer"]
    searched = await (await client.get("/documents?q=gpt&field.model=gpt-4o-mini")).json()
    assert [d["name"] for d in searched["items"]] == ["Site Reliability"]
    nested = await (await client.get("/documents?field.metadata.model.api=chat")).json()
    assert [d["name"] for d in nested["items"]] == ["Summarize"]


@pytest.mark.parametrize(
    "query",
    [
        "field.=x",
        "field.a-b=x",
        "field.a..b=x",
        "field.a%27)--=x",
        "field.model=",
        "field_filters=x",
        "q=",
        "q=%21%21%21",
        "q=x&cursor=eyJhZnRlciI6IFsiYSIsICJiIl19",
        "field.a=1&field.b=1&field.c=1&field.d=1&field.e=1&field.f=1",
    ],
)
async def test_bad_search_and_filter_queries_are_400(client: TestClient, query: str) -> None:
    resp = await client.get(f"/documents?{query}")
    assert resp.status == 400, query
    assert_error(await resp.json(), "invalid_parameter")


def test_documents_verify_cli(db_url: DatabaseURL, root: Path) -> None:
    db = cli_db(db_url)
    differs = run_cli("documents", "verify", "--dir", str(root), "--db", db)
    assert differs.returncode == 1 and "would change: 3 added" in differs.stdout
    assert run_cli("documents", "sync", "--dir", str(root), "--db", db).returncode == 0
    same = run_cli("documents", "verify", "--dir", str(root), "--json", "--db", db)
    assert same.returncode == 0 and json.loads(same.stdout)["counts"]["unchanged"] == 3
    write(root, "personas/bob.json", persona("Bobby"))
    changed = run_cli("documents", "verify", "--dir", str(root), "--db", db)
    assert changed.returncode == 1 and "updated  personas/bob.json" in changed.stdout
    assert sql(db_url, "SELECT name FROM documents WHERE file_path = 'personas/bob.json'") == [
        ("Bob",)
    ]  # verify never writes
