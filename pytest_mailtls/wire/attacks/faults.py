"""Server faults (``fault-*``): a real server that fails at one stage of the session, played by the relay in front of
it, in clear and inside TLS.

Each fault answers one stage in the server's place with a temporary (4xx, ``NO [UNAVAILABLE]``, ``-ERR [SYS/TEMP]``)
or permanent error, cuts the connection in the middle of DATA, or slows the server down:

* SMTP: the greeting (``421``, ``554``), AUTH (``454``, ``535``), MAIL (``451``, ``550``), RCPT (``451``, ``550``),
  the end of DATA (``451``, ``554``), a reset after the first line of the message (``fault-data-disconnect``);
* IMAP: the greeting (``* BYE``), LOGIN/AUTHENTICATE, SELECT/EXAMINE and APPEND answered ``NO``;
* POP3: the greeting, USER, PASS (and APOP/AUTH) and RETR answered ``-ERR``;
* every protocol: ``fault-slow``, the server's bytes trickling to the client (a per-byte delay).

The command a fault answers never reaches the server, so what the server does next is what a server that refused
it does (a RCPT refused: the server's own ``554 no valid recipients`` after DATA; the end of DATA refused: the
server never gets the final dot and drops the message when the relay hangs up). On a STARTTLS cell the stages after
the upgrade are inside TLS: the relay terminates it with the cell's own certificate (the harness owns the session
CA, so the client trusts it; a real server that fails presents that certificate too) and rewrites the answers inside
(:class:`~pytest_mailtls.wire.attacks.mitm.MITM` with a plaintext tap). On an implicit-TLS cell every stage is inside.
The fault plays on every connection: a client that retries meets it again.

What a correct client shows (``expected`` ``either``: the client may never reach the stage, a one-shot client need
not retry): it reports the failure (a non-zero exit, an exception), and never reports success for mail the server
did not accept. The judge reads the wire: a client that reported success although the server never answered the end
of its DATA with ``2xx`` (the session's ``message_accepted``, ``inner_message_accepted``) lost the mail
(``lost-mail``); one that reported success after a refusal of another stage (a login, a mailbox, a message)
ignored the error (``ignored-error``); one that came back on new connections at once for a permanent refusal, or more
than :data:`RETRY_LIMIT` times for a temporary one, is a ``retry-storm`` whatever it reported.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...policy import Cell, CertProfile, Mode
from ..recorder import Link
from ..session import Session
from .base import STARTTLS_MODES, Attack, AttackTap, LineTap, TerminatingTap

if TYPE_CHECKING:
    from ..judge import WireView
    from .mitm import MITM

__all__ = ["FAULTS", "Fault", "RETRY_CLASS", "RETRY_LIMIT", "SLOW_BYTES", "SLOW_TICK"]

#: ``fault-slow``: the server's bytes reach the client ``SLOW_BYTES`` at a time every ``SLOW_TICK`` seconds (a
#: per-byte delay of 1 ms: about 1 kB/s; a TLS handshake with its certificate chain takes some 3 s).
SLOW_BYTES = 16
SLOW_TICK = 0.016

#: Stages whose refusal loses a message the client meant to send.
_MAIL_STAGES = ("mail", "rcpt", "data-end", "data-cut")
#: How many connections a client may open in one run on a temporary refusal before it is ``retry-storm`` (on a
#: permanent one, a second connection is).
RETRY_LIMIT = 3
#: The class of a client that comes back at once for what the server refused (any fault can show it).
RETRY_CLASS = "retry-storm"
#: The commands each stage answers (SMTP and POP3: the command word; IMAP: the command name after the tag).
_STAGE_VERBS: dict[str, tuple[str, ...]] = {
    "auth": ("AUTH",),
    "mail": ("MAIL",),
    "rcpt": ("RCPT",),
    "login": ("LOGIN", "AUTHENTICATE"),
    "select": ("SELECT", "EXAMINE"),
    "append": ("APPEND",),
    "user": ("USER",),
    "pass": ("PASS", "APOP", "AUTH"),
    "retr": ("RETR",),
}
_LITERAL_PLUS = re.compile(r"\{(\d+)\+\}$")


@dataclass(frozen=True)
class Fault(Attack):
    """A server fault: ``stage`` (``greeting``, ``auth``, ``mail``, ``rcpt``, ``data-end``, ``data-cut``, ``login``,
    ``select``, ``append``, ``user``, ``pass``, ``retr``, ``slow``) and the ``answer`` given there (``{tag}``: the
    client's IMAP tag)."""

    stage: str = ""
    answer: str = ""

    @property
    def temporary(self) -> bool:
        """A 4xx (or ``[UNAVAILABLE]``, ``[SYS/TEMP]``) answer: a client may retry later, never now in a loop."""
        return _temporary(self.answer)

    def applies(self, cell: Cell) -> bool:
        """As any attack; an AUTH fault only where the cell asks for AUTH (an open MX takes mail without it)."""
        return super().applies(cell) and (self.stage != "auth" or bool(cell.auth.mechanisms))

    @property
    def actor(self) -> str:
        return "the server's fault"

    @property
    def refused_remedy(self) -> str:
        return f"nothing to fix: the server failed ({self.name}) and the client reported the failure"

    def insecurity(self, view: WireView, *, ok: bool = True) -> tuple[str, list[str]] | None:
        """``retry-storm`` when the client came back at once for what the server refused (whatever it reported);
        ``lost-mail`` or ``ignored-error`` when it reported success that the wire contradicts."""
        if not view.sessions:
            return None
        # What the fault refused (a slow server refuses nothing: only a message that was not accepted counts there).
        played = [] if self.stage == "slow" else [event for s in view.sessions for event in s.attack]
        attempts = [s for s in view.sessions if s.attack] if played else []
        limit = RETRY_LIMIT if self.temporary else 1
        if len(attempts) > limit:
            kind = "temporary" if self.temporary else "permanent"
            return RETRY_CLASS, [
                f"wire: the server ({self.name}) refused on {len(attempts)} connections in one run: the client came "
                f"back at once for a {kind} refusal ({attempts[0].attack[0]})",
                *[f"wire: connection {i + 1}: {s.summary()}" for i, s in enumerate(attempts[:4])],
            ]
        if not ok:
            return None
        accepted = any(s.message_accepted or s.inner_message_accepted for s in view.sessions)
        tried_mail = any(_tried_mail(s) for s in view.sessions)
        if str(view.cell.protocol) == "smtp" and accepted:
            return None  # the message got through (on a retry): nothing was lost, no error ignored
        mail_lost = tried_mail or (played and self.stage in _MAIL_STAGES)
        if str(view.cell.protocol) == "smtp" and mail_lost:
            what = "; ".join(dict.fromkeys(played)) or self.description
            return "lost-mail", [
                "wire: the client reported success, but no server answer accepted its message (no 2xx after the "
                f"end of DATA on any connection): the server ({self.name}) {what}",
                *_tail(view, self.answer),
            ]
        if played:
            return "ignored-error", [
                f"wire: the client reported success although the server ({self.name}) "
                + "; ".join(dict.fromkeys(played)),
                *_tail(view, self.answer),
            ]
        return None


def _temporary(answer: str) -> bool:
    return answer[:1] == "4" or "[UNAVAILABLE]" in answer or "[SYS/TEMP]" in answer


def _tried_mail(s: Session) -> bool:
    """The client sent MAIL FROM on this connection, in clear or inside TLS."""
    return bool(s.mail_commands) or any(
        ln.dir == "client" and ln.text.upper().startswith("MAIL FROM") for ln in s.inner_dialogue
    )


def _tail(view: WireView, answer: str, n: int = 6) -> list[str]:
    """The dialogue from the client's command the fault answered (or the last lines), inside TLS where it was."""
    key = answer.split(" mailtls fault", 1)[0].replace("{tag} ", "")
    for s in reversed(view.sessions):
        for lines, where in ((s.inner_dialogue, "wire (inside TLS)"), (s.dialogue, "wire")):
            if not lines:
                continue
            hit = next((i for i, ln in enumerate(lines) if ln.dir == "server" and key and key in ln.text), None)
            shown = lines[max(0, hit - 1) : hit - 1 + n] if hit is not None else lines[-n:]
            return [f"{where}: {'C' if ln.dir == 'client' else 'S'}: {ln.text}" for ln in shown]
    return []


class FaultLines(LineTap):
    """The fault on a line dialogue: in clear, or inside TLS as the plaintext tap of the relay's TLS endpoint."""

    def __init__(self, factory: AttackTap, link: Link, *, inside: bool = False) -> None:
        super().__init__(factory, link, inside=inside)
        fault = self.attack
        assert isinstance(fault, Fault)
        self.fault = fault
        # After STARTTLS no greeting comes: the client speaks first.
        self.greeted = inside and self.cell.mode is not Mode.IMPLICIT
        self.queue: list[tuple[str, bytes | None]] = []  # SMTP: each command awaiting its answer, ours or the server's
        self.in_body = False  # SMTP: the client is sending the message
        self.body_bytes = 0
        self.detached = False  # the fault ended the dialogue with the server: the relay answers from here on
        self.swallow = 0  # IMAP: bytes of a LITERAL+ the client sends behind a refused APPEND

    # --- the client's lines ---------------------------------------------------------------------
    def client_line(self, raw: bytes, text: str) -> None:
        if self.swallow:
            self.swallow = max(0, self.swallow - len(raw))
            return
        if self.detached:
            self._detached(text)
            return
        if self.protocol == "smtp":
            self._smtp_client(raw, text)
            return
        words = text.split()
        if self.protocol == "imap":
            verb = words[1].upper() if len(words) > 1 else ""
            if verb in _STAGE_VERBS.get(self.fault.stage, ()):
                tag = words[0]
                self._play(f"{tag} {verb}", self.fault.answer.replace("{tag}", tag))
                literal = _LITERAL_PLUS.search(text)
                if literal is not None:
                    self.swallow = int(literal.group(1))
                return
        else:
            verb = words[0].upper() if words else ""
            if verb in _STAGE_VERBS.get(self.fault.stage, ()):
                self._play(verb, self.fault.answer)
                return
        self.link.to_server(raw)

    def _smtp_client(self, raw: bytes, text: str) -> None:
        stage = self.fault.stage
        if self.in_body:
            if text == ".":
                self.in_body = False
                if stage == "data-end":
                    self._answer(
                        self.fault.answer,
                        f"answered the end of DATA with {self.fault.answer!r}; the server never got the final dot "
                        f"({self.body_bytes} bytes of message withheld from delivery)",
                    )
                    self.detached = True
                    return
                self.queue.append(("data-end", None))
            elif stage == "data-cut":
                self.link.to_server(raw)
                self.note(
                    f"cut the connection (TCP reset) in the middle of DATA, after {self.body_bytes + len(raw)} bytes "
                    "of the message"
                )
                self.link.reset()
                return
            self.body_bytes += len(raw)
            self.link.to_server(raw)
            return
        verb = text.split(" ", 1)[0].upper()
        if verb in _STAGE_VERBS.get(stage, ()):
            self._play(verb, self.fault.answer)
            return
        self.queue.append((verb, None))
        self.link.to_server(raw)

    def _play(self, command: str, answer: str) -> None:
        """Answer ``command`` with the fault (it never reaches the server)."""
        self._answer(answer, f"answered the client's {command} with {answer!r} in the server's place")

    def _answer(self, answer: str, event: str) -> None:
        self.note(event)
        line = (answer + "\r\n").encode("latin-1")
        if self.protocol == "smtp":
            self.queue.append(("fault", line))
            self._flush_ours()
        else:
            self.link.to_client(line)

    def _detached(self, text: str) -> None:
        verb = text.split(" ", 1)[0].upper()
        if verb == "QUIT":
            self.link.to_client(b"221 2.0.0 Bye\r\n")
            self.link.close()
        elif verb in ("RSET", "NOOP"):
            self.link.to_client(b"250 2.0.0 Ok\r\n")
        else:
            self.link.to_client((self.fault.answer + "\r\n").encode("latin-1"))

    # --- the server's answers -------------------------------------------------------------------
    def server_reply(self, lines: list[bytes]) -> None:
        if not self.greeted:
            self.greeted = True
            if self.fault.stage == "greeting":
                self.note(f"greeted the client with {self.fault.answer!r} in the server's place and hung up")
                self.link.to_client((self.fault.answer + "\r\n").encode("latin-1"))
                self.link.close()
                return
        if self.detached:
            return
        if self.protocol == "smtp":
            verb = self.queue.pop(0)[0] if self.queue and self.queue[0][1] is None else ""
            if verb == "DATA" and lines[-1][:3] == b"354":
                self.in_body, self.body_bytes = True, 0
            self.link.to_client(b"".join(lines))
            self._flush_ours()
            return
        self.link.to_client(b"".join(lines))

    def _flush_ours(self) -> None:
        """Send the relay's own answers that are next in line (SMTP answers in the order of the commands)."""
        while self.queue and self.queue[0][1] is not None:
            line = self.queue.pop(0)[1]
            assert line is not None
            self.link.to_client(line)


class FaultTap(FaultLines, TerminatingTap):
    """The fault in clear, and inside TLS when TLS begins: the relay terminates it with the cell's own certificate
    and plays the fault on the plaintext inside."""

    @classmethod
    def presented_on(cls, cell: Cell) -> CertProfile:
        assert cell.cert is not None  # faults apply to TLS cells only
        return cell.cert

    def bridge_ready(self, bridge: MITM) -> None:
        bridge.announce = False
        bridge.plain = FaultLines(self.factory, bridge.plain_link, inside=True)


class SlowTap(LineTap):
    """``fault-slow``: the server's bytes, cleartext and TLS alike, trickle to the client."""

    def __init__(self, factory: AttackTap, link: Link, *, inside: bool = False) -> None:
        self.pending = bytearray()
        self.ticking = False
        super().__init__(factory, link, inside=inside)

    def from_client(self, link: Link, data: bytes) -> None:
        self.link.to_server(data)

    def hold_eof(self) -> bool:
        return bool(self.pending)

    def from_server(self, link: Link, data: bytes) -> None:
        if not self.ticking and not self.pending:
            self.note(f"slowed the server down: its bytes reach the client {SLOW_BYTES} every {SLOW_TICK} s", once=True)
        self.pending += data
        if not self.ticking:
            self.ticking = True
            self.link.later(SLOW_TICK, self._tick)

    def _tick(self) -> None:
        chunk = bytes(self.pending[:SLOW_BYTES])
        del self.pending[:SLOW_BYTES]
        self.link.to_client(chunk)
        if self.pending:
            self.link.later(SLOW_TICK, self._tick)
        else:
            self.ticking = False
            self.link.pass_eof()


_REPORT = "a correct client reports the failure (non-zero exit, an exception) and never reports success"
_MAIL = _REPORT + " for mail the server did not accept; it may retry later"
_TLS_MODES = (*STARTTLS_MODES, Mode.IMPLICIT)


def _fault(
    name: str, stage: str, answer: str, description: str, protocols: tuple[str, ...], refusal: str = "server-refused"
) -> Fault:
    mail = protocols == ("smtp",) and stage in (*_MAIL_STAGES, "greeting")
    outcome = (
        _MAIL if mail and _temporary(answer) else _REPORT + (" for mail the server did not accept" if mail else "")
    )
    return Fault(
        name,
        "fault",
        description,
        "lost-mail" if mail else "ignored-error",
        "either",
        outcome,
        FaultTap,
        refusal=refusal,
        protocols=protocols,
        modes=_TLS_MODES,
        stage=stage,
        answer=answer,
    )


_SMTP = ("smtp",)
_IMAP = ("imap",)
_POP3 = ("pop3",)

FAULTS: tuple[Fault, ...] = (
    _fault("fault-greeting-421", "greeting", "421 4.3.2 mailtls fault: service not available, closing channel",
           "greets with 421 (service not available) and hangs up", _SMTP),
    _fault("fault-greeting-554", "greeting", "554 5.3.2 mailtls fault: no SMTP service here",
           "greets with 554 (no service) and hangs up", _SMTP),
    _fault("fault-auth-454", "auth", "454 4.7.0 mailtls fault: temporary authentication failure",
           "answers AUTH with 454 (temporary authentication failure)", _SMTP, "auth-failed"),
    _fault("fault-auth-535", "auth", "535 5.7.8 mailtls fault: authentication credentials invalid",
           "answers AUTH with 535 (credentials invalid)", _SMTP, "auth-failed"),
    _fault("fault-mail-451", "mail", "451 4.3.0 mailtls fault: sender temporarily refused, try again later",
           "answers MAIL FROM with 451 (try again later)", _SMTP),
    _fault("fault-mail-550", "mail", "550 5.7.1 mailtls fault: sender refused",
           "answers MAIL FROM with 550 (sender refused)", _SMTP),
    _fault("fault-rcpt-451", "rcpt", "451 4.3.0 mailtls fault: recipient temporarily unavailable, try again later",
           "answers RCPT TO with 451 (try again later)", _SMTP),
    _fault("fault-rcpt-550", "rcpt", "550 5.1.1 mailtls fault: recipient refused",
           "answers RCPT TO with 550 (recipient refused)", _SMTP),
    _fault("fault-data-451", "data-end", "451 4.3.0 mailtls fault: message not accepted, try again later",
           "answers the end of DATA with 451 (try again later); the message is not delivered", _SMTP),
    _fault("fault-data-554", "data-end", "554 5.6.0 mailtls fault: message refused",
           "answers the end of DATA with 554 (message refused); the message is not delivered", _SMTP),
    _fault("fault-data-disconnect", "data-cut", "",
           "cuts the connection (TCP reset) after the first line of the message", _SMTP),
    _fault("fault-greeting-bye", "greeting", "* BYE [UNAVAILABLE] mailtls fault: server unavailable",
           "greets with BYE and hangs up", _IMAP),
    _fault("fault-login-no", "login", "{tag} NO [AUTHENTICATIONFAILED] mailtls fault: authentication failed",
           "answers LOGIN/AUTHENTICATE with NO [AUTHENTICATIONFAILED]", _IMAP, "auth-failed"),
    _fault("fault-select-no", "select", "{tag} NO [UNAVAILABLE] mailtls fault: mailbox temporarily unavailable",
           "answers SELECT/EXAMINE with NO [UNAVAILABLE]", _IMAP),
    _fault("fault-append-no", "append", "{tag} NO [OVERQUOTA] mailtls fault: quota exceeded",
           "answers APPEND with NO [OVERQUOTA]", _IMAP),
    _fault("fault-greeting-err", "greeting", "-ERR [SYS/TEMP] mailtls fault: server unavailable",
           "greets with -ERR and hangs up", _POP3),
    _fault("fault-user-err", "user", "-ERR mailtls fault: no such user here",
           "answers USER with -ERR", _POP3, "auth-failed"),
    _fault("fault-pass-err", "pass", "-ERR [AUTH] mailtls fault: authentication failed",
           "answers PASS (APOP, AUTH) with -ERR [AUTH]", _POP3, "auth-failed"),
    _fault("fault-retr-err", "retr", "-ERR [SYS/TEMP] mailtls fault: message temporarily unavailable",
           "answers RETR with -ERR [SYS/TEMP]", _POP3),
    Fault(
        "fault-slow",
        "fault",
        f"a slow server: its bytes reach the client {SLOW_BYTES} every {SLOW_TICK} s (1 ms a byte)",
        "lost-mail",
        "either",
        "a correct client waits and succeeds, or reports that it gave up; it never reports success for mail the "
        "server did not accept",
        SlowTap,
        modes=_TLS_MODES,
        stage="slow",
    ),
)  # fmt: skip
