"""The cleartext part of a mail session, command by command, as it crossed the wire.

:class:`Dialogue` is fed each direction's bytes (``feed("client", data)``) until TLS starts, and reads
them as SMTP, IMAP or POP3: capabilities (is STARTTLS offered?), the STARTTLS/STLS command and its
answer (after a positive answer it says :attr:`Dialogue.tls_from_here` and stops reading),
credentials sent in clear (masked in the transcript, named in :attr:`Dialogue.credentials`), MAIL/RCPT/DATA
and whether the server accepted the message (its answer to the end of DATA).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Literal

from .tlsrecords import looks_like_tls

__all__ = ["Dialogue", "Line", "StartTLSAnswer", "MAX_LINES"]

Side = Literal["client", "server"]
#: Lines kept in a transcript; the rest is counted.
MAX_LINES = 200
_MAX_LINE = 512


@dataclass
class Line:
    dir: Side
    t: float
    text: str


@dataclass
class StartTLSAnswer:
    command: str
    answer: str
    accepted: bool


_SMTP_AUTH = re.compile(r"^AUTH\s+(\S+)(\s+\S+)?", re.IGNORECASE)
_IMAP_CMD = re.compile(r"^(\S+)\s+(\S+)(.*)$")
_CLEAR_MECHS = {"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"}  # mechanisms whose secret can be read off the wire


@dataclass
class Dialogue:
    """One connection's cleartext exchange, read as ``protocol`` (``smtp``, ``imap`` or ``pop3``)."""

    protocol: str
    lines: list[Line] = field(default_factory=list)
    dropped: int = 0
    starttls_offered: bool | None = None  # None until the server stated its capabilities
    starttls: StartTLSAnswer | None = None
    tls_from_here: bool = False  # STARTTLS was accepted: what follows is TLS
    tls_before_starttls: bool = False  # the client opened with a TLS hello on a port that starts in plaintext
    credentials: list[str] = field(default_factory=list)  # what crossed in clear: "AUTH PLAIN", "LOGIN", ...
    auth_answers: list[str] = field(default_factory=list)  # the server's final answer to each AUTH/LOGIN/PASS
    mail_commands: list[str] = field(default_factory=list)
    message_accepted: bool | None = None
    rejections: list[str] = field(default_factory=list)  # 5xx / NO / BAD / -ERR answers, as sent
    after_starttls: list[str] = field(default_factory=list)  # client lines sent while STARTTLS awaited its answer
    _buffers: dict[str, bytearray] = field(default_factory=lambda: {"client": bytearray(), "server": bytearray()})
    _pending: str | None = None  # IMAP: what the tagged command in flight waits for ("starttls", "auth:TAG")
    #: SMTP and POP3 answer in order (pipelining included): what each command awaiting an answer was.
    _queue: list[str] = field(default_factory=lambda: ["greeting"])
    _sasl: bool = False  # the client is answering SASL challenges (masked)
    _in_data: bool = False  # the client is sending a message body
    _body_bytes: int = 0
    _starttls_tag: str = ""
    _in_capa: bool = False  # reading the lines of a POP3 CAPA answer
    _in_multi: bool = False  # reading another POP3 multi-line answer (LIST, RETR, ...)

    # --- feeding -------------------------------------------------------------------------
    def feed(self, side: Side, data: bytes) -> bytes:
        """Read ``data``; returns the bytes that follow a STARTTLS upgrade in this chunk (TLS), else ``b""``."""
        if self.tls_from_here or not data:
            return data if self.tls_from_here else b""
        buf = self._buffers[side]
        first_words = side == "client" and not buf and not any(ln.dir == "client" for ln in self.lines)
        if first_words and looks_like_tls(data):
            self.tls_before_starttls = True
            self._add(side, "(a TLS ClientHello before any STARTTLS)")
            self.tls_from_here = True
            return data
        buf += data
        while True:
            if self.tls_from_here:
                rest = bytes(buf)
                buf.clear()
                return rest
            index = buf.find(b"\n")
            if index < 0:
                if len(buf) > 65536:  # no line in sight: not a line protocol (binary or a TLS stream)
                    self._add(side, f"({len(buf)} bytes without a line end)")
                    buf.clear()
                return b""
            raw = bytes(buf[: index + 1])
            del buf[: index + 1]
            text = raw.decode("latin-1").rstrip("\r\n")
            if side == "client":
                self._client_line(text)
            else:
                self._server_line(text)

    def _add(self, side: Side, text: str) -> None:
        if len(self.lines) >= MAX_LINES:
            self.dropped += 1
            return
        self.lines.append(Line(side, time.time(), text[:_MAX_LINE]))

    # --- client --------------------------------------------------------------------------
    def _client_line(self, text: str) -> None:
        if self._in_data:
            if text == ".":
                self._in_data = False
                self._add("client", f"(message, {self._body_bytes} bytes)")
                self._add("client", ".")
                self._queue.append("data-end")
            else:
                self._body_bytes += len(text) + 2
            return
        if self._sasl:
            self._add("client", "***")
            return
        proto = self.protocol
        upper = text.upper()
        if self._starttls_tag and self.starttls is None:  # pipelined behind STARTTLS: a command-injection risk
            self.after_starttls.append(text[:_MAX_LINE])
        if proto == "smtp":
            self._smtp_command(text, upper)
        elif proto == "imap":
            self._imap_command(text)
        else:
            self._pop3_command(text, upper)

    def _smtp_command(self, text: str, upper: str) -> None:
        verb = upper.split(" ", 1)[0]
        if verb == "STARTTLS":
            self._queue.append("starttls")
            self._starttls_tag = "STARTTLS"
            self._add("client", text)
            return
        if verb == "AUTH":
            m = _SMTP_AUTH.match(text)
            mech = m.group(1).upper() if m else "?"
            self._note_credentials(f"AUTH {mech}", mech)
            self._add("client", f"AUTH {mech}" + (" ***" if m and m.group(2) else ""))
            self._queue.append("auth")
            self._sasl = True
            return
        if verb in ("MAIL", "RCPT", "DATA", "BDAT"):
            self.mail_commands.append(" ".join(upper.split()[:2]) if verb in ("MAIL", "RCPT") else verb)
        self._queue.append("data" if verb == "DATA" else "other")
        self._add("client", text)

    def _imap_command(self, text: str) -> None:
        m = _IMAP_CMD.match(text)
        if m is None:
            self._add("client", text)
            return
        tag, verb, rest = m.group(1), m.group(2).upper(), m.group(3)
        if verb == "STARTTLS":
            self._pending = "starttls"
            self._starttls_tag = tag
            self._add("client", text)
            return
        if verb == "LOGIN":
            self._note_credentials("LOGIN", "PLAIN")
            user = rest.split()[0] if rest.split() else ""
            self._add("client", f"{tag} LOGIN {user} ***")
            self._pending = f"auth:{tag}"
            return
        if verb == "AUTHENTICATE":
            mech = (rest.split() or ["?"])[0].upper()
            self._note_credentials(f"AUTHENTICATE {mech}", mech)
            self._add("client", f"{tag} AUTHENTICATE {mech}" + (" ***" if len(rest.split()) > 1 else ""))
            self._pending = f"auth:{tag}"
            self._sasl = True
            return
        if verb in ("APPEND",):
            self.mail_commands.append("APPEND")
        self._add("client", text)

    def _pop3_command(self, text: str, upper: str) -> None:
        words = text.split()
        verb = upper.split(" ", 1)[0]
        if verb == "STLS":
            self._queue.append("starttls")
            self._starttls_tag = "STLS"
            self._add("client", text)
            return
        if verb == "PASS":
            self._note_credentials("USER/PASS", "PLAIN")
            self._add("client", "PASS ***")
            self._queue.append("auth")
            return
        if verb == "APOP":
            self._note_credentials("APOP", "APOP")
            self._add("client", " ".join(words[:2]) + " ***")
            self._queue.append("auth")
            return
        if verb == "AUTH" and len(words) > 1:
            mech = words[1].upper()
            self._note_credentials(f"AUTH {mech}", mech)
            self._add("client", f"AUTH {mech}" + (" ***" if len(words) > 2 else ""))
            self._queue.append("auth")
            self._sasl = True
            return
        multi = (
            verb in ("CAPA", "RETR", "TOP")
            or (verb in ("LIST", "UIDL") and len(words) == 1)
            or (verb == "AUTH" and len(words) == 1)
        )
        self._queue.append("capa" if verb == "CAPA" else "multi" if multi else "other")
        self._add("client", text)

    def _note_credentials(self, what: str, mech: str) -> None:
        # Challenge-response mechanisms (CRAM-MD5, SCRAM, APOP) send no reusable secret; they still count as an
        # attempt in clear (the user name crosses), named as such.
        self.credentials.append(what if mech in _CLEAR_MECHS else f"{what} (challenge-response)")

    # --- server --------------------------------------------------------------------------
    def _server_line(self, text: str) -> None:
        self._add("server", text)
        proto = self.protocol
        if proto == "smtp":
            self._smtp_answer(text)
        elif proto == "imap":
            self._imap_answer(text)
        else:
            self._pop3_answer(text)

    def _smtp_answer(self, text: str) -> None:
        code, more = text[:3], text[3:4] == "-"
        word = text[4:].strip().upper()
        if code == "250" and (word == "STARTTLS" or word.startswith("STARTTLS ")):
            self.starttls_offered = True
        elif code == "250" and not more and self.starttls_offered is None and self._ehlo_seen():
            self.starttls_offered = False
        if more:
            return
        if code.startswith("5"):
            self.rejections.append(text)
        kind = self._queue.pop(0) if self._queue else "other"
        if kind == "starttls":
            accepted = code == "220"
            self.starttls = StartTLSAnswer(self._starttls_tag, text, accepted)
            self.tls_from_here = accepted
        elif kind == "auth":
            if code == "334":
                self._queue.insert(0, "auth")  # another challenge: the answer to AUTH is still to come
                return
            self._sasl = False
            self.auth_answers.append(text)
        elif kind == "data":
            if code == "354":
                self._in_data = True
                self._body_bytes = 0
            else:
                self.message_accepted = False
        elif kind == "data-end":
            self.message_accepted = code.startswith("2")

    def _ehlo_seen(self) -> bool:
        return any(ln.dir == "client" and ln.text.upper().startswith("EHLO") for ln in self.lines)

    def _imap_answer(self, text: str) -> None:
        upper = text.upper()
        if "CAPABILITY" in upper:
            self.starttls_offered = bool(re.search(r"\bSTARTTLS\b", upper)) or bool(self.starttls_offered)
        parts = text.split(" ", 2)
        tag = parts[0]
        status = parts[1].upper() if len(parts) > 1 else ""
        if status in ("NO", "BAD") or (tag == "*" and status == "BYE"):
            self.rejections.append(text)
        pending = self._pending or ""
        if text.startswith("+") and self._sasl:
            return  # a SASL challenge
        if pending == "starttls" and tag == self._starttls_tag:
            accepted = status == "OK"
            self.starttls = StartTLSAnswer(f"{tag} STARTTLS", text, accepted)
            self.tls_from_here = accepted
            self._pending = None
        elif pending.startswith("auth:") and tag == pending[5:]:
            self._sasl = False
            self.auth_answers.append(text)
            self._pending = None

    def _pop3_answer(self, text: str) -> None:
        if self._in_capa or self._in_multi:
            if text == ".":
                if self._in_capa and self.starttls_offered is None:
                    self.starttls_offered = False
                self._in_capa = self._in_multi = False
            elif self._in_capa and text.upper() == "STLS":
                self.starttls_offered = True
            return
        if text.startswith("-ERR"):
            self.rejections.append(text)
        kind = self._queue.pop(0) if self._queue else "other"
        ok = text.startswith("+OK")
        if text.startswith("+ ") or text == "+":
            self._queue.insert(0, kind)  # a SASL challenge
            return
        if kind == "starttls":
            self.starttls = StartTLSAnswer("STLS", text, ok)
            self.tls_from_here = ok
        elif kind == "auth":
            self._sasl = False
            self.auth_answers.append(text)
        elif kind == "capa":
            self._in_capa = ok
        elif kind == "multi":
            self._in_multi = ok
