"""What every backend provides: render and start servers for a list of cells.

Backends know their server and nothing of pytest; the plugin and the CLI know
pytest and the command line and nothing of any one server.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

from ..manifest import Endpoint
from ..pki import ClientCertFiles, SessionPKI
from ..policy import Cell

if TYPE_CHECKING:
    from ..diagnose import Rule
    from .stack import Peer

__all__ = ["Backend", "DeliveryLink", "RunningServer", "StartOptions", "Progress", "cell_endpoint", "no_progress"]

#: Progress callback: one human-readable line about long work ("building image ...").
Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    return None


@dataclass(frozen=True)
class StartOptions:
    """What a backend needs besides the cells."""

    pki: SessionPKI
    workdir: Path  # private temp dir for this server: configs, maildirs, logs
    username: str = "tester@mailtls.test"
    password: str = "mailtls-password"
    ready_timeout: float = 60.0
    progress: Progress = no_progress
    #: Set to cancel the start (Ctrl-C, a sibling's failure): waits end, the container is removed.
    cancel: threading.Event | None = None


def cell_endpoint(
    cell: Cell,
    options: StartOptions,
    *,
    port: int,
    mailbox: str,
    client: ClientCertFiles | None,
    extra: Mapping[str, object],
    host: str = "127.0.0.1",
) -> Endpoint:
    """How clients reach ``cell`` at ``host``:``port`` (127.0.0.1, or a sealed container's unix socket and
    port, which only the recorder and readiness checks dial, see :mod:`pytest_mailtls.upstream`): the session's CA and server name, the test user, the cell's host Maildir, and ``client``
    (the session's client certificate) where the cell wants mutual TLS."""
    own = client if cell.auth.client_cert else None
    return Endpoint(
        cell=cell,
        host=host,
        port=port,
        server_hostname=options.pki.server_hostname,
        ca_file=str(options.pki.ca_file),
        username=options.username,
        password=options.password,
        mailbox=mailbox,
        client_cert_file=str(own.cert_file) if own else None,
        client_key_file=str(own.key_file) if own else None,
        extra=dict(extra),
    )


class RunningServer(abc.ABC):
    """A started server (one container or one in-process server) serving many cells."""

    endpoints: list[Endpoint]

    @abc.abstractmethod
    def logs(self) -> str:
        """The server's log so far."""

    def cell_logs(self, cell_id: str, since: float | None = None) -> list[str]:
        """Log lines about one cell (written after the Unix time ``since``, if given); backends that can tell
        cells apart override this."""
        return self.logs().splitlines()

    def log_source(self, cell_id: str) -> tuple[str, Any] | None:
        """Where another process reads this cell's log lines: (container id, the cell's key in its log),
        read back with the backend's :meth:`Backend.cell_log_lines`; ``None`` for an in-process server."""
        return None

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop and remove everything started; safe to call twice."""

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class DeliveryLink:
    """A server that takes mail and SASL for another one, over unix sockets in a shared folder (the combined
    stack: Dovecot behind Postfix). The providing backend makes it in :meth:`Backend.link` and offers it to
    the other servers of its grid (:meth:`Backend.accept_delivery`); nobody looks a server up by name.

    ``sockets`` is the provider's host socket folder (``auth`` and ``lmtp`` in it); ``mailbox`` the address
    every message is delivered to (default: the test user's, from ``StartOptions``); ``started`` resolves
    once the provider serves (or fails) when both start side by side, and is ``None`` when it serves already.
    """

    sockets: Path
    started: Future[Any] | None = None
    mailbox: str | None = None


class Backend(abc.ABC):
    """One kind of server, declared by its module and found through :mod:`pytest_mailtls.backends`.

    ``name`` is its name in cell ids and settings, ``title`` its name in messages, ``services`` what it
    implements (``smtp``, ``submission``, ``smtps``, ``imap``, ``imaps``, ``pop3``, ``pop3s``),
    ``needs_docker`` whether it runs in a container. :meth:`log_rules` is its log vocabulary for the
    diagnosis, ``remedies`` how its configuration says three things a remedy may ask of the server:
    ``versions`` (allow TLS 1.2 and later), ``chain`` (send the full chain) and ``tls`` (turn TLS on).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    services: ClassVar[tuple[str, ...]]
    needs_docker: ClassVar[bool] = True
    remedies: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def log_rules(cls) -> tuple[Rule, ...]:
        """The diagnosis rules for this server's log lines (imported lazily: diagnosis is not always needed)."""
        return ()

    def unsupported(self, cell: Cell) -> str | None:
        """Why this backend cannot serve ``cell``, or ``None`` if it can."""
        return None

    def link(self, peers: Mapping[str, Peer]) -> None:
        """Before a grid starts: meet the other servers of it (``peers``, this one included, by name). A
        backend that provides something to others offers it here (:meth:`accept_delivery`); the default
        links nothing."""
        return None

    def accept_delivery(self, link: DeliveryLink, cells: Sequence[Cell]) -> bool:
        """Take ``link`` (another server that takes this one's mail and SASL); ``cells`` are this backend's
        cells in the grid. Return whether it will use it (default: no)."""
        return False

    def cell_log_lines(self, log: str, key: Any) -> list[str]:
        """The lines of this server's ``log`` about the cell marked by ``key`` (its log vocabulary)."""
        return []

    def image(self, *, progress: Progress = no_progress) -> str:
        """This backend's image tag, built first if missing.

        ``start()`` and ``mailtls images build`` both come here, so an image is always
        built the same way.
        """
        from .. import runtime
        from ..errors import MailTLSError

        if not self.needs_docker:
            raise MailTLSError(f"the {self.name} backend runs in-process: it has no image")

        return runtime.ensure_image(self.name, progress=progress)

    @abc.abstractmethod
    def start(self, cells: Sequence[Cell], options: StartOptions) -> RunningServer:
        """Start one server for all ``cells`` and wait until every port passed a real
        protocol exchange (greeting, capability, verified handshake). On failure,
        remove what was started and raise ``ServerStartError`` carrying the log."""
