"""Reach a mail endpoint: the STARTTLS dance of each protocol, implicit TLS, stdlib clients.

Everything that talks to a server (readiness, tests, probe, client adapters)
goes through here, so each protocol's opening is written once. Clients dial
``endpoint.host`` but verify and send SNI for ``endpoint.server_hostname``, as
a real client configured with that host name would.
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import smtplib
import socket
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import MailTLSError

if TYPE_CHECKING:
    from .manifest import Endpoint

__all__ = [
    "ProtocolError",
    "HandshakeResult",
    "Greeting",
    "tls_handshake",
    "open_client",
    "plain_exchange",
    "MailClient",
]

MailClient = smtplib.SMTP | imaplib.IMAP4 | poplib.POP3


SSL_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_WARNINGS_LOCK = threading.Lock()


def set_version_range(ctx: ssl.SSLContext, minimum: str, maximum: str | None = None) -> None:
    """Set ``ctx``'s protocol range without the DeprecationWarning TLSv1/TLSv1.1 trigger.

    Reaching those versions is the point of legacy cells. ``warnings.catch_warnings``
    swaps process-wide state, so every use goes through one lock: probes run in threads.
    """
    for version in (minimum, maximum):
        if version is not None and version not in SSL_VERSIONS:
            raise ValueError(f"unknown TLS version {version!r}; allowed: {', '.join(SSL_VERSIONS)}")
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = SSL_VERSIONS[minimum]
        if maximum is not None:
            ctx.maximum_version = SSL_VERSIONS[maximum]


class ProtocolError(MailTLSError):
    """The server answered, but not as the protocol says (no greeting, STARTTLS refused...)."""


@dataclass
class Greeting:
    """What the server said in plaintext before TLS."""

    banner: str = ""
    capabilities: list[str] = field(default_factory=list)

    @property
    def starttls(self) -> bool:
        return any(c.upper() in ("STARTTLS", "STLS") for c in self.capabilities)

    def auth_mechanisms(self) -> list[str]:
        mechs: list[str] = []
        for cap in self.capabilities:
            upper = cap.upper()
            if upper.startswith("AUTH=") or upper.startswith("AUTH ") or upper.startswith("SASL "):
                mechs += upper[5:].split()
            elif upper == "USER":
                mechs.append("USER")
        return list(dict.fromkeys(mechs))


@dataclass
class HandshakeResult:
    version: str
    cipher: str
    peer_cert: bytes | None
    greeting: Greeting  # before TLS (STARTTLS cells) or the first words over TLS (implicit cells)
    capabilities_after: list[str] = field(default_factory=list)  # asked again over TLS
    chain: list[bytes] = field(default_factory=list)  # DER, as the server presented it (leaf first)


class _Lines:
    """Line reader on a raw socket that never reads past the server's reply (TLS starts right after)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf, self.first = sock, b"", True

    def line(self) -> str:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                if self.first and not self.buf:
                    raise ProtocolError(
                        "no greeting before the timeout: the port may speak implicit TLS "
                        "(a TLS server waits silently for the client's hello)"
                    ) from None
                raise
            self.buf += chunk
            if self.buf[:1] in (b"\x15", b"\x16"):  # a TLS alert or handshake record, not text
                raise ProtocolError("the server answered with TLS where plaintext was expected: it speaks implicit TLS")
            if not chunk:
                raise ProtocolError(
                    "the server closed the connection" + (f" after {self.buf[:80]!r}" if self.buf else "")
                )
            if len(self.buf) > 65536:
                raise ProtocolError("the server sent an over-long line: not a mail server?")
        self.first = False
        raw, _, self.buf = self.buf.partition(b"\n")
        return raw.rstrip(b"\r").decode("utf-8", "replace")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")


def _smtp_reply(lines: _Lines) -> tuple[int, list[str]]:
    out: list[str] = []
    while True:
        line = lines.line()
        if len(line) < 3 or not line[:3].isdigit():
            raise ProtocolError(f"not an SMTP reply: {line[:80]!r}")
        out.append(line[4:])
        if len(line) == 3 or line[3] != "-":
            return int(line[:3]), out


def plain_exchange(sock: socket.socket, protocol: str, *, starttls: bool = False) -> Greeting:
    """Read the greeting, ask for capabilities and, with ``starttls``, send the STARTTLS command.

    Raises ``ProtocolError`` when the server is not speaking ``protocol`` or refuses STARTTLS.
    """
    lines = _Lines(sock)
    greeting = Greeting()
    if protocol == "smtp":
        code, text = _smtp_reply(lines)
        if code != 220:
            raise ProtocolError(f"SMTP greeting {code} {' '.join(text)}")
        greeting.banner = text[0] if text else ""
        lines.send("EHLO mailtls.client")
        code, text = _smtp_reply(lines)
        if code != 250:
            raise ProtocolError(f"EHLO refused: {code} {' '.join(text)}")
        greeting.capabilities = text[1:]
        if starttls:
            if not greeting.starttls:
                raise ProtocolError("STARTTLS is not offered by this SMTP server")
            lines.send("STARTTLS")
            code, text = _smtp_reply(lines)
            if code != 220:
                raise ProtocolError(f"STARTTLS refused: {code} {' '.join(text)}")
    elif protocol == "imap":
        first = lines.line()
        if not first.startswith("* OK") and not first.startswith("* PREAUTH"):
            raise ProtocolError(f"not an IMAP greeting: {first[:80]!r}")
        greeting.banner = first
        lines.send("a1 CAPABILITY")
        while not (line := lines.line()).startswith("a1 "):
            if line.upper().startswith("* CAPABILITY"):
                greeting.capabilities = line.split()[2:]
        if starttls:
            lines.send("a2 STARTTLS")
            while not (line := lines.line()).startswith("a2 "):
                pass
            if not line.startswith("a2 OK"):
                raise ProtocolError(f"STARTTLS refused: {line}")
    elif protocol == "pop3":
        first = lines.line()
        if not first.startswith("+OK"):
            raise ProtocolError(f"not a POP3 greeting: {first[:80]!r}")
        greeting.banner = first
        lines.send("CAPA")
        if lines.line().startswith("+OK"):
            while (line := lines.line()) != ".":
                greeting.capabilities.append(line)
        if starttls:
            lines.send("STLS")
            line = lines.line()
            if not line.startswith("+OK"):
                raise ProtocolError(f"STLS refused: {line}")
    else:
        raise ValueError(f"unknown protocol {protocol!r}")
    return greeting


def tls_handshake(
    host: str,
    port: int,
    *,
    protocol: str,
    implicit: bool,
    context: ssl.SSLContext,
    server_hostname: str,
    timeout: float = 5.0,
) -> HandshakeResult:
    """Open a connection and complete a TLS handshake, implicit or after STARTTLS.

    Raises ``ssl.SSLError`` (incl. ``SSLCertVerificationError``) for handshake
    failures, ``ProtocolError`` when the plaintext part goes wrong, ``OSError``
    when nothing listens.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        greeting = Greeting() if implicit else plain_exchange(sock, protocol, starttls=True)
        with context.wrap_socket(sock, server_hostname=server_hostname) as tls:
            # A round trip over TLS: the greeting of implicit cells, the capabilities again after
            # STARTTLS. It also surfaces a TLS 1.3 client-certificate rejection, which arrives
            # only after the handshake.
            after = plain_exchange(tls, protocol) if implicit else _capabilities_over_tls(tls, protocol)  # type: ignore[arg-type]
            if implicit:
                greeting = after
            cipher = tls.cipher()
            return HandshakeResult(
                version=tls.version() or "",
                cipher=cipher[0] if cipher else "",
                peer_cert=tls.getpeercert(binary_form=True),
                greeting=greeting,
                capabilities_after=after.capabilities,
                chain=_presented_chain(tls),
            )


def _capabilities_over_tls(sock: socket.socket, protocol: str) -> Greeting:
    lines = _Lines(sock)
    out = Greeting()
    if protocol == "smtp":
        lines.send("EHLO mailtls.client")
        code, text = _smtp_reply(lines)
        if code != 250:
            raise ProtocolError(f"EHLO after STARTTLS refused: {code} {' '.join(text)}")
        out.capabilities = text[1:]
    elif protocol == "imap":
        lines.send("a3 CAPABILITY")
        while not (line := lines.line()).startswith("a3 "):
            if line.upper().startswith("* CAPABILITY"):
                out.capabilities = line.split()[2:]
        if not line.startswith("a3 OK"):
            raise ProtocolError(f"CAPABILITY after STARTTLS refused: {line}")
    else:
        lines.send("CAPA")
        first = lines.line()
        if not first.startswith("+OK"):
            raise ProtocolError(f"CAPA after STLS refused: {first}")
        while (line := lines.line()) != ".":
            out.capabilities.append(line)
    return out


def _presented_chain(tls: ssl.SSLSocket) -> list[bytes]:
    # Python 3.13 makes get_unverified_chain() public; 3.11/3.12 have it on the private _sslobj.
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is not None:
        try:
            certs = getter() or []
            return [c if isinstance(c, bytes) else c.public_bytes(ssl.ENCODING_DER) for c in certs]  # type: ignore[attr-defined]
        except (AttributeError, ValueError, ssl.SSLError):
            pass
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []


# --- stdlib clients ---------------------------------------------------------------


def open_client(
    endpoint: Endpoint,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    starttls: bool | None = None,
) -> Any:
    """A connected ``smtplib.SMTP``, ``imaplib.IMAP4`` or ``poplib.POP3`` for ``endpoint``.

    Implicit cells get TLS from the first byte; STARTTLS cells are upgraded
    unless ``starttls=False``; plain cells stay plain. ``context`` defaults to
    ``endpoint.client_context()``. Stdlib exceptions propagate unchanged.
    """
    ctx = context if context is not None else endpoint.client_context()
    implicit = endpoint.mode == "implicit"
    upgrade = starttls if starttls is not None else endpoint.mode in ("starttls", "starttls-required")
    proto, name, ip, port = endpoint.protocol, endpoint.server_hostname, endpoint.host, endpoint.port
    if proto == "smtp":
        # local_hostname: without it smtplib asks DNS for this machine's name (socket.getfqdn)
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(context=ctx, timeout=timeout, local_hostname="mailtls.client")
            if implicit
            else smtplib.SMTP(timeout=timeout, local_hostname="mailtls.client")
        )
        smtp._host = name  # type: ignore[attr-defined]  # SNI and verification use the name, the socket the IP
        try:
            smtp.connect(ip, port)
            if upgrade and not implicit:
                smtp.starttls(context=ctx)
            smtp.ehlo()
        except BaseException:
            with contextlib.suppress(OSError):
                smtp.close()
            raise
        return smtp
    if proto in _MAILBOX_CLIENTS:
        plain_cls, tls_cls, ctx_arg, upgrade_with, close_with = _MAILBOX_CLIENTS[proto]
        tls_kwargs: dict[str, Any] = {ctx_arg: ctx}
        client = _dialing(
            tls_cls if implicit else plain_cls, ip, name, port, timeout=timeout, **(tls_kwargs if implicit else {})
        )
        try:
            if upgrade and not implicit:
                getattr(client, upgrade_with)(**tls_kwargs)
        except BaseException:
            with contextlib.suppress(OSError):
                getattr(client, close_with)()
            raise
        return client
    raise ValueError(f"unknown protocol {proto!r}")


def _dialing(cls: type, ip: str, name: str, port: int, **kwargs: Any) -> Any:
    # The stdlib connects in __init__ using self.host for both the socket and SNI: set where to dial first.
    obj: Any = object.__new__(cls)
    obj._dial_host = ip
    obj.__init__(name, port, **kwargs)
    return obj


class _IMAP4(imaplib.IMAP4):
    _dial_host: str

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self._dial_host, self.port), timeout)


class _IMAP4_SSL(imaplib.IMAP4_SSL):
    _dial_host: str

    def _create_socket(self, timeout: float | None) -> socket.socket:
        # IMAP4_SSL calls IMAP4._create_socket directly (not super()), so dial here and wrap for the name.
        sock = socket.create_connection((self._dial_host, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class _POP3(poplib.POP3):
    _dial_host: str

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self._dial_host, self.port), timeout)


class _POP3_SSL(poplib.POP3_SSL):
    _dial_host: str
    context: ssl.SSLContext  # set by POP3_SSL.__init__; typeshed does not declare it

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._dial_host, self.port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self.host)


# imaplib and poplib differ only in names: (plain class, implicit-TLS class, the keyword that takes the
# SSLContext in both the constructor and the upgrade, the STARTTLS method, the close method).
_MAILBOX_CLIENTS: dict[str, tuple[type, type, str, str, str]] = {
    "imap": (_IMAP4, _IMAP4_SSL, "ssl_context", "starttls", "shutdown"),
    "pop3": (_POP3, _POP3_SSL, "context", "stls", "close"),
}
