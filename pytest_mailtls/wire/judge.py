"""From sessions to verdict material: what the client really offered, what crossed in clear, and why it failed.

Everything here reads :class:`~pytest_mailtls.wire.session.Session` records of one client run on one cell
and the cell itself; nothing asks the client. Three uses:

* :func:`offered_profile`: a client's capabilities from its own ClientHello (for clients that declare none);
* :func:`insecurity`: what the wire shows a careful client must never do (credentials or mail in clear
  on a port that offers TLS, application data over a certificate that must be refused, a session below
  the cell's secure offer), with the wire lines that show it;
* :func:`findings`: wire facts for the diagnosis, each naming the failure classes it supports.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..diagnose import CERT_CLASSES, Finding
from ..oracle import SECURE_VERSIONS, ClientProfile, _server_ciphers, _server_tls13_suites, cell_is_secure
from ..oracle import _expand as expand_ciphers
from ..policy import Cell, Mode
from .session import Session

__all__ = ["WireView", "findings", "insecurity", "offered_profile"]

_CERT_CLASSES = CERT_CLASSES
_STRONG = 6


def WireFinding(
    line: str, classes: tuple[str, ...] = (), weight: int = _STRONG, excludes: tuple[str, ...] = ()
) -> Finding:
    """A wire fact for ``diagnose(wire=...)``: strong (6) unless said otherwise."""
    return Finding(line, classes, weight, excludes)


@dataclass(frozen=True)
class WireView:
    """The sessions of one client run on one cell."""

    cell: Cell
    sessions: tuple[Session, ...]

    @property
    def main(self) -> Session | None:
        """The session that went furthest: the last one with a handshake, else the last one."""
        if not self.sessions:
            return None
        for s in reversed(self.sessions):
            if s.server_hello is not None:
                return s
        for s in reversed(self.sessions):
            if s.client_hello is not None:
                return s
        return self.sessions[-1]

    @property
    def hello(self) -> Session | None:
        return next((s for s in reversed(self.sessions) if s.client_hello is not None), None)

    @property
    def silent_at_tls(self) -> bool:
        """TLS was due (STARTTLS accepted, or an implicit-TLS connection) but the client sent no hello."""
        if not self.sessions or self.hello is not None:
            return False
        implicit = self.cell.mode is Mode.IMPLICIT
        return any(
            (s.starttls is not None and s.starttls.accepted) or (implicit and not s.not_tls) for s in self.sessions
        )

    @property
    def negotiated(self) -> tuple[str, str] | None:
        """Version and suite of the last session whose handshake completed."""
        for s in reversed(self.sessions):
            if s.handshake_completed and s.server_hello is not None:
                return s.server_hello.version, s.server_hello.cipher
        return None

    @property
    def tls(self) -> bool | None:
        """Whether the client's session ran over TLS (``None`` without any session)."""
        if not self.sessions:
            return None
        return any(s.handshake_completed for s in self.sessions)

    def summary(self) -> list[str]:
        return [s.summary() for s in self.sessions]

    def to_json(self) -> dict[str, object]:
        main = self.main
        negotiated = self.negotiated
        hello = self.hello.client_hello if self.hello is not None else None
        return {
            "connections": len(self.sessions),
            "summary": self.summary(),
            "negotiated": {"version": negotiated[0], "cipher": negotiated[1]} if negotiated else None,
            "starttls_offered": main.starttls_offered if main else None,
            "starttls": main.starttls.model_dump() if main and main.starttls else None,
            "credentials_in_clear": sorted({c for s in self.sessions for c in s.credentials}),
            "mail_in_clear": any(s.mail_commands for s in self.sessions),
            "message_accepted": next(
                (s.message_accepted for s in reversed(self.sessions) if s.message_accepted is not None), None
            ),
            "alerts": [a.model_dump() for s in self.sessions for a in s.alerts if a.description != "close_notify"],
            "handshake_completed": any(s.handshake_completed for s in self.sessions),
            "client_app_data": any(s.client_app_data for s in self.sessions),
            "client_hello": hello.model_dump() if hello else None,
            "sessions": [
                s.model_dump(exclude={"dialogue"}) | {"dialogue": [ln.text for ln in s.dialogue[:60]]}
                for s in self.sessions
            ],
        }


# --- the client's own offer ------------------------------------------------------------------


def offered_profile(base: ClientProfile, view: WireView, *, ok: bool | None = None) -> ClientProfile:
    """``base`` with what the client showed on this cell: the versions and TLS <= 1.2 suites of its ClientHello,
    and how it treats a port without TLS.

    Suites OpenSSL does not know (a JVM's names it never built, GREASE) cannot be served by any cell here
    and are left out; TLS 1.3 suites are implied by TLSv1.3 in the versions. On a plaintext port, a client
    that went on in clear without sending credentials did what an opportunistic client does, which is
    fine there (``ok``: whether it reported success).
    """
    profile = base
    cell = view.cell
    if cell.mode is Mode.PLAIN and view.sessions and view.hello is None:
        sent = any(s.credentials for s in view.sessions)
        went_on = any(s.mail_commands or s.credentials for s in view.sessions) or bool(ok)
        if went_on:
            profile = dataclasses.replace(profile, starttls="opportunistic", sends_credentials=sent)
    session = view.hello
    if session is None or session.client_hello is None:
        return profile
    hello = session.client_hello
    known = [c for c in hello.ciphers if not c.startswith("0x") and not c.startswith("TLS_") and "SCSV" not in c]
    return dataclasses.replace(
        profile,
        versions=tuple(hello.versions),
        disabled_versions=(),
        ciphers=":".join(known) if known else base.ciphers,
    )


# --- what must never happen --------------------------------------------------------------------


def insecurity(view: WireView, *, ok: bool) -> tuple[str, list[str]] | None:
    """A failure class and the wire lines, when the client did what a secure client never does on this cell.

    ``ok``: whether the client reported success (a version or suite below the secure offer only counts
    when the session went on).
    """
    cell = view.cell
    if cell.network is not None:
        hostile = _hostile_insecurity(view, ok=ok)
        if hostile is not None:
            return hostile
    offers_tls = cell.mode in (Mode.STARTTLS, Mode.STARTTLS_REQUIRED)
    for s in view.sessions:
        clear = s.credentials and s.client_hello is None and not s.not_tls
        if offers_tls and clear:
            answer = f" (the server answered {s.auth_answers[-1]!r})" if s.auth_answers else ""
            return "starttls-required", [
                f"wire: credentials crossed in clear ({', '.join(s.credentials)}) on a port that offers STARTTLS{answer}",
                *_dialogue_tail(s),
            ]
    for s in view.sessions:
        if offers_tls and s.mail_commands and s.client_hello is None:
            what = "and the server accepted the message" if s.message_accepted else "(MAIL/RCPT/DATA in clear)"
            return "starttls-required", [
                f"wire: the client sent mail in clear {what} on a port that offers STARTTLS"
                + ("" if s.starttls_offered is False else " (STARTTLS was advertised)"),
                *_dialogue_tail(s),
            ]
    cert = cell.cert
    if cert is not None and cert.failure is not None and cert.fault.must_refuse:
        for s in view.sessions:
            if s.client_app_data and s.server_hello is not None:
                return cert.failure, [
                    f"wire: the client finished the handshake ({s.server_hello.version} {s.server_hello.cipher}) over "
                    f"{_article(str(cert))} {cert} certificate and sent application data",
                ]
    negotiated = view.negotiated
    if ok and negotiated is not None and cell.policy is not None and negotiated[0] not in SECURE_VERSIONS:
        # TLSv1 and TLSv1.1 are deprecated (RFC 8996): a client that goes on at them has settled for too little,
        # whether or not the cell also offered better.
        version, cipher = negotiated
        secure_offer = [v for v in cell.policy.versions if v in SECURE_VERSIONS]
        offered = view.hello.offered_versions if view.hello else []
        where = f"although the cell offers {' '.join(secure_offer)}" if secure_offer else "(deprecated, RFC 8996)"
        return "protocol-version-mismatch", [
            f"wire: the session ran at {version} {cipher} {where} and the client went on",
            f"wire: the client offered {' '.join(offered) or '?'}",
        ]
    if ok and negotiated is not None and negotiated[0] != "TLSv1.3" and _null_suite(negotiated[1]):
        version, cipher = negotiated
        return "no-shared-cipher", [
            f"wire: the session ran at {version} {cipher}, a NULL-encryption suite: the mail crossed in clear "
            "inside TLS records and the client went on",
        ]
    policy = cell.policy
    if ok and negotiated is not None and policy is not None and policy.small_dh and _dhe_suite(negotiated[1]):
        version, cipher = negotiated
        if version != "TLSv1.3":
            return "weak-dh", [
                f"wire: the session ran at {version} {cipher} over the server's {policy.dh_bits}-bit DH group "
                "(Logjam-era, under 2048 bits) and the client went on",
            ]
    if ok and negotiated is not None and cell_is_secure(cell) and cell.policy is not None:
        version, cipher = negotiated
        weak = _weak_suite(cipher) if version != "TLSv1.3" else None
        if weak and not _client_offered_strong(view, cell, version):
            return "no-shared-cipher", [
                f"wire: the session ran at {version} {cipher} ({weak}) although the cell offers forward-secret AEAD "
                "suites; the client offered none of them",
            ]
    return None


#: Attack families whose point is to make the client go on in clear: doing so is the attack's vulnerability class.
_CLEAR_IS_THE_ATTACK = ("strip", "tamper", "intolerant")


def _hostile_insecurity(view: WireView, *, ok: bool) -> tuple[str, list[str]] | None:
    """What the client did wrong after a hostile network's attack or a server fault: the attack's own check first (a
    wrong-tag acceptance, injected lines acted on, an interceptor's certificate accepted, a downgraded retry, a
    success reported for mail the server refused), then credentials or mail in clear after a stripping, tampering
    or intolerant network."""
    from .attacks import attack_named

    attack = attack_named(view.cell.network or "")
    own = attack.insecurity(view, ok=ok)
    if own is not None:
        return own
    if attack.family not in _CLEAR_IS_THE_ATTACK:
        return None
    for s in view.sessions:
        if s.client_hello is None and not s.not_tls and (s.credentials or s.mail_commands):
            what = f"credentials ({', '.join(s.credentials)})" if s.credentials else "mail (MAIL/RCPT/DATA)"
            did = "; ".join(s.attack) or attack.description
            return attack.vulnerability, [
                f"wire: after the network {did}, the client sent {what} in clear",
                *_dialogue_tail(s),
            ]
    return None


def _hostile_findings(view: WireView) -> list[Finding]:
    """What the network did, as the reason a careful client refused (the attack's refusal class)."""
    from .attacks import attack_named

    attack = attack_named(view.cell.network or "")
    done = [event for s in view.sessions for event in s.attack]
    if attack.refusal is None or not done:
        return []
    return [WireFinding(f"{attack.actor} ({attack.name}): " + "; ".join(dict.fromkeys(done)), (attack.refusal,))]


def _suite(name: str) -> dict[str, Any] | None:
    """The local OpenSSL's entry for the TLS <= 1.2 suite ``name`` (at level 0, where NULL suites exist), or
    ``None``. Picked by name: a cipher string's expansion lists the TLS 1.3 suites first, whatever it names."""
    for c in expand_ciphers(name + ":@SECLEVEL=0", client=True):
        if c.get("name") == name and c.get("protocol") != "TLSv1.3":
            return c
    return None


def _null_suite(name: str) -> bool:
    info = _suite(name)
    return info is not None and info.get("symmetric") is None


def _dhe_suite(name: str) -> bool:
    info = _suite(name)
    return info is not None and info.get("kea") == "kx-dhe"


def _weak_suite(name: str) -> str | None:
    c = _suite(name)
    if c is None:
        return None
    if c.get("kea") not in ("kx-ecdhe", "kx-dhe", "kx-any"):
        return "no forward secrecy"
    if not c.get("aead"):
        return "no AEAD"
    return None


def _client_offered_strong(view: WireView, cell: Cell, version: str) -> bool:
    hello = view.hello.client_hello if view.hello else None
    if hello is None or cell.policy is None or cell.cert is None:
        return True
    server = {
        c["name"]
        for c in _server_ciphers(cell.policy, cell.cert, version)
        if c["kea"] in ("kx-ecdhe", "kx-dhe") and c["aead"]
    }
    return bool(server & set(hello.ciphers))


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _dialogue_tail(s: Session, n: int = 6) -> list[str]:
    return [f"wire: {'C' if ln.dir == 'client' else 'S'}: {ln.text}" for ln in s.dialogue[-n:]]


# --- why it failed -----------------------------------------------------------------------------


def findings(view: WireView) -> list[Finding]:
    """Wire facts that explain a failed run, strongest first; empty when no connection reached the cell."""
    cell = view.cell
    out: list[Finding] = []
    if not view.sessions:
        return out
    if cell.network is not None:
        out += _hostile_findings(view)
    s = view.main
    assert s is not None
    if s.upstream_error:
        out.append(WireFinding(f"the recorder could not reach the server: {s.upstream_error}", (), 0))
    if s.not_tls:
        out.append(
            WireFinding(
                f"the client sent plaintext ({(s.first_client_bytes or '').strip()!r}) to a port that speaks TLS from "
                "the first byte",
                ("wrong-tls-mode",),
            )
        )
        return out
    if s.tls_before_starttls:
        out.append(WireFinding("the client sent a TLS hello to a port that opens in plaintext", ("wrong-tls-mode",)))
        return out
    if s.starttls is not None and not s.starttls.accepted:
        out.append(
            WireFinding(
                f"the server answered {s.starttls.command} with {s.starttls.answer!r}", ("starttls-not-offered",)
            )
        )
        return out
    for rejection in s.rejections:
        if _says_tls_first(rejection):
            out.append(WireFinding(f"the server answered in clear: {rejection!r}", ("starttls-required",)))
            return out
    if s.client_hello is None:
        if s.starttls is not None and s.starttls.accepted:
            out.append(
                WireFinding(
                    "STARTTLS was accepted but the client sent no TLS hello (it had no version or suite to offer)",
                    ("protocol-version-mismatch", "no-shared-cipher"),
                    2,
                )
            )
        elif (cell.mode is Mode.PLAIN or s.starttls_offered is False) and not s.credentials and not s.mail_commands:
            out.append(
                WireFinding(
                    "the server did not offer STARTTLS and the client went no further", ("starttls-not-offered",)
                )
            )
        if (
            s.credentials
            and s.auth_answers
            and not s.auth_answers[-1].startswith(("2", "+OK"))
            and " OK" not in s.auth_answers[-1]
        ):
            out.append(WireFinding(f"the server refused the credentials: {s.auth_answers[-1]!r}", ("auth-failed",)))
        return out
    out += _handshake_findings(view, s)
    return out


def _says_tls_first(text: str) -> bool:
    upper = text.upper()
    return any(
        word in upper
        for word in (
            "STARTTLS",
            "PRIVACYREQUIRED",
            "LOGINDISABLED",
            "TLS REQUIRED",
            "ENCRYPTION REQUIRED",
            "SSL/TLS",
            "STLS",
        )
    )


def _handshake_findings(view: WireView, s: Session) -> list[Finding]:
    cell = view.cell
    hello = s.client_hello
    assert hello is not None
    policy = cell.policy
    offered = hello.versions
    out: list[Finding] = []
    server_alerts = [a for a in s.alerts if a.sender == "server" and a.description != "close_notify"]
    client_alerts = [a for a in s.alerts if a.sender == "client" and a.description != "close_notify"]
    if s.server_hello is None:
        said = f"the client offered {_span(offered)}"
        if policy is not None:
            said += f"; the cell accepts {_span(list(policy.versions))}"
        alert = server_alerts[0].description if server_alerts else None
        if alert:
            said += f"; the server answered with alert {alert}"
        common = [v for v in offered if policy is not None and v in policy.versions]
        if policy is not None and not common:
            out.append(WireFinding(said + ": no common version", ("protocol-version-mismatch",)))
        elif alert == "protocol_version":
            out.append(WireFinding(said, ("protocol-version-mismatch",)))
        elif policy is not None and cell.cert is not None and not _cipher_overlap(hello.ciphers, cell, common[-1]):
            out.append(WireFinding(said + f": no suite in common at {common[-1]}", ("no-shared-cipher",)))
        elif cell.auth.client_cert:
            out.append(WireFinding(said, ("client-certificate-required", "no-shared-cipher"), 2))
        elif alert in ("handshake_failure", "insufficient_security"):
            out.append(WireFinding(said, ("no-shared-cipher",), 2))
        else:
            out.append(WireFinding(said + "; the server sent no ServerHello", (), 0))
        return out
    chosen = f"the server chose {s.server_hello.version} {s.server_hello.cipher}"
    # A ServerHello means TLS started on a version and a suite both sides share.
    out.append(WireFinding(chosen, (), 0, excludes=("no-shared-cipher", "wrong-tls-mode", "starttls-not-offered")))
    if s.handshake_completed:
        # Certificates are checked inside the handshake: one both sides finished rules out every certificate fault.
        out.append(
            WireFinding("the TLS handshake completed", (), 0, excludes=(*CERT_CLASSES, "protocol-version-mismatch"))
        )
    refused = [a for a in server_alerts if not a.encrypted and a.description in _CLIENT_CERT_ALERTS]
    if refused and s.client_finished:
        out.append(
            WireFinding(
                f"{chosen}; the server refused the client with alert {refused[0].description}",
                ("client-certificate-required",),
            )
        )
        return out
    if not s.client_finished:
        readable = [a for a in client_alerts if not a.encrypted]
        cert = cell.cert
        if readable:
            desc = readable[0].description
            classes = {
                "certificate_expired": ("certificate-expired",),
                "certificate_revoked": ("certificate-revoked",),
                "unknown_ca": ("untrusted-certificate", "incomplete-chain"),
                "bad_certificate": _CERT_CLASSES,
                "certificate_unknown": _CERT_CLASSES,
                "unsupported_certificate": _CERT_CLASSES,
                "decrypt_error": ("weak-key-or-signature",),
                "handshake_failure": ("no-shared-cipher", "weak-key-or-signature"),
                "insufficient_security": ("weak-key-or-signature", "no-shared-cipher"),
                "protocol_version": ("protocol-version-mismatch",),
            }.get(desc, _CERT_CLASSES)
            policy = cell.policy
            small_dh = policy is not None and policy.small_dh and _dhe_suite(s.server_hello.cipher)
            if small_dh and desc in ("handshake_failure", "insufficient_security"):
                # The server's DHE key exchange over its small group is what an OpenSSL or JSSE client refuses here.
                classes = ("weak-dh",)
            weight = _STRONG if len(classes) == 1 else 2
            out.append(WireFinding(f"{chosen}; the client rejected it with alert {desc}", classes, weight))
        else:
            why = "with an encrypted alert" if client_alerts else "without a word"
            own = (cert.failure,) if cert is not None and cert.failure else _CERT_CLASSES
            out.append(
                WireFinding(
                    f"{chosen}; the client stopped after the server's certificate, {why}, before finishing the handshake",
                    own,
                    2 if len(own) == 1 else 1,
                )
            )
        return out
    if cell.auth.client_cert and (server_alerts or s.closed_by == "server"):
        what = server_alerts[0].description if server_alerts else "closed the connection"
        out.append(
            WireFinding(
                f"{chosen}; the client finished the handshake and the server then refused it ({what})"
                + ("" if s.client_certificate is not False else "; the client sent no certificate"),
                ("client-certificate-required",),
                4,
            )
        )
    return out


#: Alerts a server sends about the client's certificate (or its absence).
_CLIENT_CERT_ALERTS = frozenset(
    {"certificate_required", "bad_certificate", "unknown_ca", "certificate_unknown", "unsupported_certificate",
     "access_denied", "handshake_failure"}
)  # fmt: skip


def _cipher_overlap(offered: Sequence[str], cell: Cell, version: str) -> bool:
    assert cell.policy is not None and cell.cert is not None
    if version == "TLSv1.3":
        return bool(set(offered) & _server_tls13_suites(cell.policy))
    return bool(set(offered) & {c["name"] for c in _server_ciphers(cell.policy, cell.cert, version)})


def _span(versions: Sequence[str]) -> str:
    if not versions:
        return "no version"
    return versions[0] if len(versions) == 1 else f"{versions[0]}..{versions[-1]}"
