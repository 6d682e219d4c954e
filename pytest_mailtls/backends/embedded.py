"""The embedded backend: SMTP cells served in-process by aiosmtpd, no Docker.

One event-loop thread serves every cell, each on its own 127.0.0.1 port.
Policies are applied through ``ssl.SSLContext``: version range, the policy's
cipher string (with ``@SECLEVEL=0`` where legacy versions or weak certificates
need it), client-certificate verification for mutual TLS. Every message is
captured into a per-cell Maildir; connection events go to an in-memory log in
a server-log style.

Two limits of Python's ``ssl`` module shape what this backend serves:
TLS 1.3 cipher suites cannot be chosen (there is no ``set_ciphersuites``), so
policies that name ``ciphersuites`` are reported as unsupported; and TLSv1 and
TLSv1.1 only negotiate when the server's cipher string lowers OpenSSL 3's
security level to 0 (aio-libs/aiosmtpd#459: a ``minimum_version`` alone gives
"no suitable signature algorithm"), which :meth:`TLSPolicy.openssl_ciphers`
does for every legacy policy.

Two asyncio gaps are closed here so clients meet what Postfix gives them: a
failed handshake sends OpenSSL's alert before the socket closes (asyncio drops
it), and DHE ciphers work (Python never enables OpenSSL's DH groups; the
RFC 7919 ffdhe2048 group is loaded, or the policy's own ``dh_bits`` group).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import contextlib
import datetime as dt
import functools
import itertools
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException, syntax

from .. import capture
from ..connect import set_version_range
from ..errors import ServerStartError
from ..manifest import Endpoint
from ..policy import Cell, CertProfile, Mode, Protocol
from ..readiness import wait_ready
from ..tls import dh_params_pem

if TYPE_CHECKING:
    from ..diagnose import Rule

from .base import Backend, RunningServer, StartOptions, cell_endpoint

__all__ = ["EmbeddedBackend", "EmbeddedServer", "server_context"]

#: SASL mechanisms aiosmtpd implements itself.
BUILTIN_MECHANISMS = ("PLAIN", "LOGIN")
#: Certificates OpenSSL 3 refuses to even load above security level 0.
_HANDSHAKE_TIMEOUT = 15
#: The DH group of DHE suites when a policy names none: RFC 7919 ffdhe2048 (:data:`DH_GROUPS`). Python never enables
#: OpenSSL's automatic DH groups, so without one a server offers no DHE cipher, unlike Postfix.
_DEFAULT_DH_BITS = 2048
_START_TIMEOUT = 10.0


def server_context(
    *,
    min_version: str,
    max_version: str,
    ciphers: str,
    cert_file: str | os.PathLike[str],
    key_file: str | os.PathLike[str],
    client_ca_file: str | os.PathLike[str] | None = None,
    dh_params_file: str | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """A server-side context for one policy.

    ``ciphers`` is set before the certificate is loaded: OpenSSL 3 checks the
    key size and signature of the certificate against the security level at
    load time, so weak certificates need ``@SECLEVEL=0`` in it. ``dh_params_file``
    enables the DHE ciphers of the list.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    set_version_range(ctx, min_version, max_version)  # without the TLSv1/1.1 deprecation warnings
    ctx.set_ciphers(ciphers)
    ctx.load_cert_chain(str(cert_file), str(key_file))
    if dh_params_file is not None:
        ctx.load_dh_params(str(dh_params_file))
    if client_ca_file is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(str(client_ca_file))
    return ctx


def _cipher_string(cell_ciphers: str, cert: CertProfile) -> str:
    if cert.fault.max_seclevel is not None and "@SECLEVEL" not in cell_ciphers:
        return cell_ciphers + ":@SECLEVEL=0"
    return cell_ciphers


def ssl_reason(exc: BaseException | None) -> str:
    """The OpenSSL reason of a failed handshake, without Python's source location."""
    if exc is None:
        return "unknown error"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        text = text.split(" (_ssl.c:")[0]
        return text if text.startswith("[") else f"[{exc.library or 'SSL'}: {exc.reason}] {text}"
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        return "handshake timed out"
    if isinstance(exc, ConnectionError):
        return f"connection lost during the handshake ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}"


_SEQUENCE = itertools.count()  # orders lines of all cells; next() on a count is atomic in CPython


class _CellLog:
    """Server-log-style lines about one cell, safe to read from any thread."""

    def __init__(self, cell_id: str, service: str) -> None:
        self.cell_id, self.service = cell_id, service
        self._lines: list[tuple[int, str]] = []
        self._times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, message: str) -> None:
        now = dt.datetime.now()
        stamp = now.isoformat(timespec="milliseconds")
        with self._lock:
            self._lines.append((next(_SEQUENCE), f"{stamp} embedded/{self.service}[{self.cell_id}]: {message}"))
            self._times.append(now.timestamp())

    def entries(self) -> list[tuple[int, str]]:
        with self._lock:
            return list(self._lines)

    def lines(self, since: float | None = None) -> list[str]:
        with self._lock:
            pairs = list(zip(self._times, self._lines, strict=True))
        return [line for when, (_, line) in pairs if since is None or when > since]


class _Cell:
    """Everything one served cell needs at connection time."""

    def __init__(self, endpoint: Endpoint, tls_context: ssl.SSLContext | None, log: _CellLog) -> None:
        self.endpoint = endpoint
        self.cell = endpoint.cell
        self.tls_context = tls_context
        self.log = log
        self.maildir = Path(endpoint.mailbox or "")
        self.counter = itertools.count()
        self.mechanisms = tuple(m for m in self.cell.auth.mechanisms if m in BUILTIN_MECHANISMS)

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode(errors="replace") == self.endpoint.username
            and auth_data.password.decode(errors="replace") == self.endpoint.password
        )
        peer = _peer(session.peer)
        if ok:
            self.log(f"AUTH {mechanism} succeeded for {self.endpoint.username} from {peer}")
        else:
            login = auth_data.login.decode(errors="replace") if isinstance(auth_data, LoginPassword) else "?"
            self.log(f"AUTH {mechanism} failed for {login!r} from {peer}: authentication failed")
        return AuthResult(success=ok, handled=False)

    def deliver(self, session: Session, envelope: Envelope, tls: str | None) -> Path:
        """Write the message into the cell's Maildir, attributed to its envelope recipients."""
        now = dt.datetime.now(dt.UTC)
        proto = "ESMTP" + ("S" if tls else "") + ("A" if session.authenticated else "")
        using = f"\n\t(using {tls})" if tls else ""
        received = (
            f"Received: from {session.host_name or 'unknown'} ({_peer(session.peer)}){using}\n"
            f"\tby {self.endpoint.server_hostname} (pytest-mailtls embedded {self.cell.id}) with {proto}\n"
            f"\tfor <{', '.join(envelope.rcpt_tos)}>; {now.strftime('%a, %d %b %Y %H:%M:%S +0000')}\n"
        )
        head = f"Return-Path: <{envelope.mail_from or ''}>\n"
        head += "".join(f"X-Original-To: {rcpt}\n" for rcpt in envelope.rcpt_tos)
        body = envelope.original_content or b""
        data = (head + received).encode() + body.replace(b"\r\n", b"\n")
        # Maildir delivery: write under tmp/, then rename into new/ so readers never see half a message.
        name = f"{time.time():.6f}.P{os.getpid()}Q{next(self.counter)}.mailtls-embedded"
        tmp, final = self.maildir / "tmp" / name, self.maildir / "new" / name
        tmp.write_bytes(data)
        os.replace(tmp, final)
        return final


class _Handler:
    """aiosmtpd handler: EHLO trimming, delivery, and quiet handshake failures."""

    def __init__(self, cell: _Cell) -> None:
        self.cell = cell

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if not self.cell.mechanisms:
            # aiosmtpd would advertise a bare "AUTH" when every mechanism is excluded.
            responses = [r for r in responses if not r[4:].upper().startswith("AUTH")]
        return responses

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        tls = _tls_summary(server.transport)
        path = self.cell.deliver(session, envelope, tls)
        self.cell.log(
            f"message accepted from={envelope.mail_from} to={','.join(envelope.rcpt_tos)} "
            f"size={len(envelope.original_content or b'')} tls={tls or 'none'} file={path.name}"
        )
        return "250 2.0.0 Ok: queued"

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException):
            return "454 4.7.0 TLS handshake failed"  # already logged by smtp_STARTTLS; connection closes
        self.cell.log(f"error: {type(error).__name__}: {error}")
        return "451 4.3.0 Internal server error"


class _Session(Session):
    """aiosmtpd's session without the deprecation log line aiosmtpd itself triggers on every AUTH."""

    @property  # type: ignore[override]
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class _CellSMTP(SMTP):
    """aiosmtpd's SMTP with the cell's policies and a log of what it refused."""

    def __init__(self, cell: _Cell, *, loop: asyncio.AbstractEventLoop, implicit: bool) -> None:
        auth = cell.cell.auth
        excluded = [m for m in BUILTIN_MECHANISMS if m not in cell.mechanisms]
        super().__init__(
            _Handler(cell),
            hostname=cell.endpoint.server_hostname,  # never socket.getfqdn(): no DNS
            ident="ESMTP pytest-mailtls embedded",
            enable_SMTPUTF8=True,
            authenticator=cell.authenticate,
            auth_exclude_mechanism=excluded,
            loop=loop,
        )
        # Set after __init__: aiosmtpd warns about these combinations (required AUTH without TLS,
        # CERT_REQUIRED contexts) on every connection, and here they are deliberate cell policies.
        self._auth_required = auth.required
        # On an implicit port TLS is up before the first byte, but aiosmtpd only knows STARTTLS.
        self._auth_require_tls = auth.tls_only and not implicit
        if not implicit:
            self.tls_context = cell.tls_context
            self.require_starttls = cell.tls_context is not None and cell.cell.mode is Mode.STARTTLS_REQUIRED
        self._cell = cell
        self._last_command = ""

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        reader_readuntil, reader_readline = reader.readuntil, reader.readline
        in_challenge = False

        async def readuntil(separator: bytes = b"\n") -> bytes:
            line = await reader_readuntil(separator)
            if not in_challenge:  # command lines only: AUTH challenges arrive through readline()
                verb = line.split(b" ", 1)[0].strip().upper().decode("ascii", "replace")
                self._last_command = verb if verb in self._smtp_methods else "(unknown command)"
            return line

        async def readline() -> bytes:
            nonlocal in_challenge
            in_challenge = True  # base64 credentials: never remembered, never logged
            try:
                return await reader_readline()
            finally:
                in_challenge = False

        reader.readuntil = readuntil  # type: ignore[method-assign,assignment]
        reader.readline = readline  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:
            self._cell.log(f"connect from {_peer(transport.get_extra_info('peername'))}")

    def connection_lost(self, error: Exception | None) -> None:
        peer = _peer(self.session.peer) if self.session else "?"
        self._cell.log(f"disconnect from {peer}")
        super().connection_lost(error)

    async def push(self, status: Any) -> None:
        text = status.decode(errors="replace") if isinstance(status, bytes) else str(status)
        if text[:1] in ("4", "5") and self.session is not None:
            self._cell.log(f"refused {self._last_command or '(greeting)'} from {_peer(self.session.peer)}: {text}")
        await super().push(status)

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str) -> None:
        # aiosmtpd 1.4's own STARTTLS, with the alert-sending, logging TLS layer in its place.
        if arg:
            await self.push("501 Syntax: STARTTLS")
            return
        if not self.tls_context:
            await self.push("454 TLS not available")
            return
        await self.push("220 Ready to start TLS")
        assert self.transport is not None
        layer = _TLSLayer(self.loop, self, self._cell, " after STARTTLS")
        layer._peer_text = _peer(self.transport.get_extra_info("peername"))
        self._tls_protocol = layer
        self._original_transport = self.transport
        self._original_transport.set_protocol(layer)
        self.transport = layer._app_transport
        layer.connection_made(self._original_transport)
        try:
            await layer.waiter
        except asyncio.CancelledError:
            raise
        except Exception as error:
            raise TLSSetupException() from error


class _TLSLayer(sslproto.SSLProtocol):
    """asyncio's TLS protocol, fixed to send OpenSSL's alert when a handshake fails, and logging why.

    asyncio closes the socket without writing the alert OpenSSL queued (a
    "protocol version" or "handshake failure"), so clients would see a bare EOF
    where real servers send an alert; flushing it first keeps client errors
    the same as against Postfix. ``create_server(ssl=...)`` also drops the
    failure silently (it is an ``OSError``, logged in debug mode only); the
    waiter callback keeps the OpenSSL reason for the cell's log.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, app: asyncio.BaseProtocol, cell: _Cell, what: str) -> None:
        assert cell.tls_context is not None
        self._cell, self._what, self._peer_text = cell, what, "?"
        self.waiter: asyncio.Future[None] = loop.create_future()
        self.waiter.add_done_callback(self._handshake_done)
        super().__init__(
            loop, app, cell.tls_context, self.waiter, server_side=True, ssl_handshake_timeout=_HANDSHAKE_TIMEOUT
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        self._peer_text = _peer(transport.get_extra_info("peername"))
        super().connection_made(transport)  # type: ignore[arg-type]

    def _on_handshake_complete(self, handshake_exc: BaseException | None) -> None:
        if handshake_exc is not None:
            with contextlib.suppress(Exception):
                self._process_outgoing()  # type: ignore[attr-defined]  # the alert, before the socket closes
        super()._on_handshake_complete(handshake_exc)  # type: ignore[misc]

    def _handshake_done(self, waiter: asyncio.Future[None]) -> None:
        exc = None if waiter.cancelled() else waiter.exception()  # retrieving it keeps asyncio quiet
        if exc is not None:
            self._cell.log(f"SSL_accept error from {self._peer_text}{self._what}: {ssl_reason(exc)}")
        else:
            self._cell.log(
                f"{'TLS connection' if not self._what else 'STARTTLS'} from {self._peer_text}: "
                f"{_tls_summary(self._app_transport)}"
            )


def _dh_params(workdir: Path, bits: int | None) -> Path:
    """The PEM file of the policy's DH group (``dh_bits``), or of ffdhe2048 when it names none."""
    bits = _DEFAULT_DH_BITS if bits is None else bits
    path = workdir / f"dh{bits}.pem"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        path.write_text(dh_params_pem(bits))
    return path


def _tls_summary(transport: asyncio.BaseTransport | None) -> str | None:
    sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
    if sslobj is None:
        return None
    cipher = sslobj.cipher()
    return f"{sslobj.version()} with cipher {cipher[0] if cipher else '?'}"


def _peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


class _LoopThread:
    """One asyncio loop in a daemon thread, for every cell of one server."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="mailtls-embedded", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, coro: Any, timeout: float = _START_TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


class EmbeddedServer(RunningServer):
    """Every embedded cell of one start: one loop thread, one listening socket per cell."""

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self._cells: dict[str, _Cell] = {}
        self._servers: list[asyncio.base_events.Server] = []
        self._sessions: weakref.WeakSet[_CellSMTP] = weakref.WeakSet()
        self._thread = _LoopThread()
        self._stopped = False
        self._lock = threading.Lock()

    def _serve(self, cell: _Cell) -> int:
        loop = self._thread.loop
        implicit = cell.cell.mode is Mode.IMPLICIT

        def factory() -> asyncio.BaseProtocol:
            smtp = _CellSMTP(cell, loop=loop, implicit=implicit)
            protocol: asyncio.BaseProtocol = _TLSLayer(loop, smtp, cell, "") if implicit else smtp
            self._sessions.add(smtp)
            return protocol

        async def listen() -> asyncio.base_events.Server:
            return await loop.create_server(factory, "127.0.0.1", 0, family=socket.AF_INET, reuse_address=True)

        server = self._thread.run(listen())
        self._servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        cell.log(
            f"listening on 127.0.0.1:{port} ({cell.cell.mode}, {cell.cell.policy.name if cell.cell.policy else 'no TLS'})"
        )
        return port

    def logs(self) -> str:
        """Every cell's log lines, in time order."""
        entries = sorted(entry for cell in self._cells.values() for entry in cell.log.entries())
        return "".join(line + "\n" for _, line in entries)

    def cell_logs(self, cell_id: str, since: float | None = None) -> list[str]:
        """Log lines about one cell (connections, handshake failures, refusals, deliveries), after ``since``."""
        cell = self._cells.get(cell_id)
        return cell.log.lines(since) if cell is not None else []

    def stop(self) -> None:
        """Close every listener and open session, then stop the loop thread. Idempotent."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True

        async def close_all() -> None:
            for server in self._servers:
                server.close()
            for session in list(self._sessions):
                if session.transport is not None:
                    session.transport.abort()  # type: ignore[attr-defined]
            for server in self._servers:
                await server.wait_closed()
            # Let the cancelled session tasks finish, so none is destroyed pending when the loop closes.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2)

        try:
            if self._thread.loop.is_running():
                self._thread.run(close_all())
        except Exception:  # teardown is best effort: the loop stops below either way
            pass
        finally:
            self._thread.stop()


@functools.cache
def _log_rules() -> tuple[Rule, ...]:
    """embedded (aiosmtpd)'s log vocabulary for the diagnosis: what its lines about a failed connection mean."""
    from ..diagnose import OPENSSL_SERVER, reply_code, rule

    return (
        rule(reply_code("535") + r"|Authentication credentials invalid|authentication failed", "auth-failed", weight=5),
        rule(rf"(?:{reply_code('530')}).*STARTTLS|Must issue a STARTTLS command first", "starttls-required", weight=5),
        rule(r"command \"?\\x16|\\x16\\x03|bad syntax.*\\x16", "wrong-tls-mode"),
        *OPENSSL_SERVER,
    )


class EmbeddedBackend(Backend):
    """SMTP cells in-process on aiosmtpd: no Docker, starts in milliseconds."""

    name = "embedded"
    needs_docker = False
    title = "embedded (aiosmtpd)"
    services = ("smtp", "submission", "smtps")
    remedies = {
        "versions": "a TLSPolicy with min_version TLSv1.2",
        "chain": "load_cert_chain with a file holding leaf and intermediates",
        "tls": "a STARTTLS or implicit mode",
    }

    @classmethod
    def log_rules(cls) -> tuple[Rule, ...]:
        return _log_rules()

    def unsupported(self, cell: Cell) -> str | None:
        if cell.server != self.name:
            return f"cell {cell.id} belongs to the {cell.server} server, not to embedded"
        if cell.protocol is not Protocol.SMTP:
            return "the embedded backend speaks SMTP only (aiosmtpd); IMAP and POP3 cells need dovecot or james"
        if cell.policy is not None and cell.policy.ciphersuites is not None:
            return (
                "Python's ssl module cannot choose TLS 1.3 cipher suites (no set_ciphersuites); "
                "serve this policy with postfix or james"
            )
        extra = [m for m in cell.auth.mechanisms if m not in BUILTIN_MECHANISMS]
        if extra:
            return f"aiosmtpd implements only {', '.join(BUILTIN_MECHANISMS)}; not {', '.join(extra)}"
        return None

    def start(self, cells: Sequence[Cell], options: StartOptions) -> EmbeddedServer:
        """Serve ``cells`` (each on its own 127.0.0.1 port) and wait until each answers for real."""
        for cell in cells:
            why = self.unsupported(cell)
            if why:
                raise ServerStartError(f"{cell.id}: {why}")
        server = EmbeddedServer()
        try:
            started = time.monotonic()
            for cell in cells:
                server.endpoints.append(self._start_cell(server, cell, options))
            options.progress(f"{len(cells)} cells listening after {time.monotonic() - started:.3f} s")
            wait_ready(server.endpoints, timeout=options.ready_timeout, logs=server.logs)
        except BaseException as exc:
            server.stop()
            if isinstance(exc, ServerStartError) or not isinstance(exc, Exception):
                raise
            raise ServerStartError(f"the embedded server could not start: {exc}", log=server.logs()) from exc
        return server

    def _start_cell(self, server: EmbeddedServer, cell: Cell, options: StartOptions) -> Endpoint:
        pki = options.pki
        log = _CellLog(cell.id, cell.service.name)
        tls_context = None
        client_files = None
        if cell.tls:
            assert cell.policy is not None and cell.cert is not None
            files = pki.server_files(cell.cert)
            tls_context = server_context(
                min_version=cell.policy.min_version,
                max_version=cell.policy.max_version,
                ciphers=_cipher_string(cell.policy.openssl_ciphers(), cell.cert),
                cert_file=files.cert_file,
                key_file=files.key_file,
                client_ca_file=pki.client_ca_file if cell.auth.client_cert else None,
                dh_params_file=_dh_params(Path(options.workdir), cell.policy.dh_bits),
            )
            if cell.auth.client_cert:
                client_files = pki.client_files()
        mailbox = capture.ensure_maildir(Path(options.workdir) / "maildirs" / cell.id, mode=0o700)
        endpoint = cell_endpoint(
            cell, options, port=0, mailbox=str(mailbox), client=client_files, extra={"backend": "embedded"}
        )
        state = _Cell(endpoint, tls_context, log)
        server._cells[cell.id] = state
        port = server._serve(state)
        endpoint = replace(endpoint, port=port)
        state.endpoint = endpoint
        return endpoint
