"""The interface every client adapter implements, and what a run returns.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import abc
import base64
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MailTLSError
from ..manifest import Endpoint

if TYPE_CHECKING:  # oracle imports the family registry, a subpackage of this one
    from ..oracle import ClientProfile

__all__ = [
    "Client",
    "ClientResult",
    "ClientUnavailable",
    "OutgoingMessage",
    "wait_for_delivery",
    "run_command",
    "mask_secrets",
]

#: How long a message accepted by the server may take to reach the cell's Maildir.
DELIVERY_TIMEOUT = 15.0


class ClientUnavailable(MailTLSError):
    """A client cannot run on this machine (a missing program, no Java...)."""


@dataclass
class ClientResult:
    """What one client session against one endpoint did.

    ``ok``: the whole session worked (handshake, login, and for SMTP with
    ``send`` the message reached the cell's mailbox). ``tls``: whether the
    session ran over TLS (``None`` when the client cannot tell).
    """

    ok: bool
    error_text: str = ""
    exception_type: str = ""
    negotiated_version: str | None = None
    cipher: str | None = None
    duration: float = 0.0
    transcript: str = ""
    tls: bool | None = None
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error_text": self.error_text,
            "exception_type": self.exception_type,
            "negotiated_version": self.negotiated_version,
            "cipher": self.cipher,
            "duration": round(self.duration, 3),
            "tls": self.tls,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class OutgoingMessage:
    """The test message a client sends, with a unique Message-ID to find it in the mailbox."""

    sender: str
    recipient: str
    subject: str
    message_id: str
    body: str = "sent by pytest-mailtls certify\n"

    @classmethod
    def for_endpoint(cls, endpoint: Endpoint, client: str) -> OutgoingMessage:
        token = secrets.token_hex(8)
        return cls(
            sender=endpoint.address,
            recipient=endpoint.address,
            subject=f"pytest-mailtls {client} {endpoint.id} {token}",
            message_id=f"<{token}.{client}@mailtls.test>",
        )

    def as_bytes(self) -> bytes:
        lines = [
            f"From: {self.sender}",
            f"To: {self.recipient}",
            f"Subject: {self.subject}",
            f"Message-ID: {self.message_id}",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "",
            *self.body.splitlines(),
        ]
        # CRLF everywhere: servers that guard against SMTP smuggling (James 3.8) refuse a bare LF.
        return ("\r\n".join(lines) + "\r\n").encode()


class Client(abc.ABC):
    """A mail client under test. ``profile`` says what it offers; the oracle predicts from it."""

    name: str
    profile: ClientProfile

    def unavailable(self) -> str | None:
        """Why this client cannot run here (with the command that fixes it), or ``None``."""
        return None

    @abc.abstractmethod
    def run(self, endpoint: Endpoint, *, send: bool = True) -> ClientResult:
        """One session against ``endpoint``; never raises for a failed connection (that is a result)."""

    def close(self) -> None:
        """Release what the client keeps between cells (e.g. the Java client's JVM); safe to call twice."""
        return None  # most clients keep nothing

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def wait_for_delivery(endpoint: Endpoint, message_id: str, *, timeout: float = DELIVERY_TIMEOUT) -> str | None:
    """Wait until the message reached the cell's mailbox; ``None`` when it did, else why not."""
    if endpoint.mailbox is None:
        return None
    deadline = time.monotonic() + timeout
    while True:
        for msg in endpoint.messages():
            if msg.get("Message-ID", "").strip() == message_id:
                return None
        if time.monotonic() >= deadline:
            return (
                f"the server accepted the message but it did not reach {endpoint.mailbox} within {timeout:.0f} s "
                f"(Message-ID {message_id})"
            )
        time.sleep(0.2)


def run_command(
    argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 60.0
) -> tuple[int, str, str, float]:
    """Run a client program; ``(exit code, stdout, stderr, seconds)``. A timeout is exit code 124."""
    if shutil.which(argv[0]) is None:
        raise ClientUnavailable(f"{argv[0]!r} is not installed")
    start = time.monotonic()
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace")
        err = (exc.stderr or b"").decode(errors="replace")
        return 124, out, err + f"\n[pytest-mailtls] timed out after {timeout:.0f} s", time.monotonic() - start
    return (
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
        time.monotonic() - start,
    )


@dataclass
class Transcript:
    """Readable steps of a session (the client's view), kept short."""

    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        self.lines.append(text)

    def __str__(self) -> str:
        return "\n".join(self.lines)


def mask_secrets(text: str, endpoint: Endpoint) -> str:
    """``text`` with the test password hidden, also in the base64 forms AUTH PLAIN and LOGIN send."""
    user, password = endpoint.username, endpoint.password
    if not password:
        return text
    secrets_ = [password]
    for raw in (password, f"\0{user}\0{password}", f"{user}\0{user}\0{password}"):
        secrets_.append(base64.b64encode(raw.encode()).decode())
    for secret in sorted(secrets_, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
