"""Intolerant middleboxes: a network that resets the connection on a ClientHello it does not like.

* ``intolerant-tls13``: a hello offering more than TLS 1.2 (supported_versions with TLS 1.3, or a legacy
  version above 1.2);
* ``intolerant-size``: a hello record longer than 255 bytes (the load balancers that hung on 256 to 511 bytes);
* ``intolerant-ext``: a hello carrying TLS 1.3 extensions (supported_versions, key_share, psk_key_exchange_modes,
  pre_shared_key, early_data, cookie, ...).

Other hellos pass, and the real server answers. What the field expects (RFC 8996, RFC 7507, RFC 8446 section
4.1.3): a client does not retry below its floor, so against such a box a careful client fails, or retries at a
version it accepts anyway (TLS 1.2, with TLS_FALLBACK_SCSV, and TLS 1.3's downgrade sentinel then protects it).
A client that retries at TLS 1.0/1.1, or gives up TLS and goes on in clear, is downgraded (``tls-downgrade``).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...policy import Mode, version_index
from ..recorder import Link
from ..tlsrecords import _extensions
from .base import STARTTLS_MODES, Attack, AttackTap, LineTap

if TYPE_CHECKING:
    from ..judge import WireView

__all__ = ["INTOLERANT_ATTACKS", "TLS13_EXTENSIONS"]

#: Extension types defined by TLS 1.3 (RFC 8446 section 4.2).
TLS13_EXTENSIONS: dict[int, str] = {
    41: "pre_shared_key",
    42: "early_data",
    43: "supported_versions",
    44: "cookie",
    45: "psk_key_exchange_modes",
    47: "certificate_authorities",
    48: "oid_filters",
    49: "post_handshake_auth",
    50: "signature_algorithms_cert",
    51: "key_share",
}


class Intolerant(LineTap):
    """Holds the client's first TLS record until it is whole, then passes it or resets the connection."""

    def __init__(self, factory: AttackTap, link: Link) -> None:
        self.first = bytearray()
        self.judged = False
        super().__init__(factory, link)

    def client_tls(self, data: bytes) -> None:
        if self.judged:
            self.link.to_server(data)
            return
        self.first += data
        if len(self.first) < 5:
            return
        length = int.from_bytes(self.first[3:5], "big")
        if len(self.first) < 5 + length:
            return
        self.judged = True
        why = self.refuses(bytes(self.first[5 : 5 + length])) if self.first[0] == 0x16 else None
        if why is not None:
            self.note(f"reset the connection on the client's ClientHello ({length} bytes: {why})")
            self.link.reset()
            return
        self.note(f"let the client's ClientHello pass ({length} bytes)")
        data, self.first = bytes(self.first), bytearray()
        self.link.to_server(data)

    def refuses(self, body: bytes) -> str | None:
        raise NotImplementedError


def _hello(body: bytes) -> tuple[int, list[int], list[tuple[int, bytes]]]:
    """``(legacy version, supported_versions, extensions)`` of a ClientHello handshake message."""
    msg = body[4:]
    legacy = int.from_bytes(msg[0:2], "big")
    pos = 2 + 32
    pos += 1 + msg[pos]
    pos += 2 + int.from_bytes(msg[pos : pos + 2], "big")
    pos += 1 + msg[pos]
    extensions = _extensions(msg, pos)
    supported: list[int] = []
    for ext_type, data in extensions:
        if ext_type == 43 and data:
            supported = [int.from_bytes(data[1 + i : 3 + i], "big") for i in range(0, data[0], 2)]
    return legacy, supported, extensions


class IntolerantTLS13(Intolerant):
    def refuses(self, body: bytes) -> str | None:
        legacy, supported, _ = _hello(body)
        if 0x0304 in supported or legacy > 0x0303:
            return "it offers TLSv1.3"
        return None


class IntolerantSize(Intolerant):
    def refuses(self, body: bytes) -> str | None:
        return "longer than 255 bytes" if len(body) > 255 else None


class IntolerantExt(Intolerant):
    def refuses(self, body: bytes) -> str | None:
        _, _, extensions = _hello(body)
        found = [TLS13_EXTENSIONS[t] for t, _ in extensions if t in TLS13_EXTENSIONS]
        return "TLS 1.3 extensions " + ", ".join(found) if found else None


def _downgraded(view: WireView) -> tuple[str, list[str]] | None:
    """After a reset, a later connection that offered only versions below TLS 1.2, or ran in clear with credentials
    or mail on a port that offers TLS."""
    reset_at = next((s.opened for s in view.sessions if any(e.startswith("reset") for e in s.attack)), None)
    if reset_at is None:
        return None
    first = next((s for s in view.sessions if s.client_hello is not None), None)
    floor = first.client_hello.versions[0] if first is not None and first.client_hello else "TLSv1.2"
    for s in view.sessions:
        if s.opened <= reset_at:
            continue
        hello = s.client_hello
        if hello is not None and hello.versions:
            top = hello.versions[-1]
            if version_index(top) < version_index("TLSv1.2"):
                return "tls-downgrade", [
                    f"wire: after the middlebox reset its hello, the client retried offering at most {top} "
                    f"(first offer from {floor}){' with TLS_FALLBACK_SCSV' if 'TLS_FALLBACK_SCSV' in hello.ciphers else ''}",
                ]
        if s.client_hello is None and (s.credentials or s.mail_commands):
            return "tls-downgrade", [
                "wire: after the middlebox reset its hello, the client went on in clear: "
                + ", ".join(s.credentials or s.mail_commands),
            ]
    return None


def _attack(name: str, what: str, tap: type[Intolerant]) -> Attack:
    return Attack(
        name,
        "intolerant",
        f"a middlebox that resets the connection on a ClientHello {what}",
        "tls-downgrade",
        "either",
        "a secure client fails, or retries at a version it accepts anyway (TLS 1.2+); never below, never in clear",
        tap,
        refusal="protocol-version-mismatch",
        modes=(*STARTTLS_MODES, Mode.IMPLICIT),
        check=_downgraded,
    )


INTOLERANT_ATTACKS: tuple[Attack, ...] = (
    _attack("intolerant-tls13", "offering more than TLS 1.2", IntolerantTLS13),
    _attack("intolerant-size", "longer than 255 bytes", IntolerantSize),
    _attack("intolerant-ext", "carrying TLS 1.3 extensions", IntolerantExt),
)
