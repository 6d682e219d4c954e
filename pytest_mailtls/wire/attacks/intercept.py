"""Interception (``intercept``): the network terminates TLS with a certificate for the right host name, valid
dates, issued by another CA (the session PKI's ``untrusted-ca`` profile), and relays to the real server over a
TLS session of its own. A secure client refuses the certificate (``untrusted-certificate``); one that finishes
the handshake talks to the interceptor (``tls-interception``), and the session shows what it said inside
(``inner_dialogue``, ``inner_credentials``). Played on STARTTLS and implicit-TLS cells alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...policy import CertProfile, Mode
from .base import STARTTLS_MODES, Attack, TerminatingTap

if TYPE_CHECKING:
    from ..judge import WireView
    from .mitm import MITM

__all__ = ["INTERCEPT_ATTACKS"]


class Intercept(TerminatingTap):
    profile = CertProfile.UNTRUSTED_CA

    def bridge_ready(self, bridge: MITM) -> None:
        self.note("terminated TLS with a certificate for the right host name from another CA")


def _accepted(view: WireView) -> tuple[str, list[str]] | None:
    for s in view.sessions:
        if s.client_finished:
            said = f"; inside it sent {', '.join(s.inner_credentials)}" if s.inner_credentials else ""
            inside = [f"wire (inside TLS): C: {ln.text}" for ln in s.inner_dialogue if ln.dir == "client"][:6]
            version = s.server_hello.version if s.server_hello else "?"
            return "tls-interception", [
                f"wire: the client finished the handshake ({version}) with an interceptor presenting a certificate "
                f"from another CA{said}",
                *inside,
            ]
    return None


INTERCEPT_ATTACKS: tuple[Attack, ...] = (
    Attack(
        "intercept",
        "intercept",
        "TLS terminated by the network with a valid-looking certificate from another CA",
        "tls-interception",
        "refuse",
        "a secure client refuses the certificate and sends nothing to the interceptor",
        Intercept,
        refusal="untrusted-certificate",
        modes=(*STARTTLS_MODES, Mode.IMPLICIT),
        check=_accepted,
    ),
)
