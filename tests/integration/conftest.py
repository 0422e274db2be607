"""Everything under tests/integration is an `integration` test (real models, daemons, servers), and the
real parts that several of its modules share: the 135M edge and one cloud stand-in for the whole run."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import pytest

from cloud.openai_backend import OpenAIBackend
from cloud.standin import StandinServer
from router.assembly.parts import STANDIN_SERVER_MODULE
from tests.conftest import TEST_MODEL, models_dir

if TYPE_CHECKING:  # llama_cpp loads when a test needs the edge, not when `-m unit` collects this directory
    from edge.llama_backend import LlamaBackend

HERE = Path(__file__).resolve().parent
STANDIN_ALIAS = "smollm2-135m-standin"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def smollm_edge(smollm_path: Path) -> Iterator["LlamaBackend"]:
    """The 135M model as the edge, in this process (one thread: the machine may have two cores)."""
    from edge.llama_backend import LlamaBackend

    backend = LlamaBackend(smollm_path, model_name=TEST_MODEL, n_ctx=2048, n_threads=1)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def standin(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StandinServer]:
    """llama.cpp's OpenAI-compatible server with the 135M model: the cloud of the tests that need a real
    one but not a daemon. StandinServer is bound to no event loop, so asyncio.run per call will do."""
    server = StandinServer(smollm_path, model_alias=STANDIN_ALIAS, n_ctx=2048, n_threads=1,
                           server_module=STANDIN_SERVER_MODULE,
                           log_path=tmp_path_factory.mktemp("standin") / "standin.log")
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


def standin_cloud(standin: StandinServer, **options: object) -> OpenAIBackend:
    """A cloud backend on the stand-in; close it in the test's own event loop."""
    return OpenAIBackend(base_url=standin.base_url, api_key=None, model=STANDIN_ALIAS, **options)


@pytest.fixture(scope="module")
def encoder():
    """The real text encoder on one thread (the Info tests' embedder); the test is skipped where it is not pulled."""
    from edge.catalogue import ModelCache
    from edge.encoder import ENCODER_MODEL, TextEncoder
    from edge.errors import EdgeError

    try:
        return TextEncoder.from_cache(ModelCache(models_dir()), threads=1)
    except EdgeError as exc:
        pytest.skip(f"the text encoder {ENCODER_MODEL} is not usable here: {exc}")
