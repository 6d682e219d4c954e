"""Why a connection failed: a failure class, the evidence lines, and a concrete remedy.

Two witnesses are read: the client's own error (Python exceptions, Java
exception chains, curl / openssl / swaks / msmtp output) and the server's log
lines for that connection (Postfix, Dovecot, James, the embedded backend).
Each source has its own table of patterns; each pattern names the classes it
supports. A pattern naming one class is strong evidence, one naming several is
weak; the class with the most weight wins. Some texts cannot tell classes
apart by nature ("unable to get local issuer certificate" is an untrusted CA
*or* a server withholding its intermediate): then the other witness decides,
and if neither can, the class the cell predicts (``expected``) breaks the tie.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .oracle import (
    FAILURE_CLASSES,
    JDK17_DEFAULT_SUITES,
    SECURE_VERSIONS,
    ClientProfile,
    cell_is_secure,
    jsse_to_openssl,
)
from .policy import Cell, Mode

__all__ = [
    "UNCLASSIFIED",
    "Diagnosis",
    "Finding",
    "Rule",
    "CLIENT_TABLES",
    "SERVER_TABLES",
    "diagnose",
    "remedy",
    "match_table",
]

#: The class of a failure no table explains.
UNCLASSIFIED = "unclassified"

_CERT = (
    "untrusted-certificate",
    "incomplete-chain",
    "hostname-mismatch",
    "certificate-expired",
    "certificate-not-yet-valid",
    "weak-key-or-signature",
)
_CHAIN = ("untrusted-certificate", "incomplete-chain")
_HANGUP = ("protocol-version-mismatch", "no-shared-cipher", "client-certificate-required")


@dataclass(frozen=True)
class Rule:
    """One pattern of one source and the classes it supports."""

    pattern: re.Pattern[str]
    classes: tuple[str, ...]
    weight: int

    def __post_init__(self) -> None:
        for cls in self.classes:
            if cls not in FAILURE_CLASSES:
                raise ValueError(f"rule {self.pattern.pattern!r}: unknown class {cls!r}")


@dataclass(frozen=True)
class Finding:
    """Evidence gathered by asking the server again (a probe), with the classes it supports."""

    line: str
    classes: tuple[str, ...]
    weight: int = 4


def _rule(pattern: str, *classes: str, weight: int | None = None) -> Rule:
    return Rule(
        re.compile(pattern, re.IGNORECASE), classes, weight if weight is not None else (3 if len(classes) == 1 else 1)
    )


@dataclass(frozen=True)
class Diagnosis:
    """A failure class, the lines that show it, and what to change."""

    failure_class: str
    evidence: list[str] = field(default_factory=list)
    remedy: str = ""
    candidates: tuple[str, ...] = ()  # classes the evidence allowed, best first
    #: Classes the evidence could not tell apart (the chosen one among them); empty when one class stood out.
    tied: tuple[str, ...] = field(default=(), compare=False)

    @property
    def ambiguous(self) -> bool:
        """The evidence did not single out one class (a tie, or nothing matched): more evidence would help."""
        return bool(self.tied) or self.failure_class == UNCLASSIFIED

    def to_json(self) -> dict[str, Any]:
        return {"class": self.failure_class, "evidence": list(self.evidence), "remedy": self.remedy}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Diagnosis:
        return cls(str(data["class"]), [str(e) for e in data.get("evidence") or []], str(data.get("remedy") or ""))

    def __str__(self) -> str:
        lines = [f"{self.failure_class}: {self.remedy}"]
        lines += [f"  evidence: {e}" for e in self.evidence]
        return "\n".join(lines)


# --- client tables ------------------------------------------------------------------
# OpenSSL reason strings as a *client* sees them (Python ssl, curl, s_client, swaks all print them).
OPENSSL_CLIENT: tuple[Rule, ...] = (
    _rule(r"certificate has expired", "certificate-expired"),
    _rule(r"certificate is not yet valid", "certificate-not-yet-valid"),
    _rule(r"hostname mismatch|certificate is not valid for '|IP address mismatch", "hostname-mismatch"),
    _rule(r"self[- ]signed certificate", "untrusted-certificate"),
    _rule(r"unable to get local issuer certificate|unable to verify the first certificate", *_CHAIN),
    _rule(r"unable to get issuer certificate|certificate signature failure", *_CHAIN),
    _rule(
        r"EE certificate key too weak|CA certificate key too weak|ee key too small|ca key too small",
        "weak-key-or-signature",
    ),
    _rule(r"digest algorithm too weak|ca md too weak|md too weak", "weak-key-or-signature"),
    _rule(r"alert protocol version|unsupported protocol|no protocols available", "protocol-version-mismatch"),
    _rule(
        r"version too low|wrong ssl version|unsupported_protocol|legacy sigalg disallowed", "protocol-version-mismatch"
    ),
    _rule(r"inappropriate fallback", "protocol-version-mismatch"),
    _rule(r"no ciphers available|no cipher match|no shared cipher", "no-shared-cipher"),
    _rule(r"alert insufficient security", "no-shared-cipher"),
    _rule(r"alert handshake failure", "no-shared-cipher", "client-certificate-required", "protocol-version-mismatch"),
    _rule(r"wrong version number|packet length too long|record layer failure|http request", "wrong-tls-mode"),
    _rule(r"tlsv13 alert certificate required|peer did not return a certificate", "client-certificate-required"),
    # Alerts a client *receives* about its own certificate: the server rejected (or missed) it.
    _rule(r"alert unknown ca|alert bad certificate|alert certificate unknown", "client-certificate-required", weight=1),
    _rule(r"certificate verify failed", *_CERT),
    # The server hung up mid-handshake without an alert (Dovecot capped by MaxProtocol does this at times).
    _rule(r"unexpected eof while reading|EOF occurred in violation of protocol", *_HANGUP),
)

PYTHON: tuple[Rule, ...] = (
    _rule(r"STARTTLS extension not supported by server|TLS not supported by server", "starttls-not-offered", weight=5),
    _rule(r"STLS not supported by server|STARTTLS is not offered", "starttls-not-offered", weight=5),
    _rule(r"answered with TLS where plaintext was expected", "wrong-tls-mode", weight=5),
    _rule(r"SMTPAuthenticationError|AUTHENTICATIONFAILED|\[AUTH\] Authentication failed", "auth-failed", weight=5),
    _rule(r"\b535\b|authentication failed|Invalid credentials|LOGIN failed", "auth-failed"),
    _rule(r"Must issue a STARTTLS command first|PRIVACYREQUIRED|LOGINDISABLED", "starttls-required", weight=5),
    _rule(r"Plaintext authentication disallowed|must use STARTTLS|encryption required", "starttls-required", weight=5),
    _rule(r"SMTP AUTH extension not supported by server", "starttls-required", "auth-failed"),
    _rule(r"Authentication required|Relay access denied|530 5\.7\.0", "auth-failed", "starttls-required"),
    _rule(r"SSLCertVerificationError", *_CERT),
)

JAVA: tuple[Rule, ...] = (
    _rule(r"No appropriate protocol", "protocol-version-mismatch", weight=5),
    _rule(r"Received fatal alert: protocol_version|is not accepted by client preferences", "protocol-version-mismatch"),
    _rule(
        r"Client requested protocol \S+ is not enabled|The server selected protocol version",
        "protocol-version-mismatch",
    ),
    _rule(r"Received fatal alert: illegal_parameter", "protocol-version-mismatch", "no-shared-cipher"),
    _rule(
        r"Received fatal alert: handshake_failure",
        "no-shared-cipher",
        "client-certificate-required",
        "protocol-version-mismatch",
    ),
    _rule(
        r"No negotiable cipher suite|no cipher suites in common|Received fatal alert: insufficient_security",
        "no-shared-cipher",
    ),
    _rule(r"Unsupported or unrecognized SSL message|plaintext connection\?", "wrong-tls-mode", weight=5),
    _rule(r"NotAfter:|CertificateExpiredException", "certificate-expired", weight=5),
    _rule(r"NotBefore:|CertificateNotYetValidException", "certificate-not-yet-valid", weight=5),
    _rule(
        r"No subject alternative (?:DNS )?names? matching|No name matching|Server is not trusted:",
        "hostname-mismatch",
        weight=5,
    ),
    _rule(r"Can't verify identity of server|HostnameVerifier", "hostname-mismatch", weight=5),
    _rule(
        r"Algorithm constraints check failed|keysize limits|key size too small|disabled algorithm",
        "weak-key-or-signature",
        weight=5,
    ),
    _rule(r"PKIX path building failed|unable to find valid certification path", *_CHAIN),
    _rule(r"PKIX path validation failed|signature check failed", *_CERT),
    _rule(
        r"Received fatal alert: certificate_required|Empty client certificate chain",
        "client-certificate-required",
        weight=5,
    ),
    _rule(
        r"Received fatal alert: (?:bad_certificate|unknown_ca|certificate_unknown)",
        "client-certificate-required",
        weight=1,
    ),
    _rule(r"Remote host terminated the handshake|Connection reset by peer|SSLHandshakeException: .*EOF", *_HANGUP),
    _rule(r"AuthenticationFailedException", "auth-failed", weight=5),
    _rule(r"\b535\b|\[AUTHENTICATIONFAILED\]|-ERR \[AUTH\]", "auth-failed"),
    _rule(
        r"STARTTLS is required but|STARTTLS required but not supported|STLS required but not supported",
        "starttls-not-offered",
        weight=5,
    ),
    _rule(
        r"Must issue a STARTTLS command first|PRIVACYREQUIRED|Plaintext authentication disallowed",
        "starttls-required",
        weight=5,
    ),
    _rule(r"530 5\.7\.0|Authentication required|Relay access denied", "auth-failed", "starttls-required"),
)

CURL: tuple[Rule, ...] = (
    _rule(r"STARTTLS not supported|STARTTLS denied|curl: \(64\)", "starttls-not-offered", weight=5),
    _rule(
        r"no alternative certificate subject name matches|does not match target host name",
        "hostname-mismatch",
        weight=5,
    ),
    _rule(r"curl: \(51\)", "hostname-mismatch"),
    _rule(r"curl: \(67\)|Login denied", "auth-failed", weight=5),
    _rule(r"curl: \(60\)|SSL certificate problem", *_CERT),
    _rule(
        r"curl: \(58\)|unable to set private key file|could not load PEM client certificate",
        "client-certificate-required",
    ),
    _rule(r"curl: \(59\)|failed setting cipher list", "no-shared-cipher"),
    _rule(
        r"curl: \(35\)",
        "protocol-version-mismatch",
        "no-shared-cipher",
        "wrong-tls-mode",
        "client-certificate-required",
    ),
    _rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
    _rule(r"Authentication required|Relay access denied|530 5\.7\.0", "auth-failed", "starttls-required"),
)

S_CLIENT: tuple[Rule, ...] = (
    _rule(r"Didn't find STARTTLS in server response", "starttls-not-offered", weight=6),
    _rule(r"verify error:num=10:", "certificate-expired", weight=5),
    _rule(r"verify error:num=9:", "certificate-not-yet-valid", weight=5),
    _rule(r"verify error:num=62:", "hostname-mismatch", weight=5),
    _rule(r"verify error:num=(?:18|19):", "untrusted-certificate", weight=5),
    _rule(r"verify error:num=(?:66|67|68):", "weak-key-or-signature", weight=5),
)

SWAKS: tuple[Rule, ...] = (
    _rule(r"Host did not advertise STARTTLS|STARTTLS not advertised", "starttls-not-offered", weight=5),
    _rule(r"Could not authenticate|<\*\* +535|<~\* +535", "auth-failed", weight=5),
    _rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
    _rule(r"Host did not advertise authentication", "starttls-required", "auth-failed"),
    _rule(
        r"TLS startup failed",
        *_CERT,
        "protocol-version-mismatch",
        "no-shared-cipher",
        "client-certificate-required",
        weight=0,
    ),
)

GNUTLS: tuple[Rule, ...] = (
    _rule(r"uses expired certificate|certificate has expired", "certificate-expired", weight=5),
    _rule(r"uses not yet valid certificate|not yet activated", "certificate-not-yet-valid", weight=5),
    _rule(r"name in the certificate does not match|owner does not match", "hostname-mismatch", weight=5),
    _rule(r"certificate issuer is unknown|signer not found", *_CHAIN),
    _rule(r"is self-signed|self signed", "untrusted-certificate"),
    _rule(r"uses insecure algorithm|insecure algorithm|key size is too small", "weak-key-or-signature", weight=5),
    _rule(r"unsupported version|illegal or unsupported version|version is not supported", "protocol-version-mismatch"),
    _rule(r"Could not negotiate a supported cipher suite|No supported cipher suites", "no-shared-cipher"),
    _rule(r"An unexpected TLS packet was received|unexpected TLS packet", "wrong-tls-mode", weight=1),
    _rule(r"non-properly terminated|The TLS connection was non-properly terminated", *_HANGUP),
    _rule(
        r"A TLS fatal alert has been received",
        "client-certificate-required",
        "protocol-version-mismatch",
        "no-shared-cipher",
    ),
    _rule(r"does not support TLS via the STARTTLS command", "starttls-not-offered", weight=5),
    _rule(r"authentication failed|\b535\b", "auth-failed", weight=5),
    _rule(
        r"Must issue a STARTTLS command first|cannot use a secure authentication method", "starttls-required", weight=5
    ),
    _rule(r"server does not support authentication", "starttls-required", "auth-failed"),
)

#: Client-side tables per profile family (the family's own table first, then the TLS library's).
CLIENT_TABLES: dict[str, tuple[Rule, ...]] = {
    "python": PYTHON + OPENSSL_CLIENT,
    "curl": CURL + OPENSSL_CLIENT,
    "openssl": S_CLIENT + OPENSSL_CLIENT,
    "swaks": SWAKS + OPENSSL_CLIENT,
    "msmtp": GNUTLS,
    "java": JAVA,
    "command": PYTHON + CURL + S_CLIENT + SWAKS + JAVA + GNUTLS + OPENSSL_CLIENT,
}

# --- server tables ------------------------------------------------------------------
# OpenSSL reasons as a *server* logs them: alerts received are the client rejecting our certificate.
OPENSSL_SERVER: tuple[Rule, ...] = (
    _rule(
        r"unsupported protocol|version too low|wrong version number.*TLS|UNSUPPORTED_PROTOCOL",
        "protocol-version-mismatch",
    ),
    _rule(r"no shared cipher|NO_SHARED_CIPHER", "no-shared-cipher"),
    _rule(
        r"peer did not return a certificate|PEER_DID_NOT_RETURN_A_CERTIFICATE", "client-certificate-required", weight=5
    ),
    _rule(r"alert certificate expired|ALERT_CERTIFICATE_EXPIRED", "certificate-expired"),
    _rule(r"alert unknown ca|ALERT_UNKNOWN_CA", *_CHAIN),
    _rule(
        r"alert bad certificate|ALERT_BAD_CERTIFICATE",
        "hostname-mismatch",
        "weak-key-or-signature",
        "certificate-not-yet-valid",
    ),
    _rule(r"alert certificate unknown|ALERT_CERTIFICATE_UNKNOWN", *_CERT),
    _rule(r"http request|HTTP_REQUEST|wrong version number|WRONG_VERSION_NUMBER", "wrong-tls-mode", weight=1),
)

POSTFIX: tuple[Rule, ...] = (
    _rule(r"SASL \w+ authentication failed", "auth-failed", weight=5),
    _rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
    _rule(
        r"No client certificate presented|client certificate verification failed",
        "client-certificate-required",
        weight=5,
    ),
    _rule(r"non-SMTP command from .*\\x16|improper command pipelining after CONNECT", "wrong-tls-mode"),
    _rule(r"lost connection after STARTTLS", *_CERT, "client-certificate-required", weight=0),
    _rule(r"Relay access denied|Authentication required", "auth-failed", "starttls-required"),
)

DOVECOT: tuple[Rule, ...] = (
    _rule(r"auth failed, \d+ attempts|Authentication failure|Password mismatch", "auth-failed", weight=5),
    _rule(r"Plaintext authentication disallowed|disallowed plaintext auth", "starttls-required", weight=5),
    _rule(
        r"didn't present valid SSL certificate|Client didn't present|No certificate was found",
        "client-certificate-required",
        weight=5,
    ),
    _rule(r"Disconnected \(no auth attempts", *_CERT, weight=0),
)

JAMES: tuple[Rule, ...] = (
    _rule(
        r"Client requested protocol \S+ is not enabled|No appropriate protocol|protocol_version",
        "protocol-version-mismatch",
    ),
    _rule(r"no cipher suites in common|No negotiable cipher suite|insufficient_security", "no-shared-cipher"),
    _rule(r"Empty client certificate chain|certificate_required", "client-certificate-required", weight=5),
    _rule(r"Received fatal alert: certificate_expired", "certificate-expired"),
    _rule(r"Received fatal alert: unknown_ca", *_CHAIN),
    _rule(r"Received fatal alert: (?:certificate_unknown|bad_certificate)", *_CERT),
    _rule(r"Unsupported or unrecognized SSL message|plaintext connection\?", "wrong-tls-mode"),
    _rule(r"AUTH(?:ENTICATE)? failed|Authentication failed|Bad credentials|535", "auth-failed", weight=5),
    _rule(r"Must issue a STARTTLS command first|LOGINDISABLED|PRIVACYREQUIRED", "starttls-required", weight=5),
)

EMBEDDED: tuple[Rule, ...] = (
    _rule(r"535 5\.7\.8|Authentication credentials invalid|authentication failed", "auth-failed", weight=5),
    _rule(r"530 .*STARTTLS|Must issue a STARTTLS command first", "starttls-required", weight=5),
    _rule(r"command \"?\\x16|\\x16\\x03|bad syntax.*\\x16", "wrong-tls-mode"),
)

#: Server-side tables per server name.
SERVER_TABLES: dict[str, tuple[Rule, ...]] = {
    "postfix": POSTFIX + OPENSSL_SERVER,
    "dovecot": DOVECOT + OPENSSL_SERVER,
    "james": JAMES,
    "embedded": EMBEDDED + OPENSSL_SERVER,
}

_TIMEOUT_OR_CLOSED = re.compile(
    r"timed? ?out|SocketTimeoutException|Connection unexpectedly closed|connection closed|"
    r"closed the connection|SMTPServerDisconnected|EOF|Read timed out|reset by peer",
    re.IGNORECASE,
)


# --- matching -----------------------------------------------------------------------


@dataclass
class _Match:
    rule: Rule
    line: str
    source: str


def match_table(table: Sequence[Rule], lines: Iterable[str], *, source: str) -> list[_Match]:
    """Every rule of ``table`` that matches some line, with the first line it matched (each rule once)."""
    found: list[_Match] = []
    text_lines = [ln for ln in lines if ln.strip()]
    for rule in table:
        for line in text_lines:
            if rule.pattern.search(line):
                found.append(_Match(rule, line.strip()[:400], source))
                break
    return found


def diagnose(
    error_text: str,
    *,
    family: str = "command",
    exception_type: str = "",
    server: str | None = None,
    server_lines: Sequence[str] = (),
    cell: Cell | None = None,
    profile: ClientProfile | None = None,
    expected: str | None = None,
    tls: bool | None = None,
    findings: Sequence[Finding] = (),
) -> Diagnosis:
    """Classify a failure from the client's error text and the server's log lines for that connection.

    ``family``: which client table to read the error with (a profile's family);
    ``server``: which server table to read ``server_lines`` with; ``cell`` and
    ``profile`` make the remedy concrete; ``expected`` breaks ties between
    classes the evidence cannot tell apart; ``tls``: whether TLS came up;
    ``findings``: evidence from asking the server again (see ``certify``).
    """
    client_lines = error_text.splitlines() or [""]
    if exception_type and not client_lines[0].startswith(exception_type):
        client_lines[0] = f"{exception_type}: {client_lines[0]}"
    matches = match_table(CLIENT_TABLES.get(family, CLIENT_TABLES["command"]), client_lines, source="client")
    if server is not None and server in SERVER_TABLES:
        matches += match_table(SERVER_TABLES[server], server_lines, source="server")
    matches += [_Match(Rule(re.compile("."), f.classes, f.weight), f.line, "probe") for f in findings]

    scores: dict[str, int] = {}
    order: list[str] = []
    for m in matches:
        for cls in m.rule.classes:
            scores[cls] = scores.get(cls, 0) + m.rule.weight
            if cls not in order:
                order.append(cls)
    context = _context_class(error_text, cell, tls)
    if context is not None and not any(s >= 3 for s in scores.values()):
        cls, line = context
        scores[cls] = scores.get(cls, 0) + 3
        order.insert(0, cls)
        matches.append(_Match(_rule(".", cls), line, "context"))

    if not scores:
        first = next((ln.strip() for ln in error_text.splitlines() if ln.strip()), "(no error text)")
        evidence = [f"client: {first[:400]}"]
        evidence += [f"server: {ln.strip()[:400]}" for ln in server_lines[-5:] if ln.strip()]
        return Diagnosis(UNCLASSIFIED, evidence, "No known pattern matched; read the evidence and the transcript.")

    best = max(scores.values())
    tied = [c for c in order if scores[c] == best]
    chosen = expected if expected in tied else tied[0]
    candidates = tuple(sorted(order, key=lambda c: (-scores[c], order.index(c))))
    evidence = list(dict.fromkeys(f"{m.source}: {m.line}" for m in matches if chosen in m.rule.classes))
    if len(tied) > 1:
        others = ", ".join(c for c in tied if c != chosen)
        how = "the cell's expected outcome" if expected == chosen else "table order"
        evidence.append(f"note: the evidence also fits {others}; {how} decided")
    tie = tuple(tied) if len(tied) > 1 else ()
    return Diagnosis(chosen, evidence, remedy(chosen, cell=cell, profile=profile), candidates, tie)


def _context_class(error_text: str, cell: Cell | None, tls: bool | None) -> tuple[str, str] | None:
    """Classes no message names but the situation does: a plaintext client stuck on an implicit-TLS port."""
    if cell is None or cell.mode is not Mode.IMPLICIT or tls is not False:
        return None
    if _TIMEOUT_OR_CLOSED.search(error_text):
        return "wrong-tls-mode", "the port speaks TLS from the first byte; the client waited for a plaintext greeting"
    return None


# --- remedies -----------------------------------------------------------------------

_VERSION_KNOB: dict[str, str] = {
    "java": 'set mail.{proto}.ssl.protocols="{want}"',
    "python": "set context.minimum_version / context.maximum_version (ssl.TLSVersion) so that {want} is offered",
    "curl": "pass --tlsv{lo} (the minimum) and --tls-max {hi}",
    "openssl": "drop the version pins (-tls1, -no_tls1_3 ...) or pass -tls1_2 / -tls1_3",
    "swaks": "pass --tls-protocol to allow {want}",
    "msmtp": "set tls_priorities to allow {want} (e.g. NORMAL)",
    "command": "configure the client to offer {want}",
}
_CIPHER_KNOB: dict[str, str] = {
    "java": 'set mail.{proto}.ssl.ciphersuites="{jsse}"',
    "python": 'call context.set_ciphers("{openssl}")',
    "curl": 'pass --ciphers "{openssl}"',
    "openssl": 'pass -cipher "{openssl}"',
    "swaks": 'pass --tls-cipher "{openssl}"',
    "msmtp": "add the suite to tls_priorities",
    "command": "enable {openssl} in the client",
}
_TRUST_KNOB: dict[str, str] = {
    "java": "give the client a truststore holding the CA (javax.net.ssl.trustStore, or an SSLSocketFactory in "
    "mail.{proto}.ssl.socketFactory); never mail.{proto}.ssl.trust=*",
    "python": 'use ssl.create_default_context(cafile="{ca}")',
    "curl": "pass --cacert {ca}",
    "openssl": "pass -CAfile {ca}",
    "swaks": "pass --tls-verify --tls-ca-path {ca}",
    "msmtp": "set tls_trust_file {ca}",
    "command": "make the client trust {ca}",
}
_HOST_KNOB: dict[str, str] = {
    "java": "connect with the name the certificate carries; keep mail.{proto}.ssl.checkserveridentity=true",
    "python": "connect with server_hostname set to a name the certificate carries; keep check_hostname=True",
    "curl": "use a URL whose host the certificate names (with --resolve NAME:PORT:IP)",
    "openssl": "pass -verify_hostname with a name the certificate carries",
    "swaks": "connect with a name the certificate carries",
    "msmtp": "set host (or tls_host_override) to a name the certificate carries",
    "command": "connect with a name the certificate carries",
}
_CLIENT_CERT_KNOB: dict[str, str] = {
    "java": "give the client a keystore with its certificate (javax.net.ssl.keyStore, or a KeyManager in the "
    "SSLSocketFactory set as mail.{proto}.ssl.socketFactory)",
    "python": 'call context.load_cert_chain("client.pem", "client-key.pem")',
    "curl": "pass --cert client.pem --key client-key.pem",
    "openssl": "pass -cert client.pem -key client-key.pem",
    "swaks": "pass --tls-cert client.pem --tls-key client-key.pem",
    "msmtp": "set tls_cert_file and tls_key_file",
    "command": "configure the client certificate and key",
}
_STARTTLS_KNOB: dict[str, str] = {
    "java": "set mail.{proto}.starttls.enable=true and mail.{proto}.starttls.required=true",
    "python": "call starttls(context=...) before logging in (smtplib.SMTP.starttls, IMAP4.starttls, POP3.stls)",
    "curl": "pass --ssl-reqd with a {proto}:// URL",
    "openssl": "pass -starttls {proto}",
    "swaks": "pass --tls",
    "msmtp": "set tls on and tls_starttls on",
    "command": "enable STARTTLS in the client",
}
_MODE_KNOB: dict[str, dict[bool, str]] = {
    "java": {True: "set mail.{proto}.ssl.enable=true", False: "set mail.{proto}.ssl.enable=false and use STARTTLS"},
    "python": {True: "use SMTP_SSL / IMAP4_SSL / POP3_SSL", False: "use SMTP / IMAP4 / POP3 and then STARTTLS"},
    "curl": {True: "use a {proto}s:// URL", False: "use a {proto}:// URL with --ssl-reqd"},
    "openssl": {True: "drop -starttls", False: "pass -starttls {proto}"},
    "swaks": {True: "pass --tls-on-connect", False: "pass --tls instead of --tls-on-connect"},
    "msmtp": {True: "set tls_starttls off", False: "set tls_starttls on"},
    "command": {True: "speak TLS from the first byte", False: "open in plaintext and send STARTTLS"},
}
_SERVER_VERSIONS = {
    "postfix": "smtpd_tls_protocols / smtpd_tls_mandatory_protocols = >=TLSv1.2",
    "dovecot": "ssl_min_protocol = TLSv1.2",
    "james": "<supportedProtocols><protocol>TLSv1.2</protocol><protocol>TLSv1.3</protocol>",
    "embedded": "a TLSPolicy with min_version TLSv1.2",
}
_SERVER_CHAIN = {
    "postfix": "smtpd_tls_chain_files = key.pem, cert.pem, intermediate.pem",
    "dovecot": "ssl_cert = </path/fullchain.pem (leaf, then intermediates)",
    "james": "<certificates> (or the keystore entry) with the full chain",
    "embedded": "load_cert_chain with a file holding leaf and intermediates",
}
_SERVER_TLS = {
    "postfix": "smtpd_tls_security_level = may (or encrypt) with a certificate",
    "dovecot": "ssl = yes (or required) with ssl_cert/ssl_key",
    "james": '<tls startTLS="true"> with a keystore',
    "embedded": "a STARTTLS or implicit mode",
}


def remedy(failure_class: str, *, cell: Cell | None = None, profile: ClientProfile | None = None) -> str:
    """A concrete fix for ``failure_class``, worded for the client family and the server of ``cell``."""
    handler = _REMEDIES.get(failure_class)
    if handler is None:
        return "No known pattern matched; read the evidence and the transcript."
    return handler(_Ctx(cell, profile))


@dataclass
class _Ctx:
    cell: Cell | None
    profile: ClientProfile | None

    @property
    def family(self) -> str:
        return self.profile.family if self.profile is not None else "command"

    @property
    def proto(self) -> str:
        return str(self.cell.protocol) if self.cell is not None else "smtp"

    @property
    def server(self) -> str:
        return self.cell.server if self.cell is not None else ""

    def knob(self, table: dict[str, str], **values: str) -> str:
        text = table.get(self.family, table["command"])
        return text.format(proto=self.proto, ca="the session CA file (ca.pem)", **values)

    def on_server(self, table: dict[str, str]) -> str:
        return table.get(self.server, "") or "; ".join(f"{k}: {v}" for k, v in table.items() if k != "embedded")


def _fix_versions(ctx: _Ctx) -> str:
    offered = ctx.profile.effective_versions if ctx.profile else ()
    configured = ctx.profile.versions if ctx.profile else ()
    server = ctx.cell.policy.versions if ctx.cell and ctx.cell.policy else ()
    secure = [v for v in server if v in SECURE_VERSIONS]
    said = []
    if ctx.profile is not None:
        if configured and not offered:
            said.append(
                f"the client is configured for {' '.join(configured)} only, which its runtime disables"
                + (" (JDK 17 jdk.tls.disabledAlgorithms)" if ctx.family == "java" else "")
                + ", so it offers nothing"
            )
        else:
            said.append(f"the client offers {' '.join(offered) or 'nothing'}")
    if server:
        said.append(f"the server accepts {' '.join(server)}")
    head = ", ".join(said) + ": " if said else ""
    if server and not secure:
        allow = " ".join(server)
        return (
            f"{head}the server speaks only legacy TLS, and refusing it is right. Fix the server "
            f"({ctx.on_server(_SERVER_VERSIONS)}). Only if you must reach it: "
            + ctx.knob(_VERSION_KNOB, want=allow, lo=_curl_v(server[0]), hi=_curl_v(server[-1]))
            + " and lower the security level (OpenSSL: @SECLEVEL=0 in the cipher string)"
        )
    want = " ".join(secure or ["TLSv1.2", "TLSv1.3"])
    fix = ctx.knob(
        _VERSION_KNOB, want=want, lo=_curl_v((secure or ["TLSv1.2"])[0]), hi=_curl_v((secure or ["TLSv1.3"])[-1])
    )
    if ctx.family == "java" and configured and not offered:
        fix += " (javax.mail 1.4.5 enabled only TLSv1 when ssl.protocols was unset: upgrade to Jakarta/Angus Mail 2)"
    return head + fix


def _curl_v(version: str) -> str:
    return {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}[version]


def _fix_ciphers(ctx: _Ctx) -> str:
    policy = ctx.cell.policy if ctx.cell is not None else None
    server = policy.ciphers if policy is not None and policy.ciphers else "the server's list"
    if policy is not None and ctx.cell is not None and not cell_is_secure(ctx.cell):
        return (
            f"the server offers only {server} (no forward secrecy or no AEAD), and refusing it is right: "
            f"give the server ECDHE suites with AES-GCM or ChaCha20 (or TLS 1.3)"
        )
    first = (policy.ciphers or "ECDHE-RSA-AES128-GCM-SHA256").split(":")[0] if policy else "ECDHE-RSA-AES128-GCM-SHA256"
    return f"the client and the server share no cipher (server: {server}): " + ctx.knob(
        _CIPHER_KNOB, openssl=first, jsse=_openssl_to_jsse(first)
    )


def _openssl_to_jsse(name: str) -> str:
    for jsse in JDK17_DEFAULT_SUITES:
        if jsse_to_openssl(jsse) == name:
            return jsse
    return name


def _fix_untrusted(ctx: _Ctx) -> str:
    cert = str(ctx.cell.cert) if ctx.cell is not None and ctx.cell.cert is not None else ""
    if cert in ("self-signed", "untrusted-ca"):
        return (
            "the server's certificate is not issued by a CA the client trusts (self-signed or a foreign CA): "
            "install a certificate from the CA your clients trust on the server; do not turn verification off"
        )
    if ctx.profile is not None and not ctx.profile.trusts_ca:
        return "the client does not trust the CA that issued the server's certificate: " + ctx.knob(_TRUST_KNOB)
    return (
        "the client cannot chain the server's certificate to a CA it trusts: make the client trust the issuing CA ("
        + ctx.knob(_TRUST_KNOB)
        + "), or, if the CA is trusted, check that the server sends its intermediates"
    )


def _fix_chain(ctx: _Ctx) -> str:
    return (
        "the server presents its certificate without the intermediate CA that links it to the trusted root: "
        f"configure the full chain on the server ({ctx.on_server(_SERVER_CHAIN)}); clients must not paper over it"
    )


def _fix_host(ctx: _Ctx) -> str:
    return (
        "the certificate does not name the host the client connects to: reissue it with a subjectAltName for that "
        "name, or " + ctx.knob(_HOST_KNOB)
    )


def _fix_expired(ctx: _Ctx) -> str:
    return "the server's certificate has expired: renew it on the server; clients must keep rejecting it"


def _fix_not_yet_valid(ctx: _Ctx) -> str:
    return (
        "the server's certificate is not valid yet (notBefore in the future): check the clocks of server and "
        "client, or reissue the certificate with a current notBefore"
    )


def _fix_weak(ctx: _Ctx) -> str:
    return (
        "the server's certificate uses an RSA key under 2048 bits or a SHA-1 signature, refused at OpenSSL "
        "security level 2: reissue it with RSA-2048+ or ECDSA P-256 and SHA-256; do not lower the client's level"
    )


def _fix_mode(ctx: _Ctx) -> str:
    implicit = ctx.cell is not None and ctx.cell.mode is Mode.IMPLICIT
    where = f"port {ctx.cell.service.name}" if ctx.cell is not None else "this port"
    if implicit:
        return f"{where} speaks TLS from the first byte (implicit TLS): " + _MODE_KNOB.get(
            ctx.family, _MODE_KNOB["command"]
        )[True].format(proto=ctx.proto)
    return f"{where} opens in plaintext and upgrades with STARTTLS: " + _MODE_KNOB.get(
        ctx.family, _MODE_KNOB["command"]
    )[False].format(proto=ctx.proto)


def _fix_not_offered(ctx: _Ctx) -> str:
    return (
        "the server does not offer STARTTLS on this port, and refusing to go on in plaintext is right: "
        f"enable TLS on the server ({ctx.on_server(_SERVER_TLS)}), or use its implicit-TLS port"
    )


def _fix_required(ctx: _Ctx) -> str:
    return "the server requires TLS before login or mail: " + ctx.knob(_STARTTLS_KNOB)


def _fix_auth(ctx: _Ctx) -> str:
    extra = " and mail.smtp.auth=true" if ctx.family == "java" and ctx.proto == "smtp" else ""
    return f"the server rejected (or did not receive) the credentials: check user name and password{extra}"


def _fix_client_cert(ctx: _Ctx) -> str:
    return "the server requires a client certificate issued by the CA it trusts for clients: " + ctx.knob(
        _CLIENT_CERT_KNOB
    )


_REMEDIES: dict[str, Callable[[_Ctx], str]] = {
    "protocol-version-mismatch": _fix_versions,
    "no-shared-cipher": _fix_ciphers,
    "untrusted-certificate": _fix_untrusted,
    "incomplete-chain": _fix_chain,
    "hostname-mismatch": _fix_host,
    "certificate-expired": _fix_expired,
    "certificate-not-yet-valid": _fix_not_yet_valid,
    "weak-key-or-signature": _fix_weak,
    "wrong-tls-mode": _fix_mode,
    "starttls-not-offered": _fix_not_offered,
    "starttls-required": _fix_required,
    "auth-failed": _fix_auth,
    "client-certificate-required": _fix_client_cert,
}
