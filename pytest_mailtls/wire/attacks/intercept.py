"""Interception (``intercept``): the network terminates TLS with a certificate for the right host name, valid
dates, issued by another CA (the session PKI's ``untrusted-ca`` profile), and relays to the real server over a
TLS session of its own. A secure client refuses the certificate (``untrusted-certificate``); one that finishes
the handshake talks to the interceptor (``tls-interception``), and the session shows what it said inside
(``inner_dialogue``, ``inner_credentials``). Played on STARTTLS and implicit-TLS cells alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...policy import CertProfile, Mode
from ..recorder import Link
from ..session import Session
from .base import STARTTLS_MODES, Attack, AttackTap, LineTap
from .inject import _inner
from .mitm import MITM

if TYPE_CHECKING:
    from ..judge import WireView

__all__ = ["INTERCEPT_ATTACKS"]


class Intercept(LineTap):
    def __init__(self, factory: AttackTap, link: Link) -> None:
        self.bridge: MITM | None = None
        super().__init__(factory, link)

    def tls_begins(self) -> None:
        self.note("terminated TLS with a certificate for the right host name from another CA")
        self.bridge = self.mitm(CertProfile.UNTRUSTED_CA)
        self.bridge.start()

    def client_tls(self, data: bytes) -> None:
        if self.bridge is not None:
            self.bridge.from_client(data)

    def server_tls(self, data: bytes) -> None:
        if self.bridge is not None:
            self.bridge.from_server(data)

    def closed(self, session: Session) -> None:
        if self.bridge is not None:
            _inner(session, self.bridge)


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
