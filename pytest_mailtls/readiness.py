"""Readiness: every port passes a real protocol exchange, with a deadline.

A bare TCP connect or a log line proves nothing: docker-proxy accepts before
the server listens, and a server can listen with the wrong certificate. Each
cell must greet, answer EHLO/CAPABILITY/CAPA and complete its TLS handshake.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from .connect import plain_exchange, tls_handshake
from .errors import ServerStartError
from .manifest import Endpoint

__all__ = ["wait_ready", "check_endpoint", "readiness_context"]

POLL_INTERVAL = 0.05


def readiness_context(endpoint: Endpoint) -> ssl.SSLContext:
    """A context that must complete a handshake with ``endpoint``: its own versions and
    ciphers, verified against the session CA where the certificate profile verifies."""
    return endpoint.compatible_context()


def check_endpoint(endpoint: Endpoint, *, timeout: float = 3.0) -> str:
    """One readiness attempt; returns what was negotiated, raises on failure."""
    import socket

    if not endpoint.cell.tls:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as sock:
            plain_exchange(sock, endpoint.protocol)
        return "plaintext"
    result = tls_handshake(
        endpoint.host,
        endpoint.port,
        protocol=endpoint.protocol,
        implicit=endpoint.mode == "implicit",
        context=readiness_context(endpoint),
        server_hostname=endpoint.server_hostname,
        timeout=timeout,
    )
    return f"{result.version} {result.cipher}"


def wait_ready(
    endpoints: Sequence[Endpoint],
    *,
    timeout: float,
    logs: Callable[[], str] = lambda: "",
    alive: Callable[[], str | None] = lambda: None,
) -> None:
    """Wait until every endpoint passes :func:`check_endpoint`, or raise ``ServerStartError``.

    ``alive()`` returns why the server is gone (e.g. "container exited with 1"),
    so a crashed server fails fast instead of waiting for the deadline.
    """
    deadline = time.monotonic() + timeout
    started = time.monotonic()

    def wait_one(endpoint: Endpoint) -> str | None:
        last = "no attempt"
        while True:
            try:
                check_endpoint(endpoint, timeout=min(3.0, max(0.2, deadline - time.monotonic())))
                return None
            except (OSError, ssl.SSLError, Exception) as exc:  # any failure means: not ready yet
                last = f"{type(exc).__name__}: {exc}"
            gone = alive()
            if gone:
                return f"server stopped ({gone}); last attempt: {last}"
            if time.monotonic() >= deadline:
                return last
            time.sleep(POLL_INTERVAL)

    workers = min(32, max(1, len(endpoints)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailtls-ready") as pool:
        failures = [(e, err) for e, err in zip(endpoints, pool.map(wait_one, endpoints), strict=True) if err]
    if failures:
        waited = time.monotonic() - started
        lines = [f"  {e.id} at {e.host}:{e.port} ({e.protocol}, {e.mode}): {err}" for e, err in failures[:10]]
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise ServerStartError(
            f"{len(failures)} of {len(endpoints)} cells not ready after {waited:.1f} s "
            f"(tried: greeting, capabilities and the TLS handshake of each cell):\n"
            + "\n".join(lines)
            + more
            + "\nRaise the deadline with --mailtls-ready-timeout if the machine is slow; the server log follows.",
            log=logs(),
        )
