"""STARTTLS stripping: the network removes STARTTLS from the capabilities, or answers the command itself.

* ``strip-capa``: STARTTLS (STLS) is removed from the EHLO, CAPABILITY (greeting and answers) and CAPA answers;
  a client that sends the command anyway is told it is unknown, as a server without TLS would.
* ``strip-refuse``: the command is answered with a refusal: ``454 4.7.0`` (SMTP), ``NO`` (IMAP), ``-ERR`` (POP3).
* ``strip-bad`` (IMAP): answered ``BAD``.
* ``strip-wrongtag`` (IMAP): answered ``OK`` under another command's tag, the client's own answer never comes.
* ``strip-garbage``: answered with a line that is no answer of the protocol.

The server never sees the STARTTLS command, so its session stays a plain one. A secure client refuses to go
on (``starttls-not-offered``); one that sends credentials or mail afterwards falls for ``starttls-stripping``,
and one that starts TLS on a wrong tag or garbage took a line that was not its answer (``response-injection``).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..recorder import Link
from ..session import Session
from .base import Attack, AttackTap, LineTap

if TYPE_CHECKING:
    from ..judge import WireView

__all__ = ["STRIP_ATTACKS"]

_IMAP_STARTTLS = re.compile(r" STARTTLS\b", re.IGNORECASE)


class StripTap(LineTap):
    """Answers STARTTLS in the server's place; ``strip_capabilities`` also removes it from the capabilities."""

    strip_capabilities = False
    #: The answer per protocol (``{tag}``: the client's IMAP tag).
    answers: dict[str, str] = {}
    #: Whether starting TLS after this answer means the client took a non-answer for its acceptance.
    acceptance_is_wrong = False

    def __init__(self, factory: AttackTap, link: Link) -> None:
        super().__init__(factory, link)
        self.tls_anyway = False

    def client_line(self, raw: bytes, text: str) -> None:
        if self.starttls_tag is None:
            self.link.to_server(raw)
            return
        answer = self.answers[self.protocol].replace("{next}", self.next_imap_tag())
        answer = answer.replace("{tag}", self.starttls_tag)
        self.note(f"answered the client's {text.strip()[:40]!r} itself with {answer!r}")
        self.answer_starttls(answer)

    def server_reply(self, lines: list[bytes]) -> None:
        if self.strip_capabilities:
            lines = self._strip(lines)
        if lines:
            self.link.to_client(b"".join(lines))

    def client_tls_unasked(self, data: bytes) -> None:
        self.tls_anyway = True
        self.note("the client started TLS although its STARTTLS was not accepted; the network reset the connection")
        self.link.reset()

    def closed(self, session: Session) -> None:
        if self.tls_anyway and self.acceptance_is_wrong:
            session.acted_on_injection = True

    def _strip(self, lines: list[bytes]) -> list[bytes]:
        proto = self.protocol
        if proto == "smtp":
            kept = [ln for ln in lines if ln[4:].split(b" ")[0].strip().upper() != b"STARTTLS"]
            if len(kept) != len(lines):
                self.note("removed STARTTLS from the EHLO answer", once=True)
                kept = [ln[:3] + b"-" + ln[4:] for ln in kept[:-1]] + [kept[-1][:3] + b" " + kept[-1][4:]]
            return kept
        if proto == "imap":
            out = []
            for ln in lines:
                text = ln.decode("latin-1")
                if "CAPABILITY" in text.upper() and _IMAP_STARTTLS.search(text):
                    text = _IMAP_STARTTLS.sub("", text)
                    self.note("removed STARTTLS from the CAPABILITY list", once=True)
                out.append(text.encode("latin-1"))
            return out
        if self.in_capa and lines[0].strip().upper() == b"STLS":
            self.note("removed STLS from the CAPA answer", once=True)
            return []
        return lines


class StripCapa(StripTap):
    strip_capabilities = True
    answers = {
        "smtp": "502 5.5.1 Error: command not implemented",
        "imap": "{tag} BAD Error in IMAP command STARTTLS: Unknown command.",
        "pop3": "-ERR Unknown command: STLS",
    }


class StripRefuse(StripTap):
    answers = {
        "smtp": "454 4.7.0 TLS not available due to temporary reason",
        "imap": "{tag} NO [UNAVAILABLE] STARTTLS is not available right now",
        "pop3": "-ERR [SYS/TEMP] STLS is not available right now",
    }


class StripBad(StripTap):
    answers = {"imap": "{tag} BAD STARTTLS not understood"}


class StripWrongTag(StripTap):
    answers = {"imap": "{next} OK Begin TLS negotiation now"}
    acceptance_is_wrong = True


class StripGarbage(StripTap):
    answers = {
        "smtp": "?\x7fmailtls-garbage \x01\x02",
        "imap": "?\x7fmailtls-garbage \x01\x02",
        "pop3": "?\x7fmailtls-garbage \x01\x02",
    }
    acceptance_is_wrong = True


def _started_tls_on_a_non_answer(view: WireView) -> tuple[str, list[str]] | None:
    for s in view.sessions:
        if s.acted_on_injection:
            return "response-injection", [
                "wire: the client started TLS on a line that was not the answer to its STARTTLS "
                f"({'; '.join(s.attack)})",
            ]
    return None


_SECURE = "a secure client refuses to go on without TLS: it sends no credentials and no mail in clear"

STRIP_ATTACKS: tuple[Attack, ...] = (
    Attack(
        "strip-capa",
        "strip",
        "STARTTLS removed from the capabilities; the command, if sent anyway, answered as unknown",
        "starttls-stripping",
        "refuse",
        _SECURE,
        StripCapa,
        refusal="starttls-not-offered",
    ),
    Attack(
        "strip-refuse",
        "strip",
        "STARTTLS answered with a refusal (454 / NO / -ERR) by the network",
        "starttls-stripping",
        "refuse",
        _SECURE,
        StripRefuse,
        refusal="starttls-not-offered",
    ),
    Attack(
        "strip-bad",
        "strip",
        "STARTTLS answered BAD by the network",
        "starttls-stripping",
        "refuse",
        _SECURE,
        StripBad,
        refusal="starttls-not-offered",
        protocols=("imap",),
    ),
    Attack(
        "strip-wrongtag",
        "strip",
        "STARTTLS answered OK under another tag; the client's own answer never comes",
        "starttls-stripping",
        "refuse",
        _SECURE + "; it does not start TLS on another command's answer",
        StripWrongTag,
        refusal="starttls-not-offered",
        protocols=("imap",),
        check=_started_tls_on_a_non_answer,
    ),
    Attack(
        "strip-garbage",
        "strip",
        "STARTTLS answered with a line that is no answer of the protocol",
        "starttls-stripping",
        "refuse",
        _SECURE + "; it does not take garbage for an acceptance",
        StripGarbage,
        refusal="starttls-not-offered",
        check=_started_tls_on_a_non_answer,
    ),
)
