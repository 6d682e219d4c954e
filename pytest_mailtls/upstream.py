"""How this host dials a cell's server: the one home of that fact.

A server container is reached in one of two ways (see :func:`pytest_mailtls.runtime.start_container`):

- sealed (a local Linux engine): the container has no network at all; each of its cell ports is a unix socket
  in a 0700 folder of the run's temp dir, ``host`` is that socket's absolute path and ``port`` the container
  port behind it (a relay inside the container connects it to the server from 127.0.0.2);
- published (Docker Desktop, rootless or remote engines, ``MAILTLS_PUBLISH_PORTS=1``): ``host`` is 127.0.0.1
  and ``port`` the port the engine published there.

The session recorder, the readiness checks and every handshake helper dial through :func:`dial` (blocking) or
:func:`open_connection` (asyncio), so none of them needs to know which.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only open_connection's annotations: dial() must not import asyncio (the probe's start)
    import asyncio

__all__ = ["describe", "dial", "is_socket", "open_connection"]


def is_socket(host: str) -> bool:
    """Whether ``host`` names a unix socket (an absolute path) rather than an address."""
    return host.startswith("/")


def describe(host: str, port: int) -> str:
    """``host:port``, or the socket path and the container port behind it."""
    return f"{host} (port {port})" if is_socket(host) else f"{host}:{port}"


#: The longest path a unix socket address holds (``sun_path`` is 108 bytes with its NUL).
SUN_PATH_MAX = 107


@contextlib.contextmanager
def _reachable(path: str) -> Iterator[str]:
    """``path``, or when it is too long for a socket address, the same socket through a short
    ``/proc/self/fd/N/NAME`` (N: its folder, opened for the block). Sealed containers exist on Linux only."""
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield path
        return
    folder = os.open(os.path.dirname(path), os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{folder}/{os.path.basename(path)}"
    finally:
        os.close(folder)


def dial(host: str, port: int, timeout: float | None = None) -> socket.socket:
    """A connected socket to ``host``/``port`` (a unix socket when ``host`` is a path); raises ``OSError``."""
    if not is_socket(host):
        return socket.create_connection((host, port), timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        with _reachable(host) as path:
            sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock


async def open_connection(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol], host: str, port: int
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """:func:`dial` for an event loop: the transport and protocol of a connection to ``host``/``port``."""
    if not is_socket(host):
        return await loop.create_connection(factory, host, port)  # type: ignore[return-value]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        with _reachable(host) as path:
            await loop.sock_connect(sock, path)
    except BaseException:
        sock.close()
        raise
    return await loop.create_unix_connection(factory, sock=sock)  # type: ignore[return-value]
