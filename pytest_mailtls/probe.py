"""What a mail server really accepts: versions, ciphers, certificate chain, STARTTLS and AUTH.

``probe(host, port, protocol=..., mode=...)`` answers the first questions of
every mail TLS investigation in one call, in well under a second on loopback:

* **versions and suites**: questions, not handshakes. A question is a raw
  ClientHello (the local OpenSSL's own for that one version, built through a
  memory BIO, its suite list replaced: see :mod:`pytest_mailtls.hello`), sent
  after the protocol's STARTTLS opening (or at once in implicit mode); the
  ServerHello names the suite the server picked, an alert says it picks none,
  and the connection is closed there. Per version the first question offers
  every candidate (its pick is the server's preferred suite); then removal
  chains offer the rest, drop each pick and ask again until refused, splitting
  in two after each pick while many candidates are left, so the questions run
  side by side (``concurrency`` connections at most). Candidates: every suite
  the local OpenSSL has at that version (PSK and SRP need credentials and are
  left out) plus the 3DES and RC4 suites OpenSSL 3 no longer builds; TLS 1.3
  suites are asked like the others (Python's ``ssl`` cannot choose them). The
  list reads: preferred first, then the local OpenSSL's order;
* **certificate**: the chain as presented (leaf first), each certificate's
  names, validity, key and signature, and whether a client that trusts
  ``ca_file`` (default: the system store) and checks ``server_hostname``
  accepts it, with OpenSSL's verify message when not;
* **STARTTLS** offered and required (plaintext MAIL refused with 530 "must
  issue STARTTLS" in SMTP, ``LOGINDISABLED`` in IMAP, plaintext ``USER``
  refused in POP3), and the **AUTH** mechanisms advertised before and after TLS.

Every socket operation has a timeout and the whole probe a time budget.
Closed ports, non-mail services and the wrong mode fail with one clear line
(:class:`ProbeError`).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import importlib
import ipaddress
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .connect import (
    ImplicitTLSError,
    Lines,
    NoGreetingError,
    ProtocolError,
    WrongProtocolError,
    auth_mechanisms,
    capabilities,
    greet,
    guess_protocol,
    starttls,
    tls_handshake,
)
from .errors import MailTLSError
from .hello import Answer, HelloTemplate, ask, hello_template
from .policy import VERSIONS
from .tls import (
    LEGACY_SUITES,
    TLS13_SUITES,
    client_context,
    local_ciphers,
    null_encryption,
    presented_chain,
    set_version_range,
)

__all__ = [
    "ProbeError",
    "ProbeResult",
    "VersionResult",
    "CertificateInfo",
    "CertificateReport",
    "probe",
    "local_ciphers",
    "parse_target",
    "set_version_range",
    "port_defaults",
    "TLS13_SUITES",
    "AuthAttempt",
    "candidates",
]

_MODES = {"starttls": False, "starttls-required": False, "implicit": True}
_PROTOCOLS = ("smtp", "imap", "pop3")
# Words servers use when they refuse plaintext for want of TLS (Postfix, aiosmtpd, Dovecot, James, Exim).
_TLS_WORDS = ("starttls", "tls", "ssl", "encrypt", "secure", "privacyrequired", "plaintext")
_PROBE_SENDER = "mailtls-probe@mailtls.invalid"
_PROBE_NAME = "mailtls-probe.invalid"  # the EHLO name: the probe's connections are easy to find in server logs
_SPLIT = 5  # a removal chain splits in two after this many picks (see _Chains)
_OPENING_TRIES = 3  # a question whose connection cannot be opened is asked again (connection limits)

if TYPE_CHECKING:
    from cryptography import x509

#: What reading a certificate needs from cryptography (about 35 ms to import): loaded by a thread that
#: :func:`probe` starts first, while its connections wait on the network (see :func:`_preload_crypto`).
_CRYPTO_MODULES = (
    "cryptography.x509",
    "cryptography.hazmat.primitives.hashes",
    "cryptography.hazmat.primitives.asymmetric.dsa",
    "cryptography.hazmat.primitives.asymmetric.ec",
    "cryptography.hazmat.primitives.asymmetric.ed448",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.hazmat.primitives.asymmetric.rsa",
)


def _preload_crypto() -> None:
    """Import what :class:`CertificateInfo` needs in a daemon thread. A probe spends most of its time waiting
    for servers; the import fills that wait instead of delaying the first question. Whoever imports the same
    module meanwhile waits for it on the import system's own per-module lock, so nothing here needs a join."""
    if all(name in sys.modules for name in _CRYPTO_MODULES):
        return

    def load() -> None:
        for name in _CRYPTO_MODULES:
            importlib.import_module(name)

    threading.Thread(target=load, name="mailtls-probe-imports", daemon=True).start()


class ProbeError(MailTLSError):
    """The target cannot be probed: nothing listens, it is no mail server, or the mode is wrong."""


# --- results ------------------------------------------------------------------------------------


@dataclass
class VersionResult:
    """One protocol version: accepted or not, and the ciphers (suites) accepted with it."""

    accepted: bool
    ciphers: list[str] = field(default_factory=list)
    error: str | None = None  # why the all-ciphers handshake failed
    complete: bool = True  # False: the cipher list could not be enumerated fully (see ProbeResult.notes)

    def to_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "ciphers": list(self.ciphers),
            "error": self.error,
            "complete": self.complete,
        }


@dataclass(frozen=True)
class AuthAttempt:
    """One login really attempted in clear, before any STARTTLS, with the test user's credentials.

    ``method``: ``AUTH PLAIN`` (SMTP, POP3), ``LOGIN`` / ``AUTHENTICATE PLAIN`` (IMAP) or ``USER/PASS``
    (POP3); ``sent``: the commands as sent, credentials masked; ``answer``: the server's deciding reply;
    ``accepted``: logged in (True), refused (False), or the exchange broke off (None).
    """

    method: str
    sent: str
    answer: str
    accepted: bool | None

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "sent": self.sent, "answer": self.answer, "accepted": self.accepted}


@dataclass(frozen=True)
class CertificateInfo:
    """The properties of one certificate that decide whether clients accept it."""

    subject: str
    issuer: str
    sans: list[str]
    not_before: str
    not_after: str
    key_type: str  # rsa, ecdsa, ed25519, ed448, dsa
    key_size: int
    signature_algorithm: str  # e.g. sha256WithRSAEncryption, ecdsa-with-SHA256, sha1WithRSAEncryption
    signature_hash: str | None  # sha256, sha1, ... (None for ed25519/ed448)
    self_signed: bool
    sha256_fingerprint: str
    subject_key_id: str | None = None  # hex, from the extension (None: the certificate has none)
    authority_key_id: str | None = None  # hex: the key identifier of the issuer that signed it
    der: bytes = field(default=b"", repr=False, compare=False)  # as presented (not in the JSON)

    @classmethod
    def from_der(cls, der: bytes) -> CertificateInfo:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
        key_type, key_size = _key_kind(key)
        try:
            sans_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = [str(v) for v in sans_ext.get_values_for_type(x509.DNSName)]
            sans += [str(v) for v in sans_ext.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            sans = []
        try:
            digest = cert.signature_hash_algorithm
            sig_hash = digest.name if digest is not None else None
        except Exception:  # an algorithm cryptography does not know: report the OID name only
            sig_hash = None
        oid = cert.signature_algorithm_oid
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=sans,
            not_before=cert.not_valid_before_utc.isoformat(),
            not_after=cert.not_valid_after_utc.isoformat(),
            key_type=key_type,
            key_size=key_size,
            signature_algorithm=getattr(oid, "_name", None) or oid.dotted_string,
            signature_hash=sig_hash,
            self_signed=cert.subject == cert.issuer,
            sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(":"),
            subject_key_id=_key_id(cert, x509.SubjectKeyIdentifier),
            authority_key_id=_key_id(cert, x509.AuthorityKeyIdentifier),
            der=der,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "not_before": self.not_before,
            "not_after": self.not_after,
            "key_type": self.key_type,
            "key_size": self.key_size,
            "signature_algorithm": self.signature_algorithm,
            "signature_hash": self.signature_hash,
            "self_signed": self.self_signed,
            "sha256_fingerprint": self.sha256_fingerprint,
            "subject_key_id": self.subject_key_id,
            "authority_key_id": self.authority_key_id,
        }

    def expired(self, now: dt.datetime | None = None) -> bool:
        return dt.datetime.fromisoformat(self.not_after) < (now or dt.datetime.now(dt.UTC))

    def not_yet_valid(self, now: dt.datetime | None = None) -> bool:
        return dt.datetime.fromisoformat(self.not_before) > (now or dt.datetime.now(dt.UTC))


@dataclass
class CertificateReport:
    """The presented chain and whether a verifying client accepts it."""

    chain: list[CertificateInfo]  # as presented, leaf first
    verifies: bool | None  # None: the verifying handshake failed for another reason than the certificate
    verify_error: str | None
    verified_against: str  # the CA file, or "system trust store"
    verified_name: str  # the host name checked

    @property
    def leaf(self) -> CertificateInfo | None:
        return self.chain[0] if self.chain else None

    def to_json(self) -> dict[str, Any]:
        leaf = self.leaf.to_json() if self.leaf else {}
        return {
            **leaf,
            "chain": [c.to_json() for c in self.chain],
            "verifies": self.verifies,
            "verify_error": self.verify_error,
            "verified_against": self.verified_against,
            "verified_name": self.verified_name,
        }


@dataclass
class ProbeResult:
    """Everything :func:`probe` found; ``to_json()`` is the ``mailtls probe --json`` document."""

    host: str
    port: int
    protocol: str
    mode: str
    server_hostname: str
    banner: str = ""
    versions: dict[str, VersionResult] = field(default_factory=dict)
    preferred: dict[str, str] = field(default_factory=dict)
    certificate: CertificateReport | None = None
    starttls_offered: bool = False
    starttls_required: bool | None = None  # None: not observable (implicit mode)
    starttls_evidence: str = ""
    auth_before_tls: list[str] | None = None  # None: implicit mode, there is no "before"
    auth_after_tls: list[str] | None = None  # None: no TLS session was established
    auth_required: bool | None = None  # SMTP only: MAIL/RCPT refused until AUTH
    auth_attempts: list[AuthAttempt] | None = None  # logins tried in clear (None: implicit, or no credentials)
    client_cert_required: bool | None = None  # in the handshake; measured only when a client certificate was given
    client_cert_login_refused: bool | None = None  # login without one refused (servers that check at AUTH)
    client_cert_evidence: str = ""
    handshakes: int = 0
    elapsed: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def accepted_versions(self) -> list[str]:
        return [v for v in VERSIONS if self.versions.get(v, VersionResult(False)).accepted]

    def ciphers(self, version: str) -> list[str]:
        result = self.versions.get(version)
        return list(result.ciphers) if result else []

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "protocol": self.protocol,
            "mode": self.mode,
            "server_hostname": self.server_hostname,
            "banner": self.banner,
            "versions": {v: self.versions.get(v, VersionResult(False)).to_json() for v in VERSIONS},
            "preferred": dict(self.preferred),
            "certificate": self.certificate.to_json() if self.certificate else None,
            "starttls": {
                "offered": self.starttls_offered,
                "required": self.starttls_required,
                "evidence": self.starttls_evidence,
            },
            "auth": {
                "before_tls": self.auth_before_tls,
                "after_tls": self.auth_after_tls,
                "required": self.auth_required,
                "attempts_in_clear": None if self.auth_attempts is None else [a.to_json() for a in self.auth_attempts],
            },
            "client_certificate": {
                "required": self.client_cert_required,
                "login_refused_without": self.client_cert_login_refused,
                "evidence": self.client_cert_evidence,
            },
            "handshakes": self.handshakes,
            "elapsed_seconds": round(self.elapsed, 3),
            "notes": list(self.notes),
        }

    def render(self) -> str:
        """A human summary, what ``mailtls probe`` prints without ``--json``."""
        out = [f"{self.target} ({self.protocol}, {self.mode})" + (f"  {self.banner}" if self.banner else "")]
        if self.mode != "implicit":
            req = {True: "required", False: "optional", None: "?"}[self.starttls_required]
            offered = f"offered, {req}" if self.starttls_offered else "NOT offered"
            out.append(f"  STARTTLS: {offered}" + (f" ({self.starttls_evidence})" if self.starttls_evidence else ""))
        for version in VERSIONS:
            res = self.versions.get(version, VersionResult(False))
            if not res.accepted:
                out.append(f"  {version:<8} no" + (f"  ({res.error})" if res.error else ""))
                continue
            more = "" if res.complete else " (incomplete)"
            pref = self.preferred.get(version)
            out.append(f"  {version:<8} yes  {len(res.ciphers)} cipher(s){more}, preferred {pref}")
            out.extend(f"             {c}" for c in res.ciphers)
        cert = self.certificate
        if cert and cert.leaf:
            leaf = cert.leaf
            out.append(f"  certificate: {leaf.subject}  (issuer {leaf.issuer})")
            out.append(f"    names: {', '.join(leaf.sans) or '-'}")
            out.append(f"    valid {leaf.not_before} .. {leaf.not_after}")
            out.append(f"    key {leaf.key_type} {leaf.key_size} bits, signature {leaf.signature_algorithm}")
            out.append(f"    chain: {len(cert.chain)} certificate(s) presented")
            verdict = "verifies" if cert.verifies else f"does NOT verify: {cert.verify_error}"
            if cert.verifies is None:
                verdict = f"not verified: {cert.verify_error}"
            out.append(f"    {verdict} (against {cert.verified_against}, name {cert.verified_name})")
        before = "-" if self.auth_before_tls is None else (" ".join(self.auth_before_tls) or "none")
        after = "-" if self.auth_after_tls is None else (" ".join(self.auth_after_tls) or "none")
        out.append(f"  AUTH before TLS: {before}; after TLS: {after}")
        if self.auth_required is not None:
            out.append(f"  AUTH required to send: {'yes' if self.auth_required else 'no'}")
        for attempt in self.auth_attempts or ():
            state = {True: "ACCEPTED", False: "refused", None: "no answer"}[attempt.accepted]
            out.append(f"  login in clear, {attempt.method}: {state} ({attempt.sent} -> {attempt.answer})")
        if self.client_cert_required is not None:
            out.append(f"  client certificate required: {'yes' if self.client_cert_required else 'no'}")
        if self.client_cert_login_refused is not None:
            refused = "refused" if self.client_cert_login_refused else "ACCEPTED"
            out.append(f"  login without a client certificate: {refused} ({self.client_cert_evidence})")
        out.extend(f"  note: {n}" for n in self.notes)
        out.append(f"  {self.handshakes} handshakes in {self.elapsed:.2f} s")
        return "\n".join(out)


# --- command-line helpers -----------------------------------------------------------------------

_WELL_KNOWN = {
    25: ("smtp", "starttls"),
    587: ("smtp", "starttls"),
    465: ("smtp", "implicit"),
    143: ("imap", "starttls"),
    993: ("imap", "implicit"),
    110: ("pop3", "starttls"),
    995: ("pop3", "implicit"),
}


def parse_target(text: str) -> tuple[str, int]:
    """``"mail.example.com:587"`` or ``"[::1]:465"`` -> (host, port); ``ProbeError`` when malformed."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ProbeError(f"{text!r}: give the target as HOST:PORT, e.g. mail.example.com:587 or [::1]:465")
    return host.removeprefix("[").removesuffix("]"), int(port)


def port_defaults(port: int) -> tuple[str | None, str | None]:
    """(protocol, mode) a well-known mail port implies, e.g. 993 -> ("imap", "implicit"); else (None, None)."""
    return _WELL_KNOWN.get(port, (None, None))


# --- plaintext conversations ----------------------------------------------------------------------


@dataclass
class _Plain:
    """What the server says in plaintext (STARTTLS mode), or inside TLS after the handshake."""

    banner: str = ""
    capabilities: list[str] = field(default_factory=list)
    starttls: bool = False
    mechanisms: list[str] = field(default_factory=list)
    required: bool | None = None
    evidence: str = ""
    auth_required: bool | None = None


def _refused_for_tls(text: str) -> bool:
    lower = text.lower()
    return any(word in lower for word in _TLS_WORDS)


def _plain_survey(lines: Lines, protocol: str, recipient: str) -> _Plain:
    """Greeting, capabilities and whether plaintext use is refused, on a fresh plaintext connection."""
    plain = _Plain(banner=greet(lines, protocol))
    plain.capabilities = capabilities(lines, protocol, name=_PROBE_NAME)
    plain.starttls = any(c.upper().split()[0] in ("STARTTLS", "STLS") for c in plain.capabilities if c.strip())
    plain.mechanisms = auth_mechanisms(plain.capabilities)
    if protocol == "smtp":
        code, text = lines.smtp(f"MAIL FROM:<{_PROBE_SENDER}>")
        reply = f"{code} {' '.join(text)}"
        if code == 530 and _refused_for_tls(reply):
            plain.required, plain.evidence = True, f"plaintext MAIL refused: {reply}"
        else:
            plain.required, plain.evidence = False, f"plaintext MAIL answered {reply}"
            plain.auth_required = _after_mail(lines, code, reply, recipient)
        lines.send("QUIT")
    elif protocol == "imap":
        if any(c.upper() == "LOGINDISABLED" for c in plain.capabilities):
            plain.required, plain.evidence = True, "LOGINDISABLED advertised before TLS"
        else:
            plain.required, plain.evidence = False, "plaintext LOGIN not disabled (no LOGINDISABLED)"
        lines.send("p9 LOGOUT")
    else:
        lines.send("USER mailtls-probe")
        reply = lines.line()
        if reply.startswith("-ERR") and _refused_for_tls(reply):
            plain.required, plain.evidence = True, f"plaintext USER refused: {reply}"
        else:
            plain.required, plain.evidence = False, f"plaintext USER answered {reply[:60]}"
        lines.send("QUIT")
    return plain


def _after_mail(lines: Lines, code: int, reply: str, recipient: str) -> bool | None:
    """Given the reply to an unauthenticated MAIL: does the server want AUTH before it takes mail?

    True when MAIL or RCPT is refused for want of authentication, False when
    RCPT to postmaster is accepted, None when the answer says neither. No DATA
    is ever sent.
    """
    if code == 530 or (code >= 500 and "auth" in reply.lower()):
        return True
    if code >= 400:
        return None
    code, text = lines.smtp(f"RCPT TO:<{recipient}>")
    rcpt = f"{code} {' '.join(text)}".lower()
    lines.smtp("RSET")
    if 200 <= code < 300:
        return False
    if code == 530 or "auth" in rcpt or "access denied" in rcpt:
        return True
    return None


def _auth_required_smtp(lines: Lines, recipient: str) -> bool | None:
    """Inside TLS, unauthenticated: does the server refuse MAIL/RCPT until AUTH?"""
    code, text = lines.smtp(f"MAIL FROM:<{_PROBE_SENDER}>")
    return _after_mail(lines, code, f"{code} {' '.join(text)}", recipient)


def _plain_b64(username: str, password: str) -> str:
    return base64.b64encode(f"\0{username}\0{password}".encode()).decode()


def _imap_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _cleartext_logins(t: _Target, username: str, password: str) -> list[AuthAttempt]:
    """Every login the protocol has, attempted in clear (no STARTTLS), each on a fresh connection."""
    attempts: list[tuple[str, Callable[[Lines], tuple[str, str, bool]]]]
    b64 = _plain_b64(username, password)
    if t.protocol == "smtp":
        attempts = [("AUTH PLAIN", lambda lines: _smtp_auth_plain(lines, b64))]
    elif t.protocol == "imap":
        attempts = [
            ("LOGIN", lambda lines: _imap_login(lines, username, password)),
            ("AUTHENTICATE PLAIN", lambda lines: _imap_authenticate_plain(lines, b64)),
        ]
    else:
        attempts = [
            ("USER/PASS", lambda lines: _pop3_user_pass(lines, username, password)),
            ("AUTH PLAIN", lambda lines: _pop3_auth_plain(lines, b64)),
        ]
    return [_one_login(t, method, run) for method, run in attempts]


def _one_login(t: _Target, method: str, run: Callable[[Lines], tuple[str, str, bool]]) -> AuthAttempt:
    try:
        sock = t.connect()
    except ProbeError as exc:
        return AuthAttempt(method, method, str(exc), None)
    try:
        sock.settimeout(t.op_timeout())
        lines = Lines(sock)
        greet(lines, t.protocol)
        capabilities(lines, t.protocol, name=_PROBE_NAME)
        sent, answer, accepted = run(lines)
        with contextlib.suppress(OSError, ProtocolError):  # goodbye is best effort
            lines.send({"smtp": "QUIT", "imap": "p9 LOGOUT", "pop3": "QUIT"}[t.protocol])
        return AuthAttempt(method, sent, answer, accepted)
    except (OSError, ProtocolError) as exc:
        return AuthAttempt(method, method, f"no answer: {_reason(exc)}", None)
    finally:
        sock.close()


def _smtp_auth_plain(lines: Lines, b64: str) -> tuple[str, str, bool]:
    code, text = lines.smtp(f"AUTH PLAIN {b64}")
    sent = "AUTH PLAIN <credentials>"
    if code == 334:  # a server that ignores the initial response asks for it again
        code, text = lines.smtp(b64)
        sent += ", <credentials>"
    return sent, f"{code} {' '.join(text)}".strip(), code == 235


def _imap_login(lines: Lines, username: str, password: str) -> tuple[str, str, bool]:
    status, _ = lines.imap("p3", f"LOGIN {_imap_quote(username)} {_imap_quote(password)}")
    return f'p3 LOGIN {_imap_quote(username)} "***"', f"p3 {status}", status.upper().startswith("OK")


def _imap_authenticate_plain(lines: Lines, b64: str) -> tuple[str, str, bool]:
    lines.send("p4 AUTHENTICATE PLAIN")
    sent = "p4 AUTHENTICATE PLAIN"
    while True:
        line = lines.line()
        if line.startswith("+"):
            lines.send(b64)
            sent += ", <credentials>"
            continue
        if line.startswith("p4 "):
            return sent, line, line[3:].upper().startswith("OK")


def _pop3_user_pass(lines: Lines, username: str, password: str) -> tuple[str, str, bool]:
    lines.send(f"USER {username}")
    reply = lines.line()
    if not reply.startswith("+OK"):
        return f"USER {username}", reply, False
    lines.send(f"PASS {password}")
    reply = lines.line()
    return f"USER {username}, PASS ***", reply, reply.startswith("+OK")


def _pop3_auth_plain(lines: Lines, b64: str) -> tuple[str, str, bool]:
    lines.send("AUTH PLAIN")
    sent = "AUTH PLAIN"
    reply = lines.line()
    if reply.startswith("+") and not reply.startswith("+OK"):
        lines.send(b64)
        sent += ", <credentials>"
        reply = lines.line()
    return sent, reply, reply.startswith("+OK")


# --- the probe ------------------------------------------------------------------------------------


@dataclass
class _Target:
    host: str
    port: int
    protocol: str
    implicit: bool
    sni: str
    timeout: float
    deadline: float
    client_cert: str | None
    client_key: str | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    handshakes: int = 0

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def postmaster(self) -> str:
        """RFC 5321 requires every server to accept mail for postmaster: the least intrusive RCPT."""
        return f"postmaster@[{self.sni}]" if _is_ip(self.sni) else f"postmaster@{self.sni}"

    def count(self) -> None:
        with self.lock:
            self.handshakes += 1

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def op_timeout(self) -> float:
        return max(0.2, min(self.timeout, self.remaining()))

    def connect(self) -> socket.socket:
        try:
            return socket.create_connection((self.host, self.port), timeout=self.op_timeout())
        except ConnectionRefusedError:
            raise ProbeError(f"{self.target}: connection refused: nothing listens on port {self.port}") from None
        except socket.gaierror as exc:
            raise ProbeError(f"{self.host}: cannot resolve the host name ({exc.strerror})") from None
        except TimeoutError:
            raise ProbeError(
                f"{self.target}: no answer to the TCP connect within {self.timeout:g} s (host down or port filtered)"
            ) from None
        except OSError as exc:
            raise ProbeError(f"{self.target}: cannot connect: {exc.strerror or exc}") from None

    def opened(self) -> tuple[socket.socket, Lines | None, str]:
        """A connection where TLS starts next: (socket, its line reader, banner) after the
        protocol's STARTTLS opening, or right away in implicit mode (no reader, no banner yet)."""
        sock = self.connect()
        if self.implicit:
            return sock, None, ""
        try:
            lines = Lines(sock)
            banner = greet(lines, self.protocol)
            capabilities(lines, self.protocol, name=_PROBE_NAME)
            starttls(lines, self.protocol)
        except BaseException:
            sock.close()
            raise
        return sock, lines, banner

    def ask(self, template: HelloTemplate, suites: list[str]) -> Answer:
        """One question: which of ``suites`` the server picks at the template's version (ServerHello only).

        A connection that fails before the hello is tried again, up to :data:`_OPENING_TRIES` times,
        so a server briefly out of connection slots does not pass for one refusing the suites; after
        that the answer is ``unknown``.
        """
        why = ""
        for attempt in range(_OPENING_TRIES):
            if attempt:
                time.sleep(0.05 * attempt)
            try:
                sock = self.opened()[0]
            except (ProbeError, ProtocolError, OSError) as exc:
                why = _reason(exc)
                continue
            self.count()
            try:
                sock.settimeout(self.op_timeout())
                return ask(sock, template, suites)
            except OSError as exc:
                return Answer(refusal=f"the connection broke after the ClientHello: {_reason(exc)}")
            finally:
                sock.close()
        return Answer(refusal=f"could not open a connection to ask: {why}", unknown=True)

    def handshake(self, ctx: ssl.SSLContext) -> tuple[str, str]:
        """One full TLS handshake (after STARTTLS where needed); (version, cipher) or an exception."""
        self.count()
        result = tls_handshake(
            self.host,
            self.port,
            protocol=self.protocol,
            implicit=self.implicit,
            context=ctx,
            server_hostname=self.sni,
            timeout=self.op_timeout(),
        )
        return result.version, result.cipher

    def open_tls(self, ctx: ssl.SSLContext) -> tuple[ssl.SSLSocket, Lines, str]:
        """A TLS session ready for commands: (socket, line reader, banner)."""
        sock, _, banner = self.opened()
        try:
            self.count()
            tls = ctx.wrap_socket(sock, server_hostname=self.sni)
        except BaseException:
            sock.close()
            raise
        lines = Lines(tls)
        if self.implicit:
            try:
                banner = greet(lines, self.protocol)
            except BaseException:
                tls.close()
                raise
        return tls, lines, banner


def probe(
    host: str,
    port: int,
    *,
    protocol: str,
    mode: str,
    server_hostname: str | None = None,
    ca_file: str | None = None,
    client_cert: str | None = None,
    client_key: str | None = None,
    timeout: float = 5.0,
    concurrency: int = 8,
    budget: float = 120.0,
    username: str | None = None,
    password: str | None = None,
) -> ProbeResult:
    """Probe one mail port; see the module docstring for what is measured and how.

    ``mode`` is ``starttls`` or ``implicit`` (``starttls-required`` is accepted
    as ``starttls``). ``server_hostname`` is sent as SNI and checked in the
    certificate (default: ``host``). ``client_cert``/``client_key`` are
    presented on every handshake (mutual TLS); one extra handshake without them
    tells whether the server requires one. ``timeout`` bounds each network
    operation, ``budget`` the whole probe; ``concurrency`` bounds parallel
    connections. With ``username`` and ``password`` (STARTTLS mode), every
    login the protocol has is really attempted in clear, before STARTTLS, each
    on its own connection (``auth_attempts``): what EHLO/CAPABILITY/CAPA
    advertise is a claim, the answer to a login is the fact. Raises :class:`ProbeError` for a closed port, a non-mail
    service or the wrong mode.
    """
    if protocol not in _PROTOCOLS:
        raise ProbeError(f"unknown protocol {protocol!r}; choose from {', '.join(_PROTOCOLS)}")
    if mode not in _MODES:
        raise ProbeError(f"unknown mode {mode!r}; choose starttls or implicit")
    started = time.monotonic()
    _preload_crypto()
    implicit = _MODES[mode]
    t = _Target(
        host=host,
        port=port,
        protocol=protocol,
        implicit=implicit,
        sni=server_hostname or host,
        timeout=timeout,
        deadline=started + budget,
        client_cert=client_cert,
        client_key=client_key,
    )
    result = ProbeResult(
        host=host, port=port, protocol=protocol, mode="implicit" if implicit else "starttls", server_hostname=t.sni
    )
    recipient = t.postmaster

    if not implicit:
        plain = _survey_or_explain(t)
        result.banner = plain.banner
        result.starttls_offered = plain.starttls
        result.starttls_required = plain.required if plain.starttls else False
        result.starttls_evidence = plain.evidence
        result.auth_before_tls = plain.mechanisms
        result.auth_required = plain.auth_required if protocol == "smtp" else None
        if not plain.starttls:
            if username is not None and password is not None:
                result.auth_attempts = _cleartext_logins(t, username, password)
            result.versions = {v: VersionResult(False, error="STARTTLS not offered") for v in VERSIONS}
            result.notes.append("STARTTLS is not offered: no TLS to probe on this port")
            result.elapsed = time.monotonic() - started
            return result
    else:
        t.connect().close()  # closed port, DNS, filtered: clear errors before any TLS

    with ThreadPoolExecutor(max_workers=max(2, concurrency), thread_name_prefix="mailtls-probe") as pool:
        session = pool.submit(_session, t, ca_file, recipient)
        logins = (
            pool.submit(_cleartext_logins, t, username, password)
            if not implicit and username is not None and password is not None
            else None
        )
        result.versions, result.preferred = _versions_and_ciphers(t, pool, session, result.notes)
        cert_needed = pool.submit(_client_cert_required, t, result.accepted_versions) if client_cert else None
        try:
            s = session.result(timeout=max(1.0, t.remaining()))
        except (OSError, ssl.SSLError, ProtocolError, TimeoutError, ProbeError) as exc:
            if implicit:
                _check_implicit(t, exc)  # raises for a port that is no implicit-TLS mail server
            s = _Session()
            if result.accepted_versions:
                result.notes.append(f"could not read the certificate chain and capabilities: {_reason(exc)}")
        if s.verifies is None:  # the careful client's first try failed for another reason: ask as it would now
            s.verifies, s.verify_error = _verify_certificate(t, ca_file, result.versions, result.notes)
        if implicit:
            result.banner = s.banner
        if logins is not None:
            result.auth_attempts = logins.result(timeout=max(1.0, t.remaining()))
        if result.accepted_versions:
            result.auth_after_tls = auth_mechanisms(s.capabilities)
            if protocol == "smtp" and s.auth_required is not None:
                result.auth_required = s.auth_required
            result.certificate = CertificateReport(
                chain=[CertificateInfo.from_der(der) for der in s.chain],
                verifies=s.verifies,
                verify_error=s.verify_error,
                verified_against=ca_file or "system trust store",
                verified_name=t.sni,
            )
        if cert_needed is not None:
            result.client_cert_required = cert_needed.result(timeout=max(1.0, t.remaining()))
    result.handshakes = t.handshakes
    result.elapsed = time.monotonic() - started
    return result


def _survey_or_explain(t: _Target) -> _Plain:
    """The plaintext survey, turning every way it can fail into one clear ``ProbeError``."""
    sock = t.connect()
    try:
        sock.settimeout(t.op_timeout())
        return _plain_survey(Lines(sock), t.protocol, t.postmaster)
    except ImplicitTLSError:
        raise ProbeError(
            f"{t.target}: the server answered with TLS: it speaks implicit TLS, try --mode implicit"
        ) from None
    except WrongProtocolError as exc:
        raise ProbeError(_wrong_protocol(t, exc.greeting)) from None
    except NoGreetingError:
        if _tls_works(t):
            raise ProbeError(
                f"{t.target}: no plaintext greeting, but a TLS handshake works: "
                "the server speaks implicit TLS, try --mode implicit"
            ) from None
        raise ProbeError(
            f"{t.target}: no {t.protocol.upper()} greeting within {t.timeout:g} s: not a mail server "
            "(or one that waits for the client to speak first)"
        ) from None
    except (ProtocolError, OSError) as exc:
        raise ProbeError(f"{t.target}: not a working {t.protocol.upper()} server: {_reason(exc)}") from None
    finally:
        sock.close()


def _wrong_protocol(t: _Target, greeting: str) -> str:
    other = guess_protocol(greeting)
    shown = greeting[:60]
    if other and other != t.protocol:
        return f"{t.target}: this is an {other.upper()} server (it greeted {shown!r}): try --protocol {other}"
    return f"{t.target}: not an {t.protocol.upper()} server: it greeted {shown!r}"


def _tls_works(t: _Target) -> bool:
    try:
        with socket.create_connection((t.host, t.port), timeout=t.op_timeout()) as sock:
            ctx = client_context(client_cert=t.client_cert, client_key=t.client_key)
            with ctx.wrap_socket(sock, server_hostname=t.sni):
                return True
    except (OSError, ssl.SSLError):
        return False


def _check_implicit(t: _Target, failure: BaseException) -> None:
    """Implicit mode, the permissive session failed with ``failure``: raise ``ProbeError`` saying why in
    one line, unless the server speaks TLS and only refused this offer (the results say more)."""
    if isinstance(failure, WrongProtocolError):
        raise ProbeError(_wrong_protocol(t, failure.greeting) + " (after the TLS handshake)")
    if isinstance(failure, TimeoutError):
        failure = TimeoutError("no answer to the TLS ClientHello")
    if isinstance(failure, ssl.SSLError) and "ALERT" in (failure.reason or ""):
        return  # the server sent a TLS alert: it speaks TLS, it just refused this offer (e.g. no client cert)
    # The handshake failed: a plaintext greeting means the wrong mode; silence means not a mail server.
    greeting = _sniff(t)
    if greeting is not None:
        other = guess_protocol(greeting)
        if other is not None:
            hint = "try --mode starttls" if other == t.protocol else f"try --protocol {other} --mode starttls"
            raise ProbeError(f"{t.target}: the server answered in plaintext ({greeting[:40]!r}): {hint}")
        raise ProbeError(f"{t.target}: not a mail server: it sent {greeting[:60]!r} in plaintext")
    if isinstance(failure, ssl.SSLError) and not _garbled(failure):
        return  # a TLS server that dislikes our permissive offer: the per-version answers say more
    raise ProbeError(
        f"{t.target}: no TLS handshake and no plaintext greeting: not an implicit-TLS mail server ({_reason(failure)})"
    )


def _garbled(exc: ssl.SSLError) -> bool:
    # Reasons OpenSSL gives when the peer's bytes are not TLS at all.
    return (exc.reason or "") in {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "UNEXPECTED_EOF_WHILE_READING",
    } or isinstance(exc, ssl.SSLEOFError)


def _sniff(t: _Target) -> str | None:
    """The first line a server says unprompted, within a short wait, or None."""
    try:
        with socket.create_connection((t.host, t.port), timeout=t.op_timeout()) as sock:
            sock.settimeout(min(t.op_timeout(), 2.0))
            data = sock.recv(512)
    except (OSError, TimeoutError):
        return None
    if not data:
        return None
    return data.split(b"\n", 1)[0].rstrip(b"\r").decode("utf-8", "replace")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError):
        text = str(exc.args[1]) if len(exc.args) > 1 else str(exc)
        return text.split(" (_ssl.c:")[0]
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# --- versions and ciphers -------------------------------------------------------------------------


def candidates(version: str) -> list[str]:
    """The suites the probe asks about at ``version``: every one the local OpenSSL can offer there
    (PSK and SRP need credentials and are left out), and below TLS 1.3 also the suites OpenSSL 3 no
    longer builds (3DES, RC4), whose numbers and names are known."""
    names = list(local_ciphers(version))
    if version != "TLSv1.3":
        names += [n for n in LEGACY_SUITES if n not in names]
    return names


def _versions_and_ciphers(
    t: _Target, pool: ThreadPoolExecutor, session: Future[_Session], notes: list[str]
) -> tuple[dict[str, VersionResult], dict[str, str]]:
    """Per version: offer every candidate (the pick is the preferred suite), then removal chains over the
    rest (:class:`_Chains`), then one full handshake per accepted version. Every question is a ClientHello
    answered by a ServerHello (or a HelloRetryRequest) or an alert."""
    sni = None if _is_ip(t.sni) else t.sni
    offered = {v: candidates(v) for v in VERSIONS}
    templates = {v: hello_template(v, sni) for v in VERSIONS}
    # TLS 1.3 without key shares: the server answers with a HelloRetryRequest naming its suite and skips
    # its key exchange and signature. A server that refuses that hello (other than for the version) is
    # asked again with the shares.
    with_shares = templates["TLSv1.3"]
    templates["TLSv1.3"] = with_shares.without_key_shares()
    first = {v: pool.submit(t.ask, templates[v], offered[v]) for v in VERSIONS}
    versions: dict[str, VersionResult] = {}
    preferred: dict[str, str] = {}
    chains = _Chains(t, pool)
    for v in VERSIONS:
        answer = first[v].result(timeout=max(1.0, t.remaining() + 1))
        if v == "TLSv1.3" and not answer.accepted and not answer.unknown and not answer.no_such_version:
            templates[v] = with_shares
            answer = t.ask(with_shares, offered[v])
        if answer.accepted and answer.suite in offered[v]:
            versions[v] = VersionResult(True, [str(answer.suite)])
            preferred[v] = str(answer.suite)
            chains.start(v, templates[v], [c for c in offered[v] if c != answer.suite])
        else:
            versions[v] = VersionResult(False, error=answer.refusal or f"the server chose {answer.suite}, not offered")
            versions[v].complete = not answer.unknown

    # A ServerHello is not a completed handshake (a client certificate may be missing, the server's key
    # exchange unusable): one real handshake per accepted version settles that. The highest one is the
    # version the session reaches: its handshake counts, unless it failed or ended elsewhere.
    def confirm(version: str) -> Future[tuple[bool, str]]:
        ctx = client_context(version, client_cert=t.client_cert, client_key=t.client_key)
        return pool.submit(_attempt, t, ctx)

    top = max(preferred, key=VERSIONS.index, default=None)
    confirmed = {v: confirm(v) for v in preferred if v != top}
    found, incomplete = chains.collect()
    try:
        reached = session.result(timeout=max(1.0, t.remaining())).version
    except (OSError, ssl.SSLError, ProtocolError, TimeoutError, ProbeError):
        reached = None
    if top is not None and reached != top:
        confirmed[top] = confirm(top)
    for v, future in confirmed.items():
        ok, why = future.result(timeout=max(1.0, t.remaining() + 1))
        if not ok:
            error = f"the server chose {preferred.pop(v)}, then the handshake failed: {why}"
            versions[v] = VersionResult(False, error=error)
    for v in preferred:
        order = {name: i for i, name in enumerate(offered[v])}
        versions[v].ciphers = sorted(
            {preferred[v], *found.get(v, ())}, key=lambda c: (c != preferred[v], order.get(c, len(order)))
        )
        if v in incomplete:
            versions[v].complete = False
    if incomplete or any(not r.complete for r in versions.values()):
        notes.append("some questions went unanswered (time budget, or no connection): some lists are incomplete")
    return versions, preferred


def _attempt(t: _Target, ctx: ssl.SSLContext) -> tuple[bool, str]:
    """A full handshake: (True, cipher) or (False, why)."""
    try:
        return True, t.handshake(ctx)[1]
    except (ssl.SSLError, OSError, ProtocolError) as exc:
        return False, _reason(exc)


class _Chains:
    """Removal chains: offer the candidates, drop the one chosen, repeat until refused. A chain that made
    ``_SPLIT`` picks and has at least ``2 * _SPLIT`` candidates left hands half of them to a new chain: a
    server that accepts few suites costs one refusal per version, one that accepts many is asked side by
    side."""

    def __init__(self, t: _Target, pool: ThreadPoolExecutor) -> None:
        self.t, self.pool = t, pool
        self.lock = threading.Lock()
        self.pending: list[tuple[str, Future[tuple[list[str], bool]]]] = []

    def start(self, version: str, template: HelloTemplate, remaining: list[str]) -> None:
        if remaining:
            future = self.pool.submit(self._run, version, template, remaining)
            with self.lock:
                self.pending.append((version, future))

    def _run(self, version: str, template: HelloTemplate, remaining: list[str]) -> tuple[list[str], bool]:
        found: list[str] = []
        picks = 0  # since this chain last split
        while remaining:
            if self.t.remaining() <= 0:
                return found, False
            answer = self.t.ask(template, remaining)
            if not answer.accepted or answer.suite not in remaining:
                return found, not answer.unknown
            found.append(str(answer.suite))
            remaining = [c for c in remaining if c != answer.suite]
            picks += 1
            if picks >= _SPLIT and len(remaining) >= 2 * _SPLIT:
                self.start(version, template, remaining[1::2])
                remaining, picks = remaining[0::2], 0
        return found, True

    def collect(self) -> tuple[dict[str, list[str]], set[str]]:
        """Wait for every chain, those started meanwhile included: (found per version, incomplete versions)."""
        found: dict[str, list[str]] = {}
        incomplete: set[str] = set()
        while True:
            with self.lock:
                if not self.pending:
                    return found, incomplete
                version, future = self.pending.pop(0)
            names, complete = future.result(timeout=max(1.0, self.t.remaining() + 1))
            found.setdefault(version, []).extend(names)
            if not complete:
                incomplete.add(version)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


# --- certificate, capabilities after TLS, client certificates ---------------------------------------


@dataclass
class _Session:
    """One TLS session's findings: the presented chain, banner, capabilities, AUTH-required, and the
    certificate verdict when the session settled it (``verifies`` None: not settled)."""

    chain: list[bytes] = field(default_factory=list)
    banner: str = ""
    capabilities: list[str] = field(default_factory=list)
    auth_required: bool | None = None
    version: str | None = None
    verifies: bool | None = None
    verify_error: str | None = None


def _session(t: _Target, ca_file: str | None, recipient: str) -> _Session:
    """The session a careful client opens (trust ``ca_file``, check the name, default security level and
    versions, the client certificate if any), read for the chain, capabilities and AUTH-required. When
    the certificate fails verification, a permissive session reads them instead; when the careful
    handshake fails for another reason, the verdict waits for the accepted suites
    (:func:`_verify_certificate`)."""
    careful = _careful_context(t, ca_file)
    try:
        found = _converse(t, careful, recipient)
        found.verifies = True
        return found
    except ssl.SSLCertVerificationError as exc:
        verdict: tuple[bool | None, str | None] = (False, str(exc.verify_message))
    except (ssl.SSLError, OSError, ProtocolError, ProbeError):
        verdict = (None, None)
    found = _converse(t, client_context(client_cert=t.client_cert, client_key=t.client_key), recipient)
    found.verifies, found.verify_error = verdict
    return found


def _converse(t: _Target, ctx: ssl.SSLContext, recipient: str) -> _Session:
    tls, lines, banner = t.open_tls(ctx)
    with tls:
        found = _Session(presented_chain(tls), banner, capabilities(lines, t.protocol, name=_PROBE_NAME))
        found.version = tls.version()
        if t.protocol == "smtp":
            found.auth_required = _auth_required_smtp(lines, recipient)
        with contextlib.suppress(OSError):  # goodbye is best effort
            lines.send({"smtp": "QUIT", "imap": "p9 LOGOUT", "pop3": "QUIT"}[t.protocol])
    return found


def _careful_context(t: _Target, ca_file: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(ca_file)
    else:
        ctx.load_default_certs()
    if t.client_cert:
        ctx.load_cert_chain(t.client_cert, t.client_key)
    return ctx


def _verify_certificate(
    t: _Target, ca_file: str | None, versions: dict[str, VersionResult], notes: list[str]
) -> tuple[bool | None, str | None]:
    """A handshake as a careful client makes it: trust ``ca_file``, check the name, default security level.

    It offers the ciphers the server was seen to accept (minus anonymous ones),
    so a server with one unusual cipher is still reached.
    """
    accepted = [v for v in VERSIONS if v in versions and versions[v].accepted]
    if not accepted:
        return None, "no protocol version accepted"
    ctx = _careful_context(t, ca_file)
    local = set(local_ciphers("TLSv1.2"))  # what Python can offer (the suites OpenSSL 3 dropped: not)
    seen = list(dict.fromkeys(c for v in accepted if v != "TLSv1.3" for c in versions[v].ciphers if c in local))
    if not any(v in accepted for v in ("TLSv1.2", "TLSv1.3")):
        # Legacy-only server: OpenSSL 3 needs level 0, which also waives the key-size and SHA-1 checks.
        set_version_range(ctx, accepted[0])
        with contextlib.suppress(ssl.SSLError):  # only suites OpenSSL 3 dropped: the handshake fails, and says so
            ctx.set_ciphers(":".join(seen) + ":!aNULL:@SECLEVEL=0")
        notes.append("certificate verified at OpenSSL security level 0 (legacy-only server): weak keys pass")
    elif seen and null_encryption(":".join(seen)):
        # NULL-encryption server: OpenSSL 3 offers those suites at level 0 only, which also waives key checks.
        ctx.set_ciphers(":".join(seen) + ":!aNULL:@SECLEVEL=0")
        notes.append("certificate verified at OpenSSL security level 0 (NULL-encryption server): weak keys pass")
    elif seen:
        with contextlib.suppress(ssl.SSLError):  # nothing usable at level 2: keep the defaults (TLS 1.3)
            ctx.set_ciphers(":".join(seen) + ":!aNULL")
    retry = bool(seen)  # once, at level 1, for a DHE server whose group is under 2048 bits
    while True:
        try:
            t.handshake(ctx)
            return True, None
        except ssl.SSLCertVerificationError as exc:
            return False, str(exc.verify_message)
        except (ssl.SSLError, OSError, ProtocolError) as exc:
            if not (retry and isinstance(exc, ssl.SSLError) and exc.reason == "DH_KEY_TOO_SMALL"):
                return None, f"verifying handshake failed: {_reason(exc)}"
        retry = False
        # Level 1 takes a 1024-bit group (and RSA keys from 1024 bits).
        ctx.set_ciphers(":".join(seen) + ":!aNULL:@SECLEVEL=1")
        notes.append("certificate verified at OpenSSL security level 1 (the server's DH group is under 2048 bits)")


def _client_cert_required(t: _Target, accepted: list[str]) -> bool | None:
    """Handshake without the client certificate; a TLS 1.3 refusal only shows on the first read."""
    if not accepted:
        return None
    ctx = client_context(accepted[-1])
    try:
        tls, lines, _ = t.open_tls(ctx)
        with tls:
            if not t.implicit:
                capabilities(lines, t.protocol, name=_PROBE_NAME)  # a read: surfaces the server's certificate alert
        return False
    except (ImplicitTLSError, NoGreetingError, WrongProtocolError, ProbeError):
        return None
    except (ssl.SSLError, ConnectionError, ProtocolError):
        return True
    except OSError:
        return None


def _key_kind(key: Any) -> tuple[str, int]:
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "ed448", 456
    if isinstance(key, dsa.DSAPublicKey):
        return "dsa", key.key_size
    return type(key).__name__, 0


def _key_id(
    cert: x509.Certificate, kind: type[x509.SubjectKeyIdentifier] | type[x509.AuthorityKeyIdentifier]
) -> str | None:
    """The hex key identifier of ``cert``'s SubjectKeyIdentifier or AuthorityKeyIdentifier extension."""
    from cryptography import x509

    try:
        value = cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None
    digest = value.digest if isinstance(value, x509.SubjectKeyIdentifier) else value.key_identifier
    return digest.hex() if digest else None
