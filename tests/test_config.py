import json
import subprocess
from pathlib import Path

import pytest

from service.config import Config, ConfigError
from service.db import DatabaseURL
from tests.helpers import BOBGEN


def test_defaults() -> None:
    config = Config.from_sources({}, env={})
    assert config.host == "127.0.0.1"
    assert config.port == 8080
    assert config.db.path == Path("data/bobgen.db")
    assert config.seed_rows == 100_000


def test_env_overrides_defaults_and_flags_override_env() -> None:
    env = {"BOBGEN_PORT": "9000", "BOBGEN_SEED_ROWS": "10", "BOBGEN_DB": "/x/y.db"}
    from_env = Config.from_sources({}, env=env)
    assert (from_env.port, from_env.seed_rows, from_env.db.path) == (9000, 10, Path("/x/y.db"))
    from_flags = Config.from_sources({"port": 7000, "seed_rows": None}, env=env)
    assert from_flags.port == 7000
    assert from_flags.seed_rows == 10  # None means "flag not given"


def test_boolean_env_values() -> None:
    assert Config.from_sources({}, env={"BOBGEN_ACCESS_LOG": "yes"}).access_log is True
    assert Config.from_sources({}, env={"BOBGEN_ACCESS_LOG": "0"}).access_log is False
    with pytest.raises(ConfigError, match="boolean"):
        Config.from_sources({}, env={"BOBGEN_ACCESS_LOG": "maybe"})


@pytest.mark.parametrize(
    "env",
    [
        {"BOBGEN_PORT": "eighty"},
        {"BOBGEN_PORT": "70000"},
        {"BOBGEN_SEED_ROWS": "-1"},
        {"BOBGEN_LOG_LEVEL": "LOUD"},
        {"BOBGEN_READ_CONNECTIONS": "0"},
        {"BOBGEN_WRITE_BATCH_MAX": "0"},
        {"BOBGEN_WRITE_BATCH_WAIT_MS": "-1"},
        {"BOBGEN_WRITE_BATCH_WAIT_MS": "5000"},
        {"BOBGEN_BODY_TIMEOUT_S": "0"},
        {"BOBGEN_REQUEST_TIMEOUT_S": "-3"},
        {"BOBGEN_TOKEN_CACHE_TTL_S": "0"},
        {"BOBGEN_STARTUP_CHECK": "perhaps"},
    ],
)
def test_bad_values_are_rejected_with_the_source_named(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Config.from_sources({}, env=env)


def test_public_dict_is_json_ready() -> None:
    data = Config().to_public_dict()
    assert data["db"] == "data/bobgen.db"
    assert all(not isinstance(v, Path) for v in data.values())


@pytest.mark.parametrize(
    ("value", "backend", "shown"),
    [
        ("data/bobgen.db", "sqlite", "data/bobgen.db"),
        ("/var/lib/bobgen/x.db", "sqlite", "/var/lib/bobgen/x.db"),
        ("file:/tmp/x.db", "sqlite", "/tmp/x.db"),
        ("postgresql://bob@db:5432/bobgen", "postgresql", "postgresql://bob@db:5432/bobgen"),
        ("postgres://bob:s3cret@db/bobgen", "postgresql", "postgresql://bob:***@db/bobgen"),
        (
            "postgresql://bob:p%40ss@db/bobgen?sslmode=require",
            "postgresql",
            "postgresql://bob:***@db/bobgen?sslmode=require",
        ),
    ],
)
def test_database_urls(value: str, backend: str, shown: str) -> None:
    url = DatabaseURL.parse(value)
    assert url.backend == backend
    assert str(url) == shown
    assert "s3cret" not in repr(url) and "p%40ss" not in repr(url)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("mysql://u@h/db", "unsupported database URL scheme 'mysql'"),
        ("postgresql+psycopg://u@h/db", "unsupported database URL scheme"),
        ("sqlite:///x.db", "unsupported database URL scheme 'sqlite'"),
        ("postgresql:/h/db", "expected postgresql://user@host:port/dbname"),
        ("postgresql://u:secret@/db", "no host"),
        ("postgresql://u@h", "no database name"),
        ("postgresql://u@h:99999/db", "malformed PostgreSQL URL"),
        ("postgresql://u@h/db?sslmdoe=require", "unknown option(s) sslmdoe"),
        ("   ", "is empty"),
    ],
)
def test_bad_database_urls_name_the_setting_and_hide_the_password(
    value: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.from_sources({"db": value}, env={})
    assert str(raised.value).startswith("--db: ")
    assert fragment in str(raised.value)
    assert "secret" not in str(raised.value)
    with pytest.raises(ConfigError, match=r"^BOBGEN_DB: "):
        Config.from_sources({}, env={"BOBGEN_DB": value})


def test_the_password_is_in_no_public_view_of_the_config() -> None:
    config = Config(db="postgresql://bob:hunter2@db/bobgen")  # type: ignore[arg-type]
    assert config.db.dsn == "postgresql://bob:hunter2@db/bobgen"  # for the driver only
    assert "hunter2" not in json.dumps(config.to_public_dict())
    assert "hunter2" not in repr(config)
    other = Config(db="postgresql://bob:rotated@db/bobgen")  # type: ignore[arg-type]
    assert config.config_hash() == other.config_hash()  # the hash is not of the secret


def test_a_bad_url_creates_nothing_and_says_so_in_one_line(tmp_path: Path) -> None:
    for args in (
        ["serve", "--db", "postgresql:/oops"],
        ["doctor", "--db", "mysql://u@h/db"],
        ["db", "migrate", "--db", "ftp://x"],
    ):
        result = subprocess.run(
            [*BOBGEN, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
        assert result.returncode == 2, result
        assert result.stderr.count("\n") == 1 and "--db" in result.stderr
        assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unreachable_server_is_one_line_without_the_password(tmp_path: Path) -> None:
    result = subprocess.run(
        [*BOBGEN, "db", "migrate", "--db", "postgresql://nobody:hunter2@127.0.0.1:1/nope"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("bobgen: error:") and "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
