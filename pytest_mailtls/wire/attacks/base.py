"""What every attack shares: its description (:class:`Attack`), and a tap that reads the cleartext phase line by
line (:class:`LineTap`) so that an attack only says what it changes.

An attack is data plus one per-connection tap class:

* ``name`` (it ends the cell id: ``postfix-submission-starttls-intermediate-valid-strip-capa``), ``family``
  (``strip``, ``inject``, ``tamper``, ``intercept``, ``intolerant``) and a one-line ``description``;
* where it applies: ``protocols`` and ``modes`` (STARTTLS attacks need a cleartext phase; interception and
  intolerance also play on implicit TLS);
* what a secure client does: ``expected`` is ``refuse`` (it must fail: ``refusal`` names the failure class its
  refusal is diagnosed as) or ``either`` (a secure client may go on, the attack being harmless to it, or
  refuse); ``secure_outcome`` says it in words for the report;
* what falling for it is: ``vulnerability``, the class an ``insecure`` verdict carries.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from ...policy import GROUPS, Cell, CertProfile, Mode
from ..recorder import Link, Tap
from ..session import Session
from ..tlsrecords import looks_like_tls

if TYPE_CHECKING:
    from ...pki import SessionPKI
    from ..judge import WireView
    from .mitm import MITM

__all__ = [
    "Attack",
    "AttackTap",
    "LineTap",
    "STARTTLS_MODES",
    "TerminatingTap",
    "VULNERABILITY_CLASSES",
]

STARTTLS_MODES: tuple[Mode, ...] = (Mode.STARTTLS, Mode.STARTTLS_REQUIRED)

#: What a client that falls for a hostile network is reported as (the ``insecure`` verdict's class), after the
#: classes of "Why TLS is better without STARTTLS" (USENIX Security 2021) plus interception and downgrade.
VULNERABILITY_CLASSES: dict[str, str] = {
    "starttls-stripping": "went on in clear (credentials or mail) after the network removed or refused STARTTLS",
    "response-injection": "acted on lines the network injected before the handshake, or on an answer to another command",
    "command-injection": "sent cleartext commands behind STARTTLS before TLS began (a MITM can append its own)",
    "negotiation-tampering": "trusted capabilities changed in clear (sent credentials because AUTH was offered in clear)",
    "tls-interception": "accepted a certificate from another CA and talked to the interceptor",
    "tls-downgrade": "retried below TLS 1.2, or in clear, after a middlebox reset its hello",
    "lost-mail": "reported success for mail the server never accepted (a 4xx/5xx answer, or a connection cut in DATA)",
    "ignored-error": "reported success although the server refused a step (greeting, login, mailbox, message)",
    "retry-storm": "came back at once on new connections for a permanent refusal (5xx), or for a temporary one again "
    "and again, instead of reporting it or retrying later",
}

#: An attack's group unless it says otherwise.
_FAMILY_GROUPS = {
    "strip": "STARTTLS attacks",
    "inject": "STARTTLS attacks",
    "tamper": "STARTTLS attacks",
    "intercept": "interception",
    "intolerant": "legacy crypto",
    "fault": "faults",
}


@dataclass(frozen=True)
class Attack:
    """One hostile network: what it does, where it applies, what a secure client does, and its tap."""

    name: str
    family: Literal["strip", "inject", "tamper", "intercept", "intolerant", "fault"]
    description: str
    vulnerability: str
    expected: Literal["refuse", "either"]
    secure_outcome: str
    tap_class: type[LineTap]
    refusal: str | None = None
    protocols: tuple[str, ...] = ("smtp", "imap", "pop3")
    modes: tuple[Mode, ...] = STARTTLS_MODES
    #: What the wire shows the client did wrong after the attack, as ``(class, evidence lines)``, beyond credentials
    #: or mail in clear (which the judge checks on every hostile cell).
    check: Callable[[WireView], tuple[str, list[str]] | None] | None = None
    #: The report's group for its cells (:data:`GROUPS`; default: the family's).
    group: str = ""

    def presents(self, cell: Cell) -> CertProfile | None:
        """The certificate profile its relay presents on ``cell`` when it terminates TLS itself (None when it
        does not)."""
        return self.tap_class.presented_on(cell) if issubclass(self.tap_class, TerminatingTap) else None

    def __post_init__(self) -> None:
        if self.vulnerability not in VULNERABILITY_CLASSES:
            raise ValueError(f"attack {self.name}: unknown vulnerability class {self.vulnerability!r}")
        if not self.group:
            object.__setattr__(self, "group", _FAMILY_GROUPS[self.family])
        if self.group not in GROUPS:
            raise ValueError(f"attack {self.name}: unknown group {self.group!r}")

    def applies(self, cell: Cell) -> bool:
        """Whether this attack can be played in front of ``cell`` (its protocol and TLS mode; a TLS cell)."""
        return cell.tls and str(cell.protocol) in self.protocols and cell.mode in self.modes

    def tap(self, cell: Cell, *, pki: SessionPKI | None = None, server_hostname: str = "localhost") -> AttackTap:
        """The tap a recorder front plays this attack with, in front of ``cell``'s server."""
        return AttackTap(self, cell, pki, server_hostname)

    @property
    def actor(self) -> str:
        """Who did it, in the diagnosis's words."""
        return "the network"

    @property
    def refused_remedy(self) -> str:
        """The remedy of a client that refused, as it must."""
        return f"nothing to fix: the network attacked ({self.name}) and the client refused as it must"

    def insecurity(self, view: WireView, *, ok: bool = True) -> tuple[str, list[str]] | None:
        """What the wire shows the client did wrong on this network (``ok``: whether it reported success)."""
        return self.check(view) if self.check is not None else None


class AttackTap(Tap):
    """One front's tap: makes a fresh :class:`LineTap` of the attack for each connection."""

    active = True

    def __init__(self, attack: Attack, cell: Cell, pki: SessionPKI | None, server_hostname: str) -> None:
        self.attack, self.cell, self.pki, self.server_hostname = attack, cell, pki, server_hostname

    def opened(self, link: Link) -> Tap:
        return self.attack.tap_class(self, link)


_SMTP_FINAL = re.compile(rb"^\d{3}(?: |\r?\n|$)")


class LineTap(Tap):
    """A per-connection tap that reads the cleartext phase as lines and passes TLS through.

    Subclasses override the hooks: :meth:`client_line` (a client command; default: forward it),
    :meth:`server_reply` (one whole reply: an SMTP multi-line reply or one IMAP/POP3 line; default: forward it),
    :meth:`tls_begins` (STARTTLS was accepted, or an implicit-TLS connection opened), :meth:`client_tls` and
    :meth:`server_tls` (TLS bytes; default: forward). ``starttls_tag`` is the client's STARTTLS command in flight
    (``""`` for SMTP and POP3, the tag for IMAP), ``None`` when none is.
    """

    active = True

    def __init__(self, factory: AttackTap, link: Link, *, inside: bool = False) -> None:
        """``inside``: the tap reads the plaintext inside a TLS session the network terminated (it starts no TLS)."""
        self.factory = factory
        self.attack = factory.attack
        self.cell = factory.cell
        self.link = link
        self.protocol = str(self.cell.protocol)
        self.tls = False
        self.starttls_tag: str | None = None
        self.last_starttls_tag = ""  # IMAP: the tag of the client's last STARTTLS, answered or not
        self.last_verb = ""  # the client's last command word (SMTP/POP3) or IMAP command name
        self.in_capa = False  # POP3: reading a CAPA answer
        self.accepting = False  # the reply being handed to server_reply accepts the client's STARTTLS
        self._buffers = {"client": bytearray(), "server": bytearray()}
        self._reply: list[bytes] = []  # SMTP: the lines of a multi-line reply so far
        self._noted: set[str] = set()
        self.inside = inside
        if self.cell.mode is Mode.IMPLICIT and not inside:
            self._begin_tls()

    # --- hooks ---------------------------------------------------------------------------
    def client_line(self, raw: bytes, text: str) -> None:
        self.link.to_server(raw)

    def server_reply(self, lines: list[bytes]) -> None:
        self.link.to_client(b"".join(lines))

    def tls_begins(self) -> None:
        return None

    def client_tls(self, data: bytes) -> None:
        self.link.to_server(data)

    def server_tls(self, data: bytes) -> None:
        self.link.to_client(data)

    def client_tls_unasked(self, data: bytes) -> None:
        """The client sent a TLS record although no STARTTLS was accepted (default: pass it on)."""
        self.link.to_server(data)

    # --- helpers for attacks ---------------------------------------------------------------
    def note(self, event: str, *, once: bool = False) -> None:
        if once:
            if event in self._noted:
                return
            self._noted.add(event)
        self.link.note(event)

    def answer_starttls(self, line: str) -> None:
        """Answer the client's STARTTLS command in the server's place (the server never sees it)."""
        tag = self.starttls_tag or ""
        self.starttls_tag = None
        self.link.to_client((line.replace("{tag}", tag) + "\r\n").encode("latin-1"))

    def mitm(self, profile: CertProfile) -> MITM:
        """A TLS-terminating relay on this connection, presenting the session PKI's ``profile`` certificate."""
        from .mitm import MITM

        pki = self.factory.pki
        if pki is None:
            raise RuntimeError(f"attack {self.attack.name} needs the session PKI (Attack.tap(pki=...))")
        files = pki.server_files(profile)
        return MITM(
            self.link,
            server_context=server_context(self.cell, str(files.cert_file), str(files.key_file)),
            upstream_context=upstream_context(),
            server_hostname=self.factory.server_hostname,
            protocol=self.protocol,
            greeting_expected=self.cell.mode is Mode.IMPLICIT,
            note=self.note,
        )

    def next_imap_tag(self) -> str:
        """The tag the client will most likely use next (IMAP clients count up: A001, A002 ...)."""
        tag = self.last_starttls_tag or "A0"
        m = re.fullmatch(r"(.*?)(\d+)", tag)
        if m is None:
            return tag + "1"
        return m.group(1) + str(int(m.group(2)) + 1).zfill(len(m.group(2)))

    # --- the relay's calls -----------------------------------------------------------------
    def from_client(self, link: Link, data: bytes) -> None:
        if self.tls:
            self.client_tls(data)
            return
        buf = self._buffers["client"]
        if not buf and looks_like_tls(data):
            self.client_tls_unasked(data)
            return
        buf += data
        while not self.tls:
            index = buf.find(b"\n")
            if index < 0:
                return
            raw = bytes(buf[: index + 1])
            del buf[: index + 1]
            text = raw.decode("latin-1").rstrip("\r\n")
            self._track_client(text)
            self.client_line(raw, text)

    def from_server(self, link: Link, data: bytes) -> None:
        if self.tls:
            self.server_tls(data)
            return
        buf = self._buffers["server"]
        buf += data
        while not self.tls:
            index = buf.find(b"\n")
            if index < 0:
                return
            raw = bytes(buf[: index + 1])
            del buf[: index + 1]
            self._server_line(raw)
        if buf:  # the server spoke TLS right after its answer (it never does before the client's hello)
            rest = bytes(buf)
            buf.clear()
            self.server_tls(rest)

    # --- bookkeeping -------------------------------------------------------------------------
    def _track_client(self, text: str) -> None:
        words = text.split()
        if self.protocol == "imap":
            if len(words) >= 2:
                self.last_verb = words[1].upper()
                if self.last_verb == "STARTTLS":
                    self.starttls_tag = self.last_starttls_tag = words[0]
            return
        self.last_verb = words[0].upper() if words else ""
        if self.last_verb in ("STARTTLS", "STLS"):
            self.starttls_tag = ""

    def _server_line(self, raw: bytes) -> None:
        text = raw.decode("latin-1").rstrip("\r\n")
        if self.protocol == "smtp":
            self._reply.append(raw)
            if not _SMTP_FINAL.match(raw):
                return
            lines, self._reply = self._reply, []
            accepted = self.accepting = self._starttls_answer(text)
            self.server_reply(lines)
        else:
            ends_capa = self.in_capa and text == "."
            if self.protocol == "pop3" and self.last_verb == "CAPA" and text.startswith("+OK") and not self.in_capa:
                self.in_capa = True
            accepted = self.accepting = self._starttls_answer(text)
            self.server_reply([raw])  # the CAPA answer's final "." is still read as part of it
            if ends_capa:
                self.in_capa = False
        self.accepting = False
        if accepted:
            self._begin_tls()

    def _starttls_answer(self, text: str) -> bool:
        """Whether ``text`` accepts the client's STARTTLS (clears the command in flight once answered)."""
        tag = self.starttls_tag
        if tag is None:
            return False
        if self.protocol == "smtp":
            self.starttls_tag = None
            return text.startswith("220")
        if self.protocol == "pop3":
            if text.startswith(("+OK", "-ERR")):
                self.starttls_tag = None
                return text.startswith("+OK")
            return False
        words = text.split(" ", 2)
        if words[0] != tag:
            return False
        self.starttls_tag = None
        return len(words) > 1 and words[1].upper() == "OK"

    def _begin_tls(self) -> None:
        self.tls = True
        self.tls_begins()
        client = self._buffers["client"]
        if client:
            rest = bytes(client)
            client.clear()
            self.client_tls(rest)


class TerminatingTap(LineTap):
    """A tap that terminates TLS when it begins, presenting the session PKI's :attr:`profile` certificate, and
    relays to the server over TLS of its own (:class:`~pytest_mailtls.wire.attacks.mitm.MITM`); the session
    records what the client said inside (``inner_dialogue``, ``inner_credentials``)."""

    profile: ClassVar[CertProfile] = CertProfile.VALID

    def __init__(self, factory: AttackTap, link: Link, *, inside: bool = False) -> None:
        self.bridge: MITM | None = None  # set before the base starts an implicit-TLS connection's TLS
        super().__init__(factory, link, inside=inside)

    def bridge_ready(self, bridge: MITM) -> None:
        """The relay is made, its TLS toward the server not started yet: set it up (default: nothing)."""
        return None

    @classmethod
    def presented_on(cls, cell: Cell) -> CertProfile:
        """The certificate profile the network presents on ``cell`` (default: :attr:`profile`)."""
        return cls.profile

    def certificate(self) -> CertProfile:
        return self.presented_on(self.cell)

    def tls_begins(self) -> None:
        self.bridge = self.mitm(self.certificate())
        self.bridge_ready(self.bridge)
        self.bridge.start()

    def client_tls(self, data: bytes) -> None:
        if self.bridge is not None:
            self.bridge.from_client(data)

    def server_tls(self, data: bytes) -> None:
        if self.bridge is not None:
            self.bridge.from_server(data)

    def closed(self, session: Session) -> None:
        if self.bridge is not None:
            self.bridge.record(session)


def server_context(cell: Cell, cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS server context for an intercepting network: the cell's versions, ``cert_file``'s chain."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_file, key_file)
    if cell.policy is not None:
        from ...connect import set_version_range

        set_version_range(ctx, cell.policy.min_version, cell.policy.max_version)
        if cell.policy.ciphers:
            ctx.set_ciphers(cell.policy.openssl_ciphers())
    return ctx


def upstream_context() -> ssl.SSLContext:
    """The intercepting network's TLS client toward the real server: it takes whatever the server presents."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx
