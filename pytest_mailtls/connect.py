"""Reach a mail endpoint: the STARTTLS dance of each protocol and implicit TLS (the stdlib clients: ``stdclients``).

Everything that talks to a server (readiness, tests, probe, client adapters)
goes through here, so each protocol's opening is written once. Clients dial
``endpoint.host`` but verify and send SNI for ``endpoint.server_hostname``, as
a real client configured with that host name would.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .errors import MailTLSError
from .tls import presented_chain, set_version_range
from .upstream import dial

__all__ = [
    "ProtocolError",
    "ImplicitTLSError",
    "NoGreetingError",
    "WrongProtocolError",
    "HandshakeResult",
    "Greeting",
    "Lines",
    "greet",
    "capabilities",
    "starttls",
    "auth_mechanisms",
    "guess_protocol",
    "tls_handshake",
    "plain_exchange",
    "set_version_range",
]

#: The EHLO name this project's own connections give (the probe names itself: see ``probe.py``).
CLIENT_NAME = "mailtls.client"


class ProtocolError(MailTLSError):
    """The server answered, but not as the protocol says (no greeting, STARTTLS refused...)."""


class ImplicitTLSError(ProtocolError):
    """TLS bytes where a plaintext greeting was expected: the port speaks implicit TLS."""


class NoGreetingError(ProtocolError):
    """Silence where a greeting was expected (an implicit-TLS port, or no mail server)."""


class WrongProtocolError(ProtocolError):
    """A greeting, but not of the protocol asked for; ``greeting`` is the line the server sent."""

    def __init__(self, message: str, greeting: str) -> None:
        super().__init__(message)
        self.greeting = greeting


def auth_mechanisms(capabilities: Iterable[str], *, user: bool = False) -> list[str]:
    """The SASL mechanisms in SMTP ``AUTH``/``AUTH=``, IMAP ``AUTH=`` and POP3 ``SASL`` capabilities.

    ``user``: also list POP3's ``USER`` (a login, not a SASL mechanism).
    """
    mechs: list[str] = []
    for cap in capabilities:
        upper = cap.upper()
        if upper.startswith(("AUTH=", "AUTH ", "SASL ")):
            mechs += upper[5:].split()
        elif user and upper == "USER":
            mechs.append("USER")
    return list(dict.fromkeys(mechs))


@dataclass
class Greeting:
    """What the server said in plaintext before TLS."""

    banner: str = ""
    capabilities: list[str] = field(default_factory=list)

    @property
    def starttls(self) -> bool:
        return any(c.upper() in ("STARTTLS", "STLS") for c in self.capabilities)

    def auth_mechanisms(self) -> list[str]:
        return auth_mechanisms(self.capabilities, user=True)


@dataclass
class HandshakeResult:
    version: str
    cipher: str
    peer_cert: bytes | None
    greeting: Greeting  # before TLS (STARTTLS cells) or the first words over TLS (implicit cells)
    capabilities_after: list[str] = field(default_factory=list)  # asked again over TLS
    chain: list[bytes] = field(default_factory=list)  # DER, as the server presented it (leaf first)


class Lines:
    """CRLF lines over a socket (plain or TLS) that never reads past the server's reply: TLS may start
    right after it. The first line tells a TLS port (:class:`ImplicitTLSError`) and silence
    (:class:`NoGreetingError`) from a greeting."""

    def __init__(self, sock: socket.socket | ssl.SSLSocket) -> None:
        self.sock, self.buf, self.first = sock, b"", True

    def line(self) -> str:
        while b"\n" not in self.buf:
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                if self.first and not self.buf:
                    raise NoGreetingError(
                        "no greeting before the timeout: the port may speak implicit TLS "
                        "(a TLS server waits silently for the client's hello)"
                    ) from None
                raise
            self.buf += chunk
            if self.first and self.buf[:1] in (b"\x15", b"\x16"):  # a TLS alert or handshake record, not text
                raise ImplicitTLSError(
                    "the server answered with TLS where plaintext was expected: it speaks implicit TLS"
                )
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

    def smtp(self, command: str | None = None) -> tuple[int, list[str]]:
        """Send ``command`` (if any) and read one SMTP reply: (code, text of each line)."""
        if command is not None:
            self.send(command)
        out: list[str] = []
        while True:
            line = self.line()
            if len(line) < 3 or not line[:3].isdigit():
                raise ProtocolError(f"not an SMTP reply: {line[:80]!r}")
            out.append(line[4:])
            if len(line) == 3 or line[3] != "-":
                return int(line[:3]), out

    def imap(self, tag: str, command: str) -> tuple[str, list[str]]:
        """Send a tagged IMAP command: (the tagged status after the tag, the untagged lines)."""
        self.send(f"{tag} {command}")
        untagged: list[str] = []
        while True:
            line = self.line()
            if line.startswith(tag + " "):
                return line[len(tag) + 1 :], untagged
            untagged.append(line)


def guess_protocol(greeting: str) -> str | None:
    """The mail protocol a greeting line belongs to (``smtp``, ``imap``, ``pop3``), or None."""
    if greeting[:3] == "220":
        return "smtp"
    if greeting.startswith(("* OK", "* PREAUTH")):
        return "imap"
    if greeting.startswith("+OK"):
        return "pop3"
    return None


def _check_protocol(protocol: str) -> None:
    if protocol not in ("smtp", "imap", "pop3"):
        raise ValueError(f"unknown protocol {protocol!r}")


def greet(lines: Lines, protocol: str) -> str:
    """Read the server's greeting; its first line as sent (``220 host ESMTP``, ``* OK ...``, ``+OK ...``).

    Raises :class:`WrongProtocolError` for another protocol's (or no mail server's) greeting,
    :class:`ProtocolError` for an SMTP server that greets with a refusal (``554``).
    """
    _check_protocol(protocol)
    first = lines.line()
    if protocol == "smtp" and first[:3].isdigit() and first[3:4] in ("", " ", "-"):
        line = first
        while line[3:4] == "-":  # multi-line greeting
            line = lines.line()
        if first[:3] != "220":
            raise ProtocolError(f"SMTP greeting {first}")
        return first
    if guess_protocol(first) != protocol:
        what = {"smtp": "an SMTP", "imap": "an IMAP", "pop3": "a POP3"}[protocol]
        raise WrongProtocolError(f"not {what} greeting: {first[:80]!r}", first)
    return first


def capabilities(lines: Lines, protocol: str, *, name: str = CLIENT_NAME) -> list[str]:
    """Ask for the capabilities (EHLO ``name``, CAPABILITY, CAPA) and return them.

    SMTP: an EHLO refused falls back to HELO (no capabilities); POP3: CAPA refused means none.
    """
    _check_protocol(protocol)
    if protocol == "smtp":
        code, text = lines.smtp(f"EHLO {name}")
        if code == 250:
            return text[1:]
        code, text = lines.smtp(f"HELO {name}")
        if code != 250:
            raise ProtocolError(f"EHLO and HELO refused: {code} {' '.join(text)}")
        return []
    if protocol == "imap":
        status, untagged = lines.imap("c1", "CAPABILITY")
        if not status.upper().startswith("OK"):
            raise ProtocolError(f"CAPABILITY refused: {status}")
        for line in untagged:
            if line.upper().startswith("* CAPABILITY "):
                return line.split()[2:]
        return []
    lines.send("CAPA")
    if not lines.line().startswith("+OK"):
        return []
    caps = []
    while (line := lines.line()) != ".":
        caps.append(line)
    return caps


def starttls(lines: Lines, protocol: str) -> None:
    """Send STARTTLS (STLS in POP3) and read the go-ahead; ``ProtocolError`` when refused."""
    _check_protocol(protocol)
    if protocol == "smtp":
        code, text = lines.smtp("STARTTLS")
        if code != 220:
            raise ProtocolError(f"STARTTLS refused: {code} {' '.join(text)}")
    elif protocol == "imap":
        status, _ = lines.imap("c2", "STARTTLS")
        if not status.upper().startswith("OK"):
            raise ProtocolError(f"STARTTLS refused: {status}")
    else:
        lines.send("STLS")
        reply = lines.line()
        if not reply.startswith("+OK"):
            raise ProtocolError(f"STLS refused: {reply}")


def plain_exchange(sock: socket.socket, protocol: str, *, starttls: bool = False, name: str = CLIENT_NAME) -> Greeting:
    """Read the greeting, ask for capabilities and, with ``starttls``, send the STARTTLS command.

    Raises ``ProtocolError`` when the server is not speaking ``protocol`` or refuses STARTTLS.
    """
    lines = Lines(sock)
    banner = greet(lines, protocol)
    greeting = Greeting(banner[4:] if protocol == "smtp" else banner, capabilities(lines, protocol, name=name))
    if starttls:
        if protocol == "smtp" and not greeting.starttls:
            raise ProtocolError("STARTTLS is not offered by this SMTP server")
        _starttls(lines, protocol)
    return greeting


_starttls = starttls  # plain_exchange's keyword shadows the function


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
    with dial(host, port, timeout) as sock:
        greeting = Greeting() if implicit else plain_exchange(sock, protocol, starttls=True)
        with context.wrap_socket(sock, server_hostname=server_hostname) as tls:
            # A round trip over TLS: the greeting of implicit cells, the capabilities again after
            # STARTTLS. It also surfaces a TLS 1.3 client-certificate rejection, which arrives
            # only after the handshake.
            if implicit:
                greeting = after = plain_exchange(tls, protocol)
            else:
                after = Greeting(capabilities=capabilities(Lines(tls), protocol))
            cipher = tls.cipher()
            return HandshakeResult(
                version=tls.version() or "",
                cipher=cipher[0] if cipher else "",
                peer_cert=tls.getpeercert(binary_form=True),
                greeting=greeting,
                capabilities_after=after.capabilities,
                chain=presented_chain(tls),
            )


def __getattr__(name: str) -> Any:
    # open_client and MailClient live in .stdclients (smtplib, imaplib and poplib are 25 ms of imports
    # that the probe, readiness and the recorder never need); their old home still answers.
    if name in ("open_client", "MailClient"):
        from . import stdclients

        return getattr(stdclients, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
