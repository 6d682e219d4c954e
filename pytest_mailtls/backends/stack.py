"""The mail flow: Postfix in front, Dovecot behind, as a production stack runs them.

Postfix answers SMTP AUTH through Dovecot's auth socket and hands every accepted message to Dovecot's LMTP
socket for the test user, so a test sends over SMTP (any Postfix cell) and reads the message back over
IMAP or POP3 (any Dovecot cell) with the manifest's credentials.

Backends of one grid learn about each other before anything starts: :func:`link_backends` gives every
backend the whole plan (each server's backend, cells, work dir and a future that resolves when that server
is ready). Dovecot offers a :class:`~.base.DeliveryLink` to the others; a Postfix takes it
(``accept_delivery``), and Dovecot then offers that Postfix's SASL mechanisms too; Postfix mounts
Dovecot's socket folder and waits for the sockets, so both containers start side by side. No backend
names another. :func:`start_stack` does the same without a grid.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..manifest import Endpoint
from ..policy import Cell
from .base import Backend, RunningServer, StartOptions

if TYPE_CHECKING:
    from .dovecot import DovecotServer
    from .postfix import PostfixServer

__all__ = ["MailStack", "Peer", "link_backends", "start_stack"]


@dataclass(frozen=True)
class Peer:
    """One server of a grid as the other backends see it before anything starts."""

    name: str
    backend: Backend
    cells: Sequence[Cell]
    workdir: Path  # the ``StartOptions.workdir`` it will get
    #: Resolves with the server's ``RunningServer`` once it is ready, or with its start error.
    started: Future[RunningServer] = field(default_factory=Future)

    def resolve(self, server: RunningServer | None = None, error: BaseException | None = None) -> None:
        """Record how the start ended (once; later calls are ignored)."""
        if self.started.done():
            return
        if error is not None:
            self.started.set_exception(error)
        else:
            self.started.set_result(server)  # type: ignore[arg-type]


def link_backends(plans: Mapping[str, tuple[Backend, Sequence[Cell], Path]]) -> dict[str, Peer]:
    """Introduce the backends of one grid to each other; return the peers whose ``started`` the caller
    must resolve (:meth:`Peer.resolve`) when each start ends, success or failure.

    ``plans`` maps server name -> (backend, its cells, its work dir). Each backend's
    :meth:`~.base.Backend.link` receives every peer, its own included; a provider (Dovecot) offers a
    :class:`~.base.DeliveryLink` that others take with :meth:`~.base.Backend.accept_delivery`.
    """
    peers = {name: Peer(name, backend, list(cells), Path(workdir)) for name, (backend, cells, workdir) in plans.items()}
    for peer in peers.values():
        peer.backend.link(peers)
    return peers


class MailStack(RunningServer):
    """A running Postfix + Dovecot pair: every message Postfix accepts lands in the Dovecot user's INBOX.

    ``endpoints`` lists the Postfix cells, then the Dovecot cells; ``postfix``/``dovecot`` are the two
    servers (``dovecot.deliver()``, ``dovecot.mailbox_state()``, ``postfix.cell_logs()`` ...).
    """

    def __init__(self, postfix: PostfixServer, dovecot: DovecotServer, *, workdir: Path) -> None:
        self.postfix = postfix
        self.dovecot = dovecot
        self.workdir = workdir
        self.endpoints = [*postfix.endpoints, *dovecot.endpoints]

    def endpoint(self, cell_id: str) -> Endpoint:
        """The endpoint of one cell, Postfix's or Dovecot's."""
        for endpoint in self.endpoints:
            if endpoint.id == cell_id:
                return endpoint
        raise KeyError(f"no cell {cell_id!r} in this stack ({len(self.endpoints)} cells)")

    @property
    def maildir(self) -> Path:
        """Host path of the test user's INBOX (every Dovecot endpoint's ``mailbox``)."""
        return self.dovecot.maildir

    def logs(self) -> str:
        """Both servers' logs, Postfix first."""
        return f"--- postfix ---\n{self.postfix.logs()}\n--- dovecot ---\n{self.dovecot.logs()}"

    def stop(self) -> None:
        """Remove both containers, side by side (the engine's port teardown dominates); safe to call twice.
        The mail folders stay in ``workdir``. Raises the first error after trying both."""
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(server.stop) for server in (self.postfix, self.dovecot)]
        for future in futures:
            future.result()


def start_stack(
    postfix_cells: Sequence[Cell],
    dovecot_cells: Sequence[Cell],
    options: StartOptions,
) -> MailStack:
    """Start Postfix for ``postfix_cells`` and Dovecot for ``dovecot_cells`` as one stack, side by side.

    Both get ``options`` (same PKI, user and password), each in its own folder under ``options.workdir``.
    Returns once every port of both passed a real exchange; on any failure both are stopped and the
    first error is raised (the Dovecot's when both fail: the Postfix then failed waiting for it).
    """
    from .dovecot import DovecotBackend, DovecotServer
    from .postfix import PostfixBackend, PostfixServer

    if not postfix_cells or not dovecot_cells:
        raise ValueError("a mail stack needs at least one Postfix cell and one Dovecot cell")
    root = Path(options.workdir)
    plans: dict[str, tuple[Backend, Sequence[Cell], Path]] = {
        "dovecot": (DovecotBackend(), dovecot_cells, root / "dovecot"),
        "postfix": (PostfixBackend(), postfix_cells, root / "postfix"),
    }
    peers = link_backends(plans)

    def start(name: str) -> RunningServer:
        peer = peers[name]
        peer.workdir.mkdir(parents=True, exist_ok=True)
        try:
            server = peer.backend.start(peer.cells, replace(options, workdir=peer.workdir))
        except BaseException as exc:
            peer.resolve(error=exc)
            raise
        peer.resolve(server)
        return server

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(start, name) for name in plans}
    servers = {name: f.result() for name, f in futures.items() if f.exception() is None}
    errors = [f.exception() for f in futures.values() if f.exception() is not None]
    if errors:
        for server in servers.values():
            try:
                server.stop()
            except Exception as exc:  # the start error matters more
                options.progress(f"warning: could not stop a server cleanly: {exc}")
        first = errors[0]
        assert first is not None
        raise first
    options.progress(f"mail stack: Postfix and Dovecot ready in {time.monotonic() - started:.2f} s")
    postfix, dovecot = servers["postfix"], servers["dovecot"]
    assert isinstance(postfix, PostfixServer) and isinstance(dovecot, DovecotServer)
    return MailStack(postfix, dovecot, workdir=root)
