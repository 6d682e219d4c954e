"""Mail servers with a grid of TLS policies, the testcontainers way: for unittest, scripts, any framework.

>>> from pytest_mailtls.testcontainers import PostfixContainer
>>> with PostfixContainer(policy="modern", cert="valid") as postfix:
...     host, port = postfix.get_container_host_ip(), postfix.get_exposed_port(587)
...     smtp = smtplib.SMTP(host, port); smtp.starttls(context=postfix.client_context())

Each class follows the conventions of testcontainers-python modules: a context manager (or ``start()`` /
``stop()``), ``get_container_host_ip()``, ``get_exposed_port(port)`` and ``get_connection_url()``. Unlike
a one-port container, one server here serves many *cells* (a service in a TLS mode with a policy, a
certificate profile and an auth rule), each on its own port: narrow them with the same criteria as the
pytest marker (``service=``, ``mode=``, ``policy=``, ``cert=``, ``auth=``, ``id=``), read them all in
``endpoints``, or pick one with ``endpoint(cell_id)`` / ``find(**criteria)``. ``get_exposed_port(587)``
answers with the port of the first cell of that service (25 smtp, 587 submission, 465 smtps, 143 imap,
993 imaps, 110 pop3, 995 pop3s); ``ca_file`` is the CA every cell's certificate chains to.

Containers, the run's network and temp dirs (keys included) are removed on ``stop()``, at exit, on
SIGTERM, and by the next run if this process is killed (the same lifecycle as the pytest plugin).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .errors import MailTLSError
from .grid import Grid
from .manifest import Endpoint
from .pki import SessionPKI
from .policy import SERVICES
from .selection import resolve

__all__ = ["DovecotContainer", "JamesContainer", "MailTLSGrid", "PostfixContainer"]

_PORT_SERVICES = {service.default_port: name for name, service in SERVICES.items()}


class MailTLSGrid:
    """The cells of a selection of the matrix on one or more servers, started together.

    ``servers`` names servers of the registry (``["postfix", "dovecot"]``; default: every container
    server); ``select`` a selection of the matrix (default: its default); ``matrix`` a matrix file;
    the other keyword arguments narrow the cells like the ``mailtls`` marker.
    """

    def __init__(
        self,
        servers: Sequence[str] | None = None,
        *,
        select: str | None = None,
        matrix: str | Path | None = None,
        ready_timeout: float = 90.0,
        **criteria: str | Sequence[str],
    ) -> None:
        from .backends import docker_servers

        self.servers = list(servers) if servers is not None else list(docker_servers())
        cells = resolve(servers=self.servers, matrix=matrix, select=select, where=criteria, need_engine=False).cells
        if not cells:
            raise MailTLSError(f"no cell of {', '.join(self.servers)} matches {dict(criteria)} (selection {select})")
        self.cells = cells
        self.ready_timeout = ready_timeout
        self._grid: Grid | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self) -> MailTLSGrid:
        """Start every server and wait until each cell passed a real exchange (greeting, TLS handshake)."""
        if self._grid is None:
            grid = Grid(self.cells, ready_timeout=self.ready_timeout)
            try:
                grid.start()
            except BaseException:
                grid.stop()
                raise
            self._grid = grid
        return self

    def stop(self) -> None:
        """Remove the containers, the network and the temp dirs (keys included). Safe to call twice."""
        grid, self._grid = self._grid, None
        if grid is not None:
            grid.stop()

    def __enter__(self) -> MailTLSGrid:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def grid(self) -> Grid:
        if self._grid is None:
            raise MailTLSError(f"{type(self).__name__} is not started: use it in a with block or call start()")
        return self._grid

    # --- the cells ----------------------------------------------------------------------------
    @property
    def endpoints(self) -> list[Endpoint]:
        """Every served cell: host, port, mode, policy, certificate profile, auth, credentials, ``messages()``."""
        return self.grid.endpoints

    def endpoint(self, cell_id: str) -> Endpoint:
        return self.grid.endpoint(cell_id)

    def find(self, **criteria: str | Sequence[str]) -> list[Endpoint]:
        """The served cells that match, like the pytest marker: ``find(service="imaps", policy="modern")``."""
        return self.grid.find(**criteria)

    @property
    def pki(self) -> SessionPKI:
        return self.grid.pki

    @property
    def ca_file(self) -> str:
        """The CA (PEM) every cell's certificate chains to."""
        return str(self.grid.pki.ca_file)

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl.SSLContext`` that trusts :attr:`ca_file` and checks host names."""
        return self.grid.pki.client_context()

    # --- testcontainers conventions -----------------------------------------------------------
    def get_container_host_ip(self) -> str:
        """The address clients dial (the session recorder in front of every cell listens there)."""
        return self.endpoints[0].host

    def get_exposed_port(self, port: int | str) -> int:
        """The port of the first served cell of ``port``'s service (587 or "submission", 993 or "imaps")."""
        return self._first(port).port

    def get_connection_url(self, port: int | str | None = None) -> str:
        """``smtp://``, ``smtps://``, ``imap://``, ... URL of the first cell (of ``port``'s service)."""
        return (self._first(port) if port is not None else self.endpoints[0]).url

    def _first(self, port: int | str) -> Endpoint:
        service = _PORT_SERVICES.get(port, str(port)) if isinstance(port, int) else port
        found = [e for e in self.endpoints if e.service == service]
        if not found:
            served = sorted({e.service for e in self.endpoints})
            raise MailTLSError(f"no served cell of service {service!r} (port {port}); served: {', '.join(served)}")
        return found[0]

    def __repr__(self) -> str:
        state = f"{len(self.endpoints)} cells" if self._grid is not None else f"{len(self.cells)} cells, not started"
        return f"<{type(self).__name__} {','.join(self.servers)}: {state}>"


class _OneServer(MailTLSGrid):
    server: str = ""

    def __init__(
        self,
        *,
        select: str | None = None,
        matrix: str | Path | None = None,
        ready_timeout: float = 90.0,
        **criteria: str | Sequence[str],
    ) -> None:
        super().__init__([self.server], select=select, matrix=matrix, ready_timeout=ready_timeout, **criteria)


class PostfixContainer(_OneServer):
    """Real Postfix (smtp, submission, smtps) serving the selected cells from one container."""

    server = "postfix"


class DovecotContainer(_OneServer):
    """Real Dovecot (imap, imaps, pop3, pop3s) serving the selected cells from one container."""

    server = "dovecot"

    def deliver(self, message: Any, folder: str = "INBOX") -> Path:
        """Put ``message`` into the test user's ``folder`` (for IMAP/POP3 client tests)."""
        running: Any = self.grid.servers["dovecot"]
        path: Path = running.deliver(message, folder=folder)
        return path

    def mailbox_state(self, folder: str = "INBOX") -> Any:
        """Flags, UIDs and expunges of the test user's ``folder``, as the client left them."""
        running: Any = self.grid.servers["dovecot"]
        return running.mailbox_state(folder)


class JamesContainer(_OneServer):
    """Real Apache James (all seven services) serving the selected cells from one JVM."""

    server = "james"
