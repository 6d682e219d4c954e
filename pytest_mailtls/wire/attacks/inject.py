"""Injection around STARTTLS.

* ``inject-response``: the network appends plaintext lines to the server's positive answer to STARTTLS, in the
  same segment (answers the client will need next: an EHLO answer, an IMAP capability list and the tagged
  completion of the client's next command, a POP3 CAPA answer). A client must discard what it buffered before the
  handshake. To see what the client does inside TLS, the network terminates TLS with the cell's own valid
  certificate (as EAST's test servers do) and reads the client's commands: a second command sent before the
  server answered the first means the client read the injected lines as answers (``response-injection``).
* ``inject-command``: the network withholds the server's answer to STARTTLS a moment (``HOLD`` seconds) and
  records whatever the client sends meanwhile, or in clear after the answer: commands pipelined behind STARTTLS
  are what a man in the middle appends its own commands to (``command-injection``).

A secure client either goes on over TLS as if nothing happened or refuses; both are fine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...policy import CertProfile
from ..recorder import Link
from ..session import Session
from .base import Attack, AttackTap, LineTap, TerminatingTap

if TYPE_CHECKING:
    from ..judge import WireView
    from .mitm import MITM

__all__ = ["INJECT_ATTACKS", "HOLD"]

#: How long ``inject-command`` withholds the server's answer to STARTTLS.
HOLD = 0.3


class InjectResponse(TerminatingTap):
    profile = CertProfile.VALID

    def server_reply(self, lines: list[bytes]) -> None:
        if not self.accepting:
            self.link.to_client(b"".join(lines))
            return
        injected = self._injected()
        shown = " | ".join(ln for ln in injected.decode("latin-1").split("\r\n") if ln)
        self.note(f"injected after the STARTTLS answer, in the same segment: {shown!r}")
        self.link.to_client(b"".join(lines) + injected, record=False)
        self.link.analyzer.feed("server", b"".join(lines))  # the record reads the answer; the lines are noted

    def _injected(self) -> bytes:
        if self.protocol == "smtp":
            return b"250-mailtls.invalid injected by the network\r\n250 AUTH PLAIN LOGIN\r\n"
        if self.protocol == "imap":
            tag = self.next_imap_tag()
            return f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK CAPABILITY completed\r\n".encode()
        return b"+OK injected\r\nUSER\r\nSASL PLAIN\r\n.\r\n"

    def bridge_ready(self, bridge: MITM) -> None:
        bridge.hold_first_answer = HOLD  # a client acting on the injected lines speaks again meanwhile

    def closed(self, session: Session) -> None:
        super().closed(session)
        if self.bridge is not None:
            session.acted_on_injection = self.bridge.early_command is not None


class InjectCommand(LineTap):
    def __init__(self, factory: AttackTap, link: Link) -> None:
        super().__init__(factory, link)
        self.held: list[bytes] = []

    def server_reply(self, lines: list[bytes]) -> None:
        if self.accepting:
            self.held = lines
            self.note(f"withheld the server's STARTTLS answer {HOLD} s")
            self.link.later(HOLD, self._release)
            return
        self.link.to_client(b"".join(lines))

    def _release(self) -> None:
        held, self.held = self.held, []
        self.link.to_client(b"".join(held))


def _acted_on_injection(view: WireView) -> tuple[str, list[str]] | None:
    for s in view.sessions:
        if s.acted_on_injection:
            # The client's lines only: the server's answer to the first command (withheld from the client, but
            # recorded as it arrived) may come before the client's second command or after it, and a multi-line
            # EHLO answer would push the early command out of the evidence (a CI failure showed it).
            inside = [f"wire (inside TLS): C: {ln.text}" for ln in s.inner_dialogue if ln.dir == "client"][:4]
            return "response-injection", [f"wire: {line}" for line in s.attack] + inside
    return None


def _pipelined(view: WireView) -> tuple[str, list[str]] | None:
    for s in view.sessions:
        if s.sent_after_starttls:
            return "command-injection", [
                f"wire: the client sent {len(s.sent_after_starttls)} cleartext line(s) after "
                f"{s.starttls_command()} before its answer: " + " | ".join(s.sent_after_starttls[:4]),
            ]
        if s.starttls is not None and s.starttls.accepted and s.not_tls:
            return "command-injection", [
                f"wire: after {s.starttls_command()} was accepted the client sent cleartext, not a TLS hello: "
                f"{s.first_client_bytes!r}",
            ]
    return None


INJECT_ATTACKS: tuple[Attack, ...] = (
    Attack(
        "inject-response",
        "inject",
        "plaintext answers injected after the STARTTLS answer; TLS terminated with the cell's valid certificate "
        "to see what the client does with them",
        "response-injection",
        "either",
        "a secure client discards what it read before the handshake and goes on over TLS, or refuses the STARTTLS "
        "answer because data followed it",
        InjectResponse,
        refusal="starttls-not-offered",
        check=_acted_on_injection,
    ),
    Attack(
        "inject-command",
        "inject",
        f"the server's STARTTLS answer withheld {HOLD} s; cleartext the client pipelines behind STARTTLS recorded",
        "command-injection",
        "either",
        "a secure client sends nothing after STARTTLS until the answer, then only its TLS hello",
        InjectCommand,
        check=_pipelined,
    ),
)
