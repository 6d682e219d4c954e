"""Readiness: every port passes a real protocol exchange, with a deadline.

A bare TCP connect or a log line proves nothing: docker-proxy accepts before
the server listens, and a server can listen with the wrong certificate. Each
cell must greet, answer EHLO/CAPABILITY/CAPA and complete its TLS handshake.

Every wait can be cancelled: a set ``cancel`` event (passed in, or the one :func:`cancel_scope` set for
this thread) ends it within one poll interval with ``StartCancelled``. The checks run in daemon threads,
so an interrupted process never waits for a connection attempt at exit.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from .connect import plain_exchange, tls_handshake
from .errors import ServerStartError
from .manifest import Endpoint
from .upstream import describe, dial

__all__ = ["cancel_scope", "check_endpoint", "current_cancel", "readiness_context", "wait_ready"]

POLL_INTERVAL = 0.05


_scope = threading.local()


@contextlib.contextmanager
def cancel_scope(cancel: threading.Event | None) -> Iterator[None]:
    """Within the block, waits in this thread that are given no ``cancel`` use this one."""
    previous = getattr(_scope, "cancel", None)
    _scope.cancel = cancel
    try:
        yield
    finally:
        _scope.cancel = previous


def current_cancel() -> threading.Event | None:
    """The cancel event :func:`cancel_scope` set for this thread, if any."""
    return getattr(_scope, "cancel", None)


def _cancelled(cancel: threading.Event | None) -> bool:
    from .runtime import _closing

    return _closing.is_set() or (cancel is not None and cancel.is_set())


def readiness_context(endpoint: Endpoint) -> ssl.SSLContext:
    """A context that must complete a handshake with ``endpoint``: its own versions and
    ciphers, verified against the session CA where the certificate profile verifies."""
    return endpoint.compatible_context()


def check_endpoint(endpoint: Endpoint, *, timeout: float = 3.0) -> str:
    """One readiness attempt; returns what was negotiated, raises on failure."""
    if not endpoint.cell.tls:
        with dial(endpoint.host, endpoint.port, timeout) as sock:
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
    cancel: threading.Event | None = None,
) -> None:
    """Wait until every endpoint passes :func:`check_endpoint`, or raise ``ServerStartError``.

    ``alive()`` returns why the server is gone (e.g. "container exited with 1"),
    so a crashed server fails fast instead of waiting for the deadline. Once ``cancel`` (default: the
    thread's :func:`cancel_scope`) is set, raises ``StartCancelled`` within one poll interval.
    """
    from .runtime import StartCancelled

    cancel = cancel if cancel is not None else current_cancel()
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    results: dict[int, str | None] = {}
    done = threading.Event()
    lock = threading.Lock()

    def wait_one(index: int, endpoint: Endpoint) -> None:
        last = "no attempt"
        outcome: str | None = None
        try:
            while not _cancelled(cancel):
                try:
                    check_endpoint(endpoint, timeout=min(3.0, max(0.2, deadline - time.monotonic())))
                    break
                except Exception as exc:  # any failure means: not ready yet
                    last = f"{type(exc).__name__}: {exc}"
                gone = alive()
                if gone:
                    outcome = f"server stopped ({gone}); last attempt: {last}"
                    break
                if time.monotonic() >= deadline:
                    outcome = last
                    break
                if cancel is not None:
                    cancel.wait(POLL_INTERVAL)
                else:
                    time.sleep(POLL_INTERVAL)
        except Exception as exc:  # alive() itself failed (the engine went away)
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            results[index] = outcome
            if len(results) == len(endpoints):
                done.set()

    # Daemon threads, at most 32 checks at a time: a cancelled start never keeps the process from exiting.
    pending = list(enumerate(endpoints))
    slots = threading.Semaphore(min(32, max(1, len(endpoints))))

    def run(index: int, endpoint: Endpoint) -> None:
        try:
            wait_one(index, endpoint)
        finally:
            slots.release()

    for index, endpoint in pending:
        while not slots.acquire(timeout=POLL_INTERVAL):
            if _cancelled(cancel):
                raise StartCancelled(f"readiness wait for {len(endpoints)} cells cancelled")
        threading.Thread(target=run, args=(index, endpoint), name="mailtls-ready", daemon=True).start()
    while not done.wait(POLL_INTERVAL) and endpoints:
        if _cancelled(cancel):
            raise StartCancelled(f"readiness wait for {len(endpoints)} cells cancelled")
    if _cancelled(cancel):
        raise StartCancelled(f"readiness wait for {len(endpoints)} cells cancelled")
    failures = [(e, results[i]) for i, e in enumerate(endpoints) if results.get(i)]
    if failures:
        waited = time.monotonic() - started
        lines = [f"  {e.id} at {describe(e.host, e.port)} ({e.protocol}, {e.mode}): {err}" for e, err in failures[:10]]
        more = f"\n  ... and {len(failures) - 10} more" if len(failures) > 10 else ""
        raise ServerStartError(
            f"{len(failures)} of {len(endpoints)} cells not ready after {waited:.1f} s "
            f"(tried: greeting, capabilities and the TLS handshake of each cell):\n"
            + "\n".join(lines)
            + more
            + "\nRaise the deadline with --mailtls-ready-timeout if the machine is slow; the server log follows.",
            log=logs(),
        )
