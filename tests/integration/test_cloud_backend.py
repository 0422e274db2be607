"""cloud/ against real parts: llama-cpp-python's server (StandinServer) running SmolLM2-135M, the
OpenAIBackend over loopback HTTP, and the fault-injection server in front of the stand-in."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import isolated_env, models_dir, wait_until

from cloud.errors import CloudBadResponseError, CloudRejectedError, StandinStartError
from cloud.fault_injection_server import Fault, FaultInjectionOpenAIServer
from cloud.openai_backend import OpenAIBackend
from cloud.standin import StandinServer
from router.assembly.parts import STANDIN_SERVER_MODULE

MODEL_PATH = models_dir() / "smollm2-135m.gguf"
MODEL_ALIAS = "smollm2-135m-standin"
REPO_ROOT = Path(__file__).resolve().parents[2]
SHORT_PROMPT = ({"role": "user", "content": "What is the capital of France? Answer in one word."},)
LONG_PROMPT = ({"role": "user", "content": "Write a long story about a dragon who learns to cook."},)

pytestmark = [pytest.mark.integration,
              pytest.mark.usefixtures("smollm_path")]  # pulls and verifies the model; never skips


@pytest.fixture(scope="session")
def standin(tmp_path_factory: pytest.TempPathFactory):
    # StandinServer is not bound to an event loop, so one asyncio.run per call is enough here.
    log_path = tmp_path_factory.mktemp("standin") / "standin.log"
    server = StandinServer(MODEL_PATH, model_alias=MODEL_ALIAS, n_ctx=2048, server_module=STANDIN_SERVER_MODULE, log_path=log_path)
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


def backend_for(base_url: str, **options: object) -> OpenAIBackend:
    return OpenAIBackend(base_url=base_url, api_key=None, model=MODEL_ALIAS, **options)


async def collect(backend: OpenAIBackend, messages=SHORT_PROMPT, max_tokens: int = 12):
    stream = backend.stream(messages, max_tokens=max_tokens, temperature=0.0, seed=7)
    try:
        texts = [delta.text async for delta in stream]
    finally:
        await stream.aclose()
    return texts, stream.completion


async def test_streams_a_short_completion(standin: StandinServer) -> None:
    backend = backend_for(standin.base_url)
    texts, completion = await collect(backend, max_tokens=12)
    await backend.close()
    assert completion is not None
    assert texts and completion.text == "".join(texts)
    assert completion.text.strip()
    assert completion.model == MODEL_ALIAS
    assert completion.finish_reason in ("stop", "length")
    # llama-cpp-python 0.3.36 ignores stream_options and sends no usage: the counts are ours.
    assert completion.usage_estimated is True
    assert completion.completion_tokens == len(texts)
    assert 1 <= completion.completion_tokens <= 12
    assert completion.prompt_tokens > 5
    assert 0.0 <= completion.queue_s <= completion.ttft_s <= completion.total_s


async def test_same_seed_same_text_at_temperature(standin: StandinServer) -> None:
    backend = backend_for(standin.base_url)
    runs = []
    for _ in range(2):
        stream = backend.stream(SHORT_PROMPT, max_tokens=8, temperature=0.9, seed=1234)
        runs.append("".join([delta.text async for delta in stream]))
    await backend.close()
    assert runs[0] == runs[1]


async def test_rate_limited_once_then_served_through_the_fault_server(standin: StandinServer) -> None:
    with FaultInjectionOpenAIServer(upstream_base_url=standin.base_url, retry_after_s=0.1) as faults:
        faults.inject(Fault.STATUS_429)
        backend = backend_for(faults.base_url, max_retries=2)
        texts, completion = await collect(backend, max_tokens=8)
        await backend.close()
    assert faults.requests_seen == 2  # the 429, then the retry that reached the stand-in
    assert completion is not None and completion.finish_reason in ("stop", "length")
    assert completion.text == "".join(texts) and texts


async def test_cancel_mid_stream_stops_the_server_and_the_next_request_works(standin: StandinServer) -> None:
    log_before = standin.log_path.stat().st_size  # this test's own lines only, not the whole run's
    backend = backend_for(standin.base_url)
    stream = backend.stream(LONG_PROMPT, max_tokens=400, temperature=0.0)
    received = []
    async for delta in stream:
        received.append(delta.text)
        if len(received) == 3:
            break
    await stream.aclose()
    completion = stream.completion
    assert completion is not None
    assert completion.finish_reason == "cancelled"
    assert completion.completion_tokens == 3
    assert completion.text == "".join(received)
    assert completion.usage_estimated is True

    texts, after = await collect(backend, max_tokens=6)
    await backend.close()
    assert after is not None and after.finish_reason in ("stop", "length") and texts
    # The stand-in saw this request's disconnect and stopped generating (llama_cpp/server/app.py prints this).
    def disconnect_logged() -> bool:
        with standin.log_path.open("rb") as log:
            log.seek(log_before)
            return b"Disconnected from client" in log.read()
    wait_until(disconnect_logged, "the stand-in logging this request's disconnect")


async def test_prompt_longer_than_the_context_is_rejected_where_the_window_is_known(standin: StandinServer) -> None:
    # In streaming mode the stand-in answers 200 and then an empty body: no error can reach us.
    too_long = ({"role": "user", "content": "hello world " * 1500},)
    unknown_window = backend_for(standin.base_url)
    with pytest.raises(CloudBadResponseError):
        await collect(unknown_window, messages=too_long, max_tokens=8)
    await unknown_window.close()

    known_window = backend_for(standin.base_url, context_tokens=2048)
    with pytest.raises(CloudRejectedError, match="does not fit the cloud model's context of 2048 tokens") as caught:
        await collect(known_window, messages=too_long, max_tokens=8)
    assert caught.value.status == 400
    texts, completion = await collect(known_window, max_tokens=4)
    await known_window.close()
    assert completion is not None and texts


async def test_stop_leaves_no_child_process(tmp_path: Path) -> None:
    server = StandinServer(MODEL_PATH, model_alias="stop-test", n_ctx=512, server_module=STANDIN_SERVER_MODULE, log_path=tmp_path / "log")
    await server.start()
    pid = server.pid
    assert server.running and pid is not None and process_alive(pid)
    await server.stop()
    assert not server.running
    assert not process_alive(pid)
    assert server.base_url == ""


async def test_child_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent_script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from cloud.standin import StandinServer\n"
        "async def main():\n"
        "    server = StandinServer(Path(sys.argv[1]), model_alias='orphan-test', n_ctx=512,\n"
        "                           server_module='edge.openai_server',\n"
        "                           log_path=Path(sys.argv[2]))\n"
        "    await server.start()\n"
        "    print(server.pid, flush=True)\n"
        "    await asyncio.sleep(600)\n"  # only lives until the test kills it: the sleep orders nothing
        "asyncio.run(main())\n")
    parent = subprocess.Popen([sys.executable, "-c", parent_script, str(MODEL_PATH), str(tmp_path / "log")],
                              cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                              env=isolated_env(tmp_path / "home", {"PYTHONPATH": str(REPO_ROOT)}))
    try:
        child_pid = int(await asyncio.to_thread(parent.stdout.readline))
        assert process_alive(child_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        parent.stdout.close()
    await asyncio.to_thread(wait_until, lambda: not process_alive(child_pid), "the orphaned stand-in dying")


async def test_corrupt_model_fails_to_start_with_the_childs_output(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"this is not a GGUF model, only junk bytes\n" * 100)
    log_path = tmp_path / "standin.log"
    server = StandinServer(corrupt, model_alias="corrupt", n_ctx=512, log_path=log_path, server_module=STANDIN_SERVER_MODULE,
                           startup_timeout_s=120)
    with pytest.raises(StandinStartError) as caught:
        await server.start()
    assert not server.running
    child_output = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    assert child_output, "the child wrote nothing to its log"
    assert child_output[-1] in str(caught.value)
    assert str(corrupt) in str(caught.value)


def process_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")
