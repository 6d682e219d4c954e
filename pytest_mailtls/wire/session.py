"""A session: one connection to one cell, as the recorder saw it on the wire.

Records are pydantic models, written one JSON line per connection to the cell's sessions file
(``Endpoint.extra["sessions_file"]``) and read back by :func:`read_sessions`. The JSON Schema is
``Session.model_json_schema()``.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "Alert",
    "ClientHello",
    "DialogueLine",
    "ServerHello",
    "Session",
    "StartTLS",
    "read_sessions",
    "SESSION_SCHEMA_VERSION",
]

SESSION_SCHEMA_VERSION = 1
_SECURE = ("TLSv1.2", "TLSv1.3")


class DialogueLine(BaseModel):
    """One cleartext line (credentials masked as ``***``; a message body is summarised)."""

    dir: Literal["client", "server"]
    t: float
    text: str


class StartTLS(BaseModel):
    """The client's STARTTLS/STLS command and the server's answer."""

    command: str
    answer: str
    accepted: bool


class ClientHello(BaseModel):
    """What the client offered, read from its ClientHello."""

    legacy_version: str
    versions: list[str] = Field(description="ascending; from supported_versions, else every version up to legacy")
    versions_from: Literal["supported_versions", "legacy_version"]
    ciphers: list[str] = Field(description="the client's suites in its order, OpenSSL names (hex when unknown)")
    sni: str | None = None
    alpn: list[str] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    signature_algorithms: list[str] = Field(default_factory=list)


class ServerHello(BaseModel):
    """What the server chose."""

    version: str
    cipher: str


class Alert(BaseModel):
    """A TLS alert seen on the wire (``description`` is ``encrypted`` when it could not be read)."""

    sender: Literal["client", "server"]
    level: str
    description: str
    encrypted: bool = False


class Session(BaseModel):
    """One connection to one cell, as it crossed the wire.

    Times are seconds since the epoch. ``closed_by`` says which side closed first (``relay`` when the
    recorder stopped with the connection open) and ``close_how`` how (``fin``, ``rst``). Facts about TLS
    come from the records themselves (no keys are involved): what the client offered, what the server
    chose, alerts sent in clear, whether each side finished the handshake, and whether the client sent
    application data afterwards. The dialogue is the cleartext part only.
    """

    schema_version: int = SESSION_SCHEMA_VERSION
    id: str
    cell: str
    protocol: str
    client: str = Field(description="the client's address as the recorder saw it (host:port)")
    upstream_port: int | None = Field(
        None,
        description="the recorder's port toward the server: the client port the server logs (none when the "
        "server is reached through a sealed container's unix socket: the server then logs its relay's port)",
    )
    opened: float
    first_byte: float | None = None
    tls_started: float | None = None
    closed: float | None = None
    closed_by: Literal["client", "server", "relay"] | None = None
    close_how: Literal["fin", "rst", "timeout"] | None = None
    upstream_error: str | None = Field(None, description="why the recorder could not reach the server")
    bytes_from_client: int = 0
    bytes_from_server: int = 0

    dialogue: list[DialogueLine] = Field(default_factory=list)
    dialogue_dropped: int = 0
    starttls_offered: bool | None = Field(None, description="the server advertised STARTTLS/STLS in clear")
    starttls: StartTLS | None = None
    tls_before_starttls: bool = Field(False, description="the client opened with a TLS hello on a plaintext-first port")
    not_tls: bool = Field(False, description="the client's first bytes on a TLS-first path were not a TLS record")
    first_client_bytes: str | None = Field(None, description="the start of what the client sent where TLS was due")
    credentials: list[str] = Field(default_factory=list, description="credentials sent in clear: AUTH PLAIN, LOGIN ...")
    auth_answers: list[str] = Field(default_factory=list)
    mail_commands: list[str] = Field(default_factory=list, description="MAIL/RCPT/DATA sent in clear")
    message_accepted: bool | None = Field(None, description="the server's answer to the end of DATA, when in clear")
    rejections: list[str] = Field(default_factory=list, description="5xx / NO / BAD / -ERR answers in clear")
    sent_after_starttls: list[str] = Field(
        default_factory=list,
        description="cleartext the client sent after its STARTTLS/STLS command, before the answer (pipelined)",
    )

    network: str | None = Field(None, description="the attack the hostile network played on this connection")
    attack: list[str] = Field(default_factory=list, description="what the hostile network did, in order")
    inner_dialogue: list[DialogueLine] = Field(
        default_factory=list,
        description="an intercepting network's view inside TLS (credentials masked): what the client said to it",
    )
    inner_credentials: list[str] = Field(
        default_factory=list, description="credentials the client sent to an intercepting network inside TLS"
    )
    inner_message_accepted: bool | None = Field(
        None, description="inside a TLS session the network terminated: the answer the client saw to the end of DATA"
    )
    inner_rejections: list[str] = Field(
        default_factory=list,
        description="inside a TLS session the network terminated: 4xx/5xx, NO, BAD, -ERR answers the client saw",
    )
    acted_on_injection: bool = Field(
        False, description="the client acted on lines the network injected (it answered before the server did)"
    )

    client_hello: ClientHello | None = None
    server_hello: ServerHello | None = None
    alerts: list[Alert] = Field(default_factory=list)
    client_certificate: bool | None = Field(None, description="TLS <= 1.2: the client sent a non-empty certificate")
    client_finished: bool = Field(False, description="the client finished its handshake: it accepted the certificate")
    handshake_completed: bool = False
    client_app_data: bool = Field(False, description="the client sent application data after the handshake")

    # --- conveniences ------------------------------------------------------------------
    @property
    def tls(self) -> bool:
        """Whether TLS came up (both sides finished the handshake)."""
        return self.handshake_completed

    @property
    def tls_version(self) -> str | None:
        return self.server_hello.version if self.server_hello else None

    @property
    def cipher(self) -> str | None:
        return self.server_hello.cipher if self.server_hello else None

    @property
    def offered_versions(self) -> list[str]:
        return list(self.client_hello.versions) if self.client_hello else []

    @property
    def offered_ciphers(self) -> list[str]:
        return list(self.client_hello.ciphers) if self.client_hello else []

    @property
    def sni(self) -> str | None:
        return self.client_hello.sni if self.client_hello else None

    @property
    def credentials_in_clear(self) -> bool:
        return bool(self.credentials)

    @property
    def alert(self) -> Alert | None:
        """The first fatal (or unreadable) alert, if any."""
        return next((a for a in self.alerts if a.level != "warning" or a.description != "close_notify"), None)

    def starttls_command(self) -> str:
        return "STLS" if self.protocol == "pop3" else "STARTTLS"

    @property
    def done(self) -> bool:
        return self.closed is not None

    def summary(self) -> str:
        """One line: what happened on this connection."""
        parts = []
        if self.starttls is not None:
            parts.append(f"{self.starttls.command} -> {self.starttls.answer[:40]}")
        elif self.starttls_offered:
            parts.append("STARTTLS offered, not used")
        if self.not_tls:
            parts.append(f"no TLS hello: client sent {self.first_client_bytes!r}")
        if self.tls_before_starttls:
            parts.append("TLS hello on a plaintext-first port")
        if self.client_hello:
            parts.append(f"client offered {_span(self.client_hello.versions)}, {len(self.client_hello.ciphers)} suites")
        if self.server_hello:
            parts.append(f"server chose {self.server_hello.version} {self.server_hello.cipher}")
        for alert in self.alerts:
            # After a completed handshake an unreadable short record is most likely a close_notify.
            if alert.description != "close_notify" and not (alert.encrypted and self.handshake_completed):
                parts.append(f"{alert.sender} alert {alert.description}")
        if self.server_hello:
            parts.append("handshake completed" if self.handshake_completed else "handshake not completed")
        if self.network:
            parts = [f"network {self.network}: " + ("; ".join(self.attack) or "did nothing"), *parts]
        if self.sent_after_starttls:
            parts.append(
                f"sent {len(self.sent_after_starttls)} line(s) after {self.starttls_command()} before its answer"
            )
        if self.credentials:
            parts.append("credentials in clear: " + ", ".join(self.credentials))
        if self.inner_credentials:
            parts.append("inside TLS, to the network's TLS endpoint: " + ", ".join(self.inner_credentials))
        if self.acted_on_injection:
            parts.append("acted on injected lines")
        if self.mail_commands:
            parts.append("mail in clear")
        if self.message_accepted is not None:
            parts.append("message accepted" if self.message_accepted else "message refused")
        parts.append(f"closed by {self.closed_by or '?'} ({self.close_how or 'open'})")
        return "; ".join(parts)


def _span(versions: list[str]) -> str:
    if not versions:
        return "no version"
    return versions[0] if len(versions) == 1 else f"{versions[0]}..{versions[-1]}"


def _lines(path: Path) -> Iterator[dict[str, object]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:  # a line being written right now
            continue


def read_sessions(
    path: str | Path, *, since: float | None = None, wait: float = 2.0, poll: float = 0.02
) -> list[Session]:
    """Sessions recorded in ``path`` (oldest first), those opened at ``since`` or later.

    Connections still open are waited for, at most ``wait`` seconds (a client that just exited may
    be a few milliseconds ahead of the recorder); those still open then come back with ``closed`` None.
    """
    source = Path(path)
    deadline = time.monotonic() + wait
    while True:
        opened: dict[str, dict[str, object]] = {}
        closed: dict[str, Session] = {}
        for event in _lines(source):
            sid = str(event.get("id"))
            if event.get("event") == "open":
                opened[sid] = event
            else:
                closed[sid] = Session.model_validate({k: v for k, v in event.items() if k != "event"})
        pending = [sid for sid in opened if sid not in closed]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    out = list(closed.values())
    for sid in pending:
        event = opened[sid]
        out.append(
            Session(
                id=sid,
                cell=str(event.get("cell")),
                protocol=str(event.get("protocol")),
                client=str(event.get("client")),
                opened=float(event.get("opened", 0.0)),  # type: ignore[arg-type]
            )
        )
    out.sort(key=lambda s: s.opened)
    if since is not None:
        out = [s for s in out if s.opened >= since]
    return out
