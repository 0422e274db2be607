import subprocess
import sys
from pathlib import Path

import pytest

from router.domain.config import ConfigError, Settings, load_settings
from tests.conftest import isolated_env


def test_defaults_are_loopback_and_the_embedded_default() -> None:
    settings = load_settings(None, {})
    assert settings == Settings()
    assert settings.server.listen.startswith("127.0.0.1:")
    assert settings.cloud.uses_standin
    assert settings.edge.model == "qwen2.5-coder-0.5b" and settings.standin.model == "qwen2.5-coder-1.5b"


def test_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[edge]\nn_threads = 3\nn_ctx = 1024\n[cloud]\nmodel = "gpt-x"\n')
    settings = load_settings(config, {"HYBRID_ROUTER_EDGE__N_THREADS": "4"})
    assert settings.edge.n_threads == 4  # the environment wins
    assert settings.edge.n_ctx == 1024 and settings.cloud.model == "gpt-x"


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[server]\ndefault_max_tokens = 64\n')
    assert load_settings(None, {"HYBRID_ROUTER_CONFIG": str(config)}).server.default_max_tokens == 64


@pytest.mark.parametrize("file_text, env, fragment", [
    ("[edge]\nn_threads = 0\n", {}, "edge.n_threads"),
    ("", {"HYBRID_ROUTER_EDGE__N_THREADS": "many"}, "HYBRID_ROUTER_EDGE__N_THREADS"),
    ("[edge]\nthreads = 2\n", {}, "edge.threads"),
    ("[server]\ndefault_mode = \"psychic\"\n", {}, "unknown mode 'psychic'"),
    ("[ledger]\nlog_content = \"some\"\n", {}, "ledger.log_content"),
    ("[server]\ndefault_max_tokens = 9000\n", {}, "default_max_tokens must not exceed"),
    ("", {"HYBRID_ROUTER_SERVER__SHUTDOWN_FLUSH_S": "0"},
     "server.shutdown_flush_s: Input should be greater than 0 (got '0') [from HYBRID_ROUTER_SERVER__SHUTDOWN_FLUSH_S]"),
    ("[arbitration]\narbiter = \"oracle\"\n", {}, "arbitration.arbiter"),
    ("", {"HYBRID_ROUTER_ARBITRATION__SCORER": "psychic"}, "arbitration.scorer"),
    ("[arbitration]\nfixed_threshold = 1.5\n", {}, "arbitration.fixed_threshold"),
    ("", {"HYBRID_ROUTER_ARBITRATION__TARGET_CLOUD_SHARE": "1"}, "arbitration.target_cloud_share"),
    ("", {"HYBRID_ROUTER_ARBITRATION__TARGET_CLOUD_SHARE": "0"}, "arbitration.target_cloud_share"),
    ("[arbitration]\nthreshold = \"vibes\"\n", {}, "arbitration.threshold"),
    ("[arbitration]\nwindow = 10\nmin_samples = 20\n", {}, "min_samples must not exceed window"),
    ("", {"HYBRID_ROUTER_NOPE__X": "1"}, "HYBRID_ROUTER_NOPE__X"),
    ("[edge\n", {}, "not valid TOML"),
])
def test_invalid_values_name_the_key(tmp_path: Path, file_text: str, env: dict, fragment: str) -> None:
    config = tmp_path / "router.toml"
    config.write_text(file_text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, env)
    assert fragment in str(caught.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(Path("/nonexistent/router.toml"), {})


def test_api_key_is_never_echoed_in_errors(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[cloud]\napi_key = "sk-secret-123"\ntimeout_s = -1\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "sk-secret-123" not in str(caught.value)
    assert "sk-secret-123" not in repr(load_settings(None, {"HYBRID_ROUTER_CLOUD__API_KEY": "sk-secret-123"}))


def test_serve_refuses_to_start_on_a_bad_value(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text("[edge]\nn_ctx = -4\n")
    proc = subprocess.run([sys.executable, "-m", "router", "--config", str(config), "serve"],
                          capture_output=True, text=True, timeout=60, env=isolated_env(tmp_path / "home"))
    assert proc.returncode == 2
    assert "edge.n_ctx" in proc.stderr


def test_config_is_accepted_after_the_command(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text("[edge]\nn_ctx = -4\n")
    proc = subprocess.run([sys.executable, "-m", "router", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env=isolated_env(tmp_path / "home"))
    assert proc.returncode == 2 and "edge.n_ctx" in proc.stderr


def test_an_api_key_never_travels_in_clear_beyond_loopback() -> None:
    with pytest.raises(ConfigError, match="in clear"):
        load_settings(None, {"HYBRID_ROUTER_CLOUD__BASE_URL": "http://api.example.com/v1",
                             "HYBRID_ROUTER_CLOUD__API_KEY": "sk-x"})
    for url in ("https://api.example.com/v1", "http://127.0.0.1:8080/v1", "http://localhost:8080/v1"):
        assert load_settings(None, {"HYBRID_ROUTER_CLOUD__BASE_URL": url,
                                    "HYBRID_ROUTER_CLOUD__API_KEY": "sk-x"}).cloud.base_url == url


def test_the_daemons_info_token_never_travels_in_clear_beyond_loopback(tmp_path) -> None:
    remote = {"HYBRID_ROUTER_INFO__SERVICE": "remote", "HYBRID_ROUTER_INFO__TOKEN_FILE": str(tmp_path / "t")}
    with pytest.raises(ConfigError, match="in clear"):
        load_settings(None, {**remote, "HYBRID_ROUTER_INFO__ADDRESS": "info.example:50052"})
    assert load_settings(None, {**remote, "HYBRID_ROUTER_INFO__ADDRESS": "127.0.0.1:50052"}).info.token_file
    assert load_settings(None, {**remote, "HYBRID_ROUTER_INFO__ADDRESS": "info.example:50052",
                                "HYBRID_ROUTER_INFO__TLS_CA_FILE": str(tmp_path / "ca.pem")}).info.tls_ca_file
