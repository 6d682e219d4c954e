"""pytest_mailtls.upstream: one way to dial a server, TCP or a sealed container's unix socket, however long
the socket's path (a pytest basetemp easily passes the 107 bytes a socket address holds)."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mailtls import upstream


def _serve(sock: socket.socket) -> None:
    def run() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"hello\n")

    threading.Thread(target=run, daemon=True).start()


@pytest.fixture(params=["short", "long"])
def unix_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if sys.platform != "linux":
        pytest.skip("sealed containers (and their sockets) exist on Linux only")
    base = Path("/tmp") if request.param == "short" else tmp_path_factory.mktemp("x" * 60) / ("y" * 60)
    folder = base / f"mailtls-upstream-{request.param}-{id(request)}"
    folder.mkdir(parents=True)
    path = str(folder / "10000")
    assert (len(path) > upstream.SUN_PATH_MAX) is (request.param == "long")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with upstream._reachable(path) as short:
        server.bind(short)
    server.listen()
    _serve(server)
    try:
        yield path
    finally:
        server.close()
        Path(path).unlink()
        folder.rmdir()


def test_is_socket_and_describe() -> None:
    assert upstream.is_socket("/run/x/25") and not upstream.is_socket("127.0.0.1")
    assert upstream.describe("127.0.0.1", 25) == "127.0.0.1:25"
    assert upstream.describe("/run/x/25", 25) == "/run/x/25 (port 25)"


def test_dial_reaches_a_unix_socket_whatever_its_path(unix_server: str) -> None:
    with upstream.dial(unix_server, 10000, timeout=5) as sock:
        assert sock.makefile("rb").readline() == b"hello\n"


def test_open_connection_reaches_a_unix_socket_whatever_its_path(unix_server: str) -> None:
    async def greeting() -> bytes:
        loop = asyncio.get_running_loop()
        got: asyncio.Future[bytes] = loop.create_future()

        class Reader(asyncio.Protocol):
            def data_received(self, data: bytes) -> None:
                if not got.done():
                    got.set_result(data)

        transport, _ = await upstream.open_connection(loop, Reader, unix_server, 10000)
        try:
            return await asyncio.wait_for(got, 5)
        finally:
            transport.close()

    assert asyncio.run(greeting()) == b"hello\n"


def test_dial_tcp_and_a_missing_socket() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        _serve(server)
        with upstream.dial("127.0.0.1", server.getsockname()[1], timeout=5) as sock:
            assert sock.recv(6) == b"hello\n"
    with pytest.raises(FileNotFoundError):
        upstream.dial("/nonexistent/mailtls/10000", 10000, timeout=1)
