from pathlib import Path

import pytest

from service.config import Config, ConfigError


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
