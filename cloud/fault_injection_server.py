"""A real OpenAI-compatible HTTP server on loopback whose job is to inject faults.

Reliability tests and overhead benches point an `OpenAIBackend` at it. Each request takes the next
pending fault, if any (see `inject`); requests without one are forwarded, streaming included, to
`upstream_base_url` (a real server such as the stand-in), or answered 503 when there is none.

With `record=True` it also keeps every request it receives, body included, and the upstream's answer to
each one it forwards (`received`), so that a test can check what reached the cloud and what came back
(the privacy tests: no personal data may reach it, and its answer is restored before the client sees it).

It notices a client that goes away: while it hangs, stalls or waits to answer it watches the client's
socket, and a relayed stream that can no longer be written ends there and closes the upstream connection.
Each such request is counted (`disconnects`, `wait_for_disconnects`) and, recorded, marked
(`ReceivedRequest.client_disconnected`), so that a test can prove a cancel really closed the connection.

It runs the standard library's threading HTTP server in a background thread, so it works the same
under any event loop (or none).
"""
from __future__ import annotations

import collections
import enum
import http.client
import http.server
import json
import select
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from types import MappingProxyType
from typing import Optional

DEFAULT_HANG_S = 30.0
_FORWARD_TIMEOUT_S = 300.0
_READ_SIZE = 65536
# Hop-by-hop headers and those this proxy recomputes.
_NOT_FORWARDED = frozenset({"host", "connection", "keep-alive", "content-length", "transfer-encoding",
                            "accept-encoding", "proxy-connection", "te", "upgrade", "date", "server"})
_FAULT_STATUS = MappingProxyType({"STATUS_500": 500, "STATUS_503": 503, "STATUS_429": 429})


class Fault(enum.Enum):
    STATUS_500 = "status_500"          # 500 with an OpenAI-style error body
    STATUS_503 = "status_503"          # 503 with an OpenAI-style error body
    STATUS_429 = "status_429"          # 429, with Retry-After when the server has retry_after_s
    HANG = "hang"                      # reads the request, answers nothing (until hang_s or stop)
    GARBAGE_BODY = "garbage_body"      # 200 with a body that is neither JSON nor SSE
    TRUNCATED_STREAM = "truncated"     # 200 SSE: two valid chunks, then the connection drops
    STALLED_STREAM = "stalled"         # 200 SSE: two valid chunks, then silence (until hang_s or stop)
    MALFORMED_CHUNK = "malformed"      # 200 SSE: one valid chunk, then one that is not JSON


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    body: bytes
    relayed: bytes = b""  # a forwarded request: the upstream's answer body as relayed so far (SSE for a stream)
    client_disconnected: bool = False  # the client went away before this request's answer was whole


@dataclass
class _Recording:
    request: ReceivedRequest
    relayed: bytearray
    client_disconnected: bool = False


class FaultInjectionOpenAIServer:
    """Context manager; also start()/stop(). `base_url` is valid after start."""

    def __init__(self, *, upstream_base_url: Optional[str] = None,
                 retry_after_s: Optional[float] = None, hang_s: float = DEFAULT_HANG_S,
                 record: bool = False, canned_answer: Optional[str] = None, answer_latency_s: float = 0.0) -> None:
        """`canned_answer`: with no upstream, a request without a fault is answered with this text, streamed
        as one chunk with usage, after `answer_latency_s` (the load and soak benches' fixed-latency cloud)."""
        self.upstream_base_url = upstream_base_url.rstrip("/") if upstream_base_url else None
        self.canned_answer = canned_answer
        self.answer_latency_s = answer_latency_s
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.base_url = ""
        self._pending: collections.deque[Fault] = collections.deque()
        self._requests_seen = 0
        self._record = record
        self._received: list[_Recording] = []
        self._lock = threading.Lock()
        self._disconnected = threading.Condition(self._lock)
        self._disconnects = 0
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._httpd: Optional[_FaultHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "FaultInjectionOpenAIServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def requests_seen(self) -> int:
        with self._lock:
            return self._requests_seen

    @property
    def pending_faults(self) -> int:
        """Faults injected and not yet taken by a request."""
        with self._lock:
            return len(self._pending)

    @property
    def received(self) -> tuple[ReceivedRequest, ...]:
        """Every request received so far, in order (record=True; empty otherwise)."""
        with self._lock:
            return tuple(ReceivedRequest(r.request.method, r.request.path, r.request.body, bytes(r.relayed),
                                         r.client_disconnected)
                         for r in self._received)

    @property
    def disconnects(self) -> int:
        """Requests whose client went away before their answer was whole."""
        with self._lock:
            return self._disconnects

    def wait_for_disconnects(self, count: int, timeout: float) -> bool:
        """Whether `count` clients in all have gone away mid-request within `timeout` seconds."""
        with self._disconnected:
            return self._disconnected.wait_for(lambda: self._disconnects >= count, timeout)

    def inject(self, fault: Fault, times: int = 1) -> None:
        """The next `times` requests (after any faults already pending) get `fault`."""
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._pending.extend([fault] * times)

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("fault-injection server already started")
        self._stopping.clear()
        # Port 0: the kernel picks a free port at bind time, so there is no race to retry.
        self._httpd = _FaultHTTPServer(("127.0.0.1", 0), _FaultHandler, owner=self)
        port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fault-injection-openai-{port}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes HANG and STALLED_STREAM handlers
        httpd.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive handlers would otherwise linger
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    # Called from handler threads.
    def _take_fault(self, request: ReceivedRequest) -> tuple[Optional[Fault], Optional[_Recording]]:
        """The request's fault (None: forward it), and where to record its answer (None: record=False)."""
        with self._lock:
            self._requests_seen += 1
            recording = None
            if self._record:
                recording = _Recording(request, bytearray())
                self._received.append(recording)
            return (self._pending.popleft() if self._pending else None), recording

    def _record_relayed(self, recording: Optional[_Recording], data: bytes) -> None:
        if recording is not None:
            with self._lock:
                recording.relayed.extend(data)

    def _record_disconnect(self, recording: Optional[_Recording]) -> None:
        with self._disconnected:
            self._disconnects += 1
            if recording is not None:
                recording.client_disconnected = True
            self._disconnected.notify_all()

    def _track(self, connection: socket.socket, active: bool) -> None:
        with self._lock:
            if active:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _FaultHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type, *,
                 owner: FaultInjectionOpenAIServer) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        # A client that gives up on a hang or a cut stream closes its socket while the fault is still
        # writing: that is the fault working, not a server error worth a traceback in the test output.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


class _FaultHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as real servers do
    server: _FaultHTTPServer

    def setup(self) -> None:
        super().setup()
        # Each SSE event is its own small write: with Nagle's algorithm on, one would wait for the client's
        # delayed ACK (tens of milliseconds), a latency no real provider adds and every bench would measure.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.owner._track(self.connection, active=True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, active=False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib's name
        pass  # tests and benches keep their output clean

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        body = self._read_body()
        owner = self.server.owner
        fault, recording = owner._take_fault(ReceivedRequest(self.command, self.path, body))
        self._recording = recording
        try:
            if fault is None:
                self._forward(body, recording)
            elif fault.name in _FAULT_STATUS:
                self._send_status_fault(_FAULT_STATUS[fault.name])
            elif fault is Fault.HANG:
                self._wait_while_the_client_stays(owner.hang_s)
                self.close_connection = True
            elif fault is Fault.GARBAGE_BODY:
                self._send_bytes(200, "application/json", b"<html>\x00\xff\xfe 502 proxy says hi {{{")
            elif fault is Fault.TRUNCATED_STREAM:
                self._send_sse_start()
                for text in ("Hello", " there"):
                    self._send_sse_event(_chunk_json(text))
                self.close_connection = True  # dropped without the terminating chunk or [DONE]
            elif fault is Fault.STALLED_STREAM:
                self._send_sse_start()
                for text in ("Hello", " there"):
                    self._send_sse_event(_chunk_json(text))
                self._wait_while_the_client_stays(owner.hang_s)
                self.close_connection = True
            elif fault is Fault.MALFORMED_CHUNK:
                self._send_sse_start()
                self._send_sse_event(_chunk_json("Hello"))
                self._send_sse_event('{"id": "chatcmpl-fault", "choices": [{"delta": ')
                self._send_sse_event("[DONE]")
                self._end_chunked()
        except (BrokenPipeError, ConnectionResetError):
            owner._record_disconnect(recording)
            self.close_connection = True

    def _wait_while_the_client_stays(self, seconds: float) -> bool:
        """Wait up to `seconds`, or until the server stops or the client closes its end (that is recorded).
        True when the wait ran its course."""
        owner = self.server.owner
        deadline = time.monotonic() + seconds
        while not owner._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.05))
            if readable:
                if self._client_closed():
                    owner._record_disconnect(self._recording)
                    return False
                owner._stopping.wait(min(left, 0.05))  # bytes waiting (a next request): not a close
        return False

    def _client_closed(self) -> bool:
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send_bytes(self, status: int, content_type: str, payload: bytes,
                    extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _send_error_json(self, status: int, message: str, error_type: str, code: Optional[str],
                         extra_headers: tuple[tuple[str, str], ...] = ()) -> None:
        payload = json.dumps({"error": {"message": message, "type": error_type, "param": None,
                                        "code": code}}).encode()
        self._send_bytes(status, "application/json", payload, extra_headers)

    def _send_status_fault(self, status: int) -> None:
        if status == 429:
            retry_after = self.server.owner.retry_after_s
            headers = (("Retry-After", f"{retry_after:g}"),) if retry_after is not None else ()
            self._send_error_json(429, "injected fault: rate limit reached", "rate_limit_error",
                                  "rate_limit_exceeded", headers)
        else:
            self._send_error_json(status, f"injected fault: HTTP {status}", "server_error", None)

    def _send_sse_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _send_sse_event(self, data: str) -> None:
        self._write_chunk(f"data: {data}\n\n".encode())

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _forward(self, body: bytes, recording: Optional[_Recording]) -> None:
        upstream = self.server.owner.upstream_base_url
        if upstream is None and self.server.owner.canned_answer is not None:
            self._send_canned_answer(self.server.owner.canned_answer)
            return
        if upstream is None:
            self._send_error_json(503, "fault-injection server has no upstream", "server_error", None)
            return
        target = urllib.parse.urlsplit(upstream)
        path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port or 80,
                                                timeout=_FORWARD_TIMEOUT_S)
        try:
            headers = {name: value for name, value in self.headers.items()
                       if name.lower() not in _NOT_FORWARDED}
            try:
                connection.request(self.command, target.path.rstrip("/") + path, body=body or None,
                                   headers=headers)
                response = connection.getresponse()
            except OSError as exc:
                self._send_error_json(502, f"upstream unreachable: {type(exc).__name__}",
                                      "server_error", None)
                return
            self._relay(response, recording)
        finally:
            # Closing here (also when our client went away mid-stream) tells the upstream to stop.
            connection.close()

    def _send_canned_answer(self, text: str) -> None:
        owner = self.server.owner
        if owner.answer_latency_s > 0 and not self._wait_while_the_client_stays(owner.answer_latency_s):
            self.close_connection = True
            return
        self._send_sse_start()
        self._send_sse_event(_chunk_json(text))
        self._send_sse_event(json.dumps({
            "id": "chatcmpl-fault-injection", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": "fault-injection", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}}))
        self._send_sse_event("[DONE]")
        self._end_chunked()

    def _relay(self, response: http.client.HTTPResponse, recording: Optional[_Recording]) -> None:
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in _NOT_FORWARDED:
                self.send_header(name, value)
        length = response.getheader("Content-Length")
        if length is not None:
            payload = response.read()
            self.server.owner._record_relayed(recording, payload)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            data = response.read1(_READ_SIZE)
            if not data:
                break
            self.server.owner._record_relayed(recording, data)
            self._write_chunk(data)
        self._end_chunked()


def _chunk_json(text: str) -> str:
    return json.dumps({
        "id": "chatcmpl-fault-injection", "object": "chat.completion.chunk", "created": int(time.time()),
        "model": "fault-injection",
        "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
    })
