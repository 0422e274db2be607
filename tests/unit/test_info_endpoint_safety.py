"""`Info` shows where each backend is without credentials or the host's paths (router/assembly/parts.py)."""
from __future__ import annotations

import pytest

from router.assembly.parts import public_endpoint


@pytest.mark.parametrize(("configured", "shown"), [
    ("https://user:sk-secret-key@api.example.com/v1?key=sk-secret-key#frag", "https://api.example.com/v1"),
    ("https://:sk-secret-key@api.example.com:8443/openai/v1", "https://api.example.com:8443/openai/v1"),
    ("https://api.example.com/v1?api-version=2024-06-01&api_key=sk-secret-key", "https://api.example.com/v1"),
    ("http://user%40corp:p%40ss@[::1]:8080/v1", "http://[::1]:8080/v1"),
    ("http://127.0.0.1:41000/v1", "http://127.0.0.1:41000/v1"),
    ("https://api.openai.com", "https://api.openai.com"),
])
def test_a_url_keeps_scheme_host_port_and_path_only(configured: str, shown: str) -> None:
    assert public_endpoint(configured) == shown
    assert "secret" not in public_endpoint(configured)


@pytest.mark.parametrize(("configured", "shown"), [
    ("/home/alice/.cache/hybrid-router/models/qwen2.5-0.5b-q4.gguf", "qwen2.5-0.5b-q4.gguf"),
    ("models/smollm2-135m.gguf", "smollm2-135m.gguf"),
    ("C:\\Users\\alice\\models\\edge.gguf", "edge.gguf"),
    ("/dev/null", "null"),
    ("default", "default"),
])
def test_a_file_shows_its_name_only(configured: str, shown: str) -> None:
    assert public_endpoint(configured) == shown
