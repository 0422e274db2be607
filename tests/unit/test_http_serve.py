"""The HTTP door's listening socket: named TCP, so that asyncio turns Nagle's algorithm off on every
connection it accepts (an SSE event would otherwise wait for the client's delayed ACK), and an address
that is taken fails at once."""
import socket

import pytest

from router.domain.config import ConfigError
from router.doors.http.serve import _bind, split_address


def test_the_listening_socket_is_tcp_so_accepted_connections_get_no_delay() -> None:
    listener = _bind("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
        client = socket.create_connection(listener.getsockname())
        listener.setblocking(True)
        accepted, _ = listener.accept()
        assert accepted.proto == socket.IPPROTO_TCP  # what asyncio's _set_nodelay checks
        accepted.close()
        client.close()
    finally:
        listener.close()


def test_a_taken_port_and_a_bad_address_are_config_errors() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            _bind("127.0.0.1", holder.getsockname()[1])
    finally:
        holder.close()
    assert split_address("[::1]:8080") == ("::1", 8080)
    with pytest.raises(ConfigError, match="not host:port"):
        split_address("8080")
