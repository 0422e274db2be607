"""The tests' own isolation from the machine that runs them (tests/conftest.py): the environment a test
daemon gets, and the settings an in-process one gets, hold nothing of the user's. A daemon started on a
poisoned environment is in tests/integration/test_isolation.py."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterator

import pytest
from pydantic import BaseModel

from router.domain.config import CONFIG_FILE_ENV, Settings
from tests.conftest import (MODELS_CACHE_ENV, forget_inherited_variables, isolated_env, make_settings, models_dir,
                            private_paths)

POISON = {
    "HYBRID_ROUTER_CLOUD__API_KEY": "sk-poison-must-not-reach-a-test",
    "HYBRID_ROUTER_CLOUD__BASE_URL": "http://127.0.0.1:9/poison",
    CONFIG_FILE_ENV: "/nonexistent/poison.toml",
    "HYBRID_ROUTER_LEDGER__PATH": "/nonexistent/poison/ledger.db",
    "OPENAI_API_KEY": "sk-poison-openai",
    "OPENAI_BASE_URL": "http://127.0.0.1:9/poison-openai",
}


@pytest.fixture
def poisoned(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in POISON.items():
        monkeypatch.setenv(key, value)


def home_defaults(model: type[BaseModel], prefix: str = "HYBRID_ROUTER_") -> Iterator[tuple[str, str]]:
    """(environment variable, default) of every setting whose default is in the user's home."""
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from home_defaults(field.annotation, f"{prefix}{name.upper()}__")
        elif str(field.default).startswith("~"):
            yield f"{prefix}{name.upper()}", str(field.default)


def test_forgetting_keeps_only_where_the_models_are() -> None:
    environ = {**POISON, MODELS_CACHE_ENV: "/models", "PATH": "/bin"}
    forget_inherited_variables(environ)
    assert environ == {MODELS_CACHE_ENV: "/models", "PATH": "/bin"}


def test_a_test_daemons_environment_holds_none_of_the_parents_variables(poisoned: None, tmp_path: Path) -> None:
    env = isolated_env(tmp_path / "home", {"HYBRID_ROUTER_EDGE__N_THREADS": "1"})
    assert not set(POISON) & set(env)
    assert env["HOME"] == str(tmp_path / "home") and (tmp_path / "home").is_dir()
    assert env[MODELS_CACHE_ENV] == str(models_dir()) and env["HYBRID_ROUTER_EDGE__N_THREADS"] == "1"
    assert env["PATH"]  # the rest of the environment is kept


def test_every_setting_in_the_home_is_moved_or_is_the_shared_model_cache(tmp_path: Path) -> None:
    in_home = dict(home_defaults(Settings))
    assert in_home, "the walk found no setting in the home: it is broken"
    assert set(in_home) == set(private_paths(tmp_path)) | {MODELS_CACHE_ENV}, in_home
    assert all(Path(path).is_relative_to(tmp_path) for path in private_paths(tmp_path).values())


def test_in_process_settings_ignore_a_poisoned_environment(poisoned: None) -> None:
    settings = make_settings()
    assert settings.cloud.uses_standin and settings.cloud.api_key is None and settings.cloud.base_url is None
    for path in (settings.ledger.path, settings.info.index_dir, settings.auth.principals_file,
                 settings.auth.local_token_file):
        assert Path(path).is_relative_to(tempfile.gettempdir()), path  # a directory of the test's own
