"""Why a connection failed: a failure class, the evidence lines, and a concrete remedy.

Four witnesses are read, strongest first, and the first that singles out a
class decides (a lexicographic order, not a vote):

1. ``wire``: facts the session recorder read on the path (an alert and who sent
   it, the versions offered against those the server accepts, plaintext on an
   implicit-TLS port, a refusal of STARTTLS). See :func:`wire_findings`.
2. ``client``: the client's own error text, read with its family's table
   (OpenSSL/Python, Java/JSSE, Go crypto/tls, Node, rustls, .NET, GnuTLS, curl,
   s_client, swaks ...).
3. ``server``: the server's log lines for the connection, read with its table.
4. ``probe``: findings from asking the server again (``findings``).

Each witness scores the classes its patterns name (a pattern naming one class
is strong, one naming several is weak) *within the classes the stronger
witnesses left open*; evidence that contradicts a stronger witness is set aside
and said so. Patterns of weight 0 are hints (a hang-up names no class); they
count only when nothing firmer spoke. A fallback never overrides evidence: the
context rule (a plaintext client waiting on an implicit-TLS port), weak probe
findings and the cell's expected class only choose among the classes the
evidence left open, the expected class last and only to break a tie. The same
inputs give the same class on every run: no step depends on dict or set order.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ConfigDict, Field

# _server_ciphers/_server_tls13_suites: the cell's real suites, so that a remedy names only what is really missing.
from .oracle import (
    FAILURE_CLASSES,
    JDK17_DEFAULT_SUITES,
    SECURE_VERSIONS,
    ClientProfile,
    _server_ciphers,
    _server_tls13_suites,
    jsse_to_openssl,
)
from .policy import VERSIONS, Cell, CertProfile, Mode
from .records import Record

__all__ = [
    "UNCLASSIFIED",
    "Diagnosis",
    "Finding",
    "Rule",
    "CLIENT_TABLES",
    "server_tables",
    "rule",
    "reply_code",
    "CHAIN_CLASSES",
    "DATE_CLASSES",
    "OPENSSL_SERVER",
    "WIRE",
    "diagnose",
    "remedy",
    "match_table",
    "CERT_CLASSES",
]

#: The class of a failure no table explains.
UNCLASSIFIED = "unclassified"

#: Failure classes of a server certificate a client must refuse.
CERT_CLASSES: tuple[str, ...] = (
    "untrusted-certificate",
    "incomplete-chain",
    "hostname-mismatch",
    "certificate-expired",
    "certificate-not-yet-valid",
    "weak-key-or-signature",
)
_CERT = CERT_CLASSES
_CHAIN = ("untrusted-certificate", "incomplete-chain")
_DATES = ("certificate-expired", "certificate-not-yet-valid")
_HANGUP = ("protocol-version-mismatch", "no-shared-cipher", "client-certificate-required")
_HANDSHAKE = ("no-shared-cipher", "client-certificate-required", "protocol-version-mismatch")
#: Where the evidence comes from, strongest first.
STAGES: tuple[str, ...] = ("wire", "client", "server", "probe")


@dataclass(frozen=True)
class Rule:
    """One pattern of one source and the classes it supports (weight 0: a hint, never decisive)."""

    pattern: re.Pattern[str]
    classes: tuple[str, ...]
    weight: int

    def __post_init__(self) -> None:
        for cls in self.classes:
            if cls not in FAILURE_CLASSES:
                raise ValueError(f"rule {self.pattern.pattern!r}: unknown class {cls!r}")

    @property
    def hint(self) -> bool:
        return self.weight <= 0


@dataclass(frozen=True)
class Finding:
    """A fact read on the wire, or found by asking the server again (a probe).

    ``classes``: the classes it supports; empty means "read ``line`` with the
    :data:`WIRE` table" (so a recorder can hand over plain sentences such as
    ``"server sent fatal alert protocol_version"``). ``excludes``: classes the
    fact rules out (e.g. a ServerHello rules out no shared cipher). A finding of
    weight under 3 is weak: it only chooses among classes other evidence left open.
    """

    line: str
    classes: tuple[str, ...] = ()
    weight: int = 4
    excludes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for cls in (*self.classes, *self.excludes):
            if cls not in FAILURE_CLASSES:
                raise ValueError(f"finding {self.line!r}: unknown class {cls!r}")


def _rule(pattern: str, *classes: str, weight: int | None = None, hint: bool = False) -> Rule:
    if hint:
        weight = 0
    return Rule(
        re.compile(pattern, re.IGNORECASE), classes, weight if weight is not None else (3 if len(classes) == 1 else 1)
    )


def _code(*codes: str) -> str:
    """A mail reply code matched as a reply code, never as digits inside an id or a port.

    It counts at the start of a line, after a client's or a protocol's prefix
    (``<~* 535``, ``Invalid login: 535``, ``(535, b'...``, lettre's ``(535)``,
    ``responseCode: 535``), or anywhere when an enhanced status code follows
    (`` 535 5.7.8``). ``sessionId=0c535408`` and ``127.0.0.1:53574`` never match.
    """
    alt = "|".join(codes)
    return (
        rf"(?:^\s*|[<>~*]\s*|:\s+|\(|\bresponseCode:?\s*)(?:{alt})(?=[\s,:)\-]|$)"
        rf"|(?<![\w.:=/])(?:{alt})[ -][245]\.\d{{1,3}}\.\d{{1,3}}\b"
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
    #: Which witness settled the class: wire, client, server, probe, context, hint or expected ("" if none).
    decided_by: str = field(default="", compare=False)

    @property
    def ambiguous(self) -> bool:
        """The evidence did not single out one class (a tie, a hint, or nothing matched): more would help."""
        return bool(self.tied) or self.failure_class == UNCLASSIFIED or self.decided_by == "hint"

    def record(self) -> DiagnosisRecord:
        return DiagnosisRecord(failure_class=self.failure_class, evidence=list(self.evidence), remedy=self.remedy)

    def to_json(self) -> dict[str, Any]:
        return self.record().model_dump(by_alias=True)

    @classmethod
    def from_json(cls, data: Any) -> Diagnosis:
        return DiagnosisRecord.model_validate(data).diagnosis()

    def __str__(self) -> str:
        lines = [f"{self.failure_class}: {self.remedy}"]
        lines += [f"  evidence: {e}" for e in self.evidence]
        return "\n".join(lines)


class DiagnosisRecord(Record):
    """A diagnosis in a report: the failure class, the lines that show it, what to change."""

    model_config = ConfigDict(populate_by_name=True)

    failure_class: str = Field(alias="class", description="a failure class (docs/report-schema.md) or `unclassified`")
    evidence: list[str] = Field(
        default_factory=list,
        description="the lines that show it, each prefixed `wire:`, `client:`, `server:`, `probe:`, `oracle:`, "
        "`context:` or `note:`",
    )
    remedy: str = Field("", description="what to change, worded for the client family and the server")

    def diagnosis(self) -> Diagnosis:
        return Diagnosis(self.failure_class, list(self.evidence), self.remedy)


# --- client tables ------------------------------------------------------------------
# OpenSSL reason strings as a *client* sees them (Python ssl, curl, s_client, swaks, Node, native-tls on Linux,
# .NET on Linux all print them).
OPENSSL_CLIENT: tuple[Rule, ...] = (
    # Go's "certificate has expired or is not yet valid" is either; its own table reads which.
    _rule(r"certificate has expired(?! or is not yet valid)", "certificate-expired"),
    _rule(r"\bcertificate is not yet valid\b", "certificate-not-yet-valid"),
    _rule(r"hostname mismatch|certificate is not valid for '|IP address mismatch", "hostname-mismatch"),
    _rule(r"\bself[- ]signed certificate\b", "untrusted-certificate"),
    _rule(r"unable to get local issuer certificate|unable to verify the first certificate", *_CHAIN),
    _rule(r"unable to get issuer certificate|certificate signature failure", *_CHAIN),
    _rule(
        r"EE certificate key too weak|CA certificate key too weak|\bee key too small|\bca key too small",
        "weak-key-or-signature",
    ),
    _rule(r"digest algorithm too weak|\bca md too weak|\bmd too weak", "weak-key-or-signature"),
    _rule(r"alert protocol version|\bunsupported protocol\b|no protocols available", "protocol-version-mismatch"),
    _rule(
        r"\bversion too low\b|wrong ssl version|\bunsupported_protocol\b|legacy sigalg disallowed",
        "protocol-version-mismatch",
    ),
    _rule(r"inappropriate fallback", "protocol-version-mismatch"),
    _rule(r"no ciphers available|no cipher match|no shared cipher", "no-shared-cipher"),
    _rule(r"alert insufficient security", "no-shared-cipher"),
    _rule(r"alert handshake failure", *_HANDSHAKE),
    _rule(r"wrong version number|packet length too long|record layer failure|\bhttp request\b", "wrong-tls-mode"),
    _rule(r"tlsv13 alert certificate required|peer did not return a certificate", "client-certificate-required"),
    # Alerts a client *receives* about its own certificate: the server rejected (or missed) it.
    _rule(r"alert unknown ca|alert bad certificate|alert certificate unknown", "client-certificate-required", weight=1),
    _rule(r"certificate verify failed", *_CERT),
    # The server hung up mid-handshake without an alert (Dovecot capped by MaxProtocol does this at times).
    _rule(r"unexpected eof while reading|EOF occurred in violation of protocol", *_HANGUP, hint=True),
)

#: Words every family may print: reply codes read as reply codes, STARTTLS refusals, and "certificate".
COMMON: tuple[Rule, ...] = (
    _rule(
        r"STARTTLS is not supported|(?:server )?does(?:n't| not) support (?:the )?STARTTLS|"
        r"STARTTLS extension not supported|STARTTLS (?:is )?not (?:offered|advertised|available)|"
        r"no STARTTLS support|TLS support isn't enabled|TLS not available due to temporary reason",
        "starttls-not-offered",
        weight=5,
    ),
    # PHPMailer and others: the server did not answer STARTTLS with 220 (the answer decides when it is quoted).
    _rule(r"STARTTLS command failed", "starttls-not-offered"),
    # A 502 ("command not implemented") or 454 answer: what a server without TLS says to STARTTLS.
    _rule(_code("502", "454"), "starttls-not-offered"),
    _rule(_code("535"), "auth-failed"),
    _rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
    # A text about certificates is about a certificate class, whatever else a fallback may think.
    _rule(r"\bcertificates?\b", *_CERT, "client-certificate-required", weight=1),
)

PYTHON: tuple[Rule, ...] = (
    _rule(r"STARTTLS extension not supported by server|TLS not supported by server", "starttls-not-offered", weight=5),
    _rule(r"STLS not supported by server|STARTTLS is not offered", "starttls-not-offered", weight=5),
    _rule(r"answered with TLS where plaintext was expected", "wrong-tls-mode", weight=5),
    _rule(r"SMTPAuthenticationError|AUTHENTICATIONFAILED|\[AUTH\] Authentication failed", "auth-failed", weight=5),
    # .NET's SslStream says "Authentication failed because ..." / ", see inner exception" for TLS failures.
    _rule(
        r"authentication failed(?!,? (?:see inner|because))|Invalid credentials|\bLOGIN failed",
        "auth-failed",
    ),
    _rule(r"Must issue a STARTTLS command first|PRIVACYREQUIRED|LOGINDISABLED", "starttls-required", weight=5),
    _rule(r"Plaintext authentication disallowed|must use STARTTLS|encryption required", "starttls-required", weight=5),
    _rule(r"SMTP AUTH extension not supported by server", "starttls-required", "auth-failed"),
    _rule(r"Authentication required|Relay access denied|\b530[ -]5\.7\.0\b", "auth-failed", "starttls-required"),
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
    _rule(r"Received fatal alert: handshake_failure", *_HANDSHAKE),
    _rule(
        r"No negotiable cipher suite|no cipher suites in common|Received fatal alert: insufficient_security",
        "no-shared-cipher",
    ),
    _rule(r"Unsupported or unrecognized SSL message|plaintext connection\?", "wrong-tls-mode", weight=5),
    _rule(r"\bNotAfter:|CertificateExpiredException", "certificate-expired", weight=5),
    _rule(r"\bNotBefore:|CertificateNotYetValidException", "certificate-not-yet-valid", weight=5),
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
    _rule(
        r"Remote host terminated the handshake|Connection reset by peer|SSLHandshakeException: .*\bEOF\b",
        *_HANGUP,
        hint=True,
    ),
    _rule(r"AuthenticationFailedException", "auth-failed", weight=5),
    _rule(r"\[AUTHENTICATIONFAILED\]|-ERR \[AUTH\]", "auth-failed"),
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
    _rule(r"\b530[ -]5\.7\.0\b|Authentication required|Relay access denied", "auth-failed", "starttls-required"),
)

# Go crypto/tls, crypto/x509 and net/smtp (texts from the Go sources: x509/verify.go, tls/alert.go, smtp/auth.go).
GO: tuple[Rule, ...] = (
    # CertificateInvalidError{Reason: Expired} reads the same for both dates; the detail says which.
    _rule(r"certificate has expired or is not yet valid: current time \S+ is after", "certificate-expired", weight=5),
    _rule(
        r"certificate has expired or is not yet valid: current time \S+ is before",
        "certificate-not-yet-valid",
        weight=5,
    ),
    _rule(r"certificate has expired or is not yet valid", *_DATES),
    # Go says "unknown authority" both for a foreign CA and for a missing intermediate: never a host name.
    _rule(r"x509: certificate signed by unknown authority", *_CHAIN),
    _rule(
        r"x509: certificate is valid for .+, not \S+|x509: certificate is not valid for any names|"
        r"x509: cannot validate certificate for \S+ because it doesn't contain any IP SANs|"
        r"x509: certificate relies on legacy Common Name field",
        "hostname-mismatch",
        weight=5,
    ),
    _rule(
        r"insecure algorithm (?:SHA1|MD5|MD2)-\w+|cannot verify signature: insecure algorithm|"
        r"(?<!remote error: )tls: unsupported certificate|tls: server's certificate contains an unsupported type",
        "weak-key-or-signature",
        weight=5,
    ),
    _rule(
        r"remote error: tls: protocol version not supported|tls: server selected unsupported protocol version|"
        r"tls: no supported versions satisfy MinVersion and MaxVersion|tls: client offered only unsupported versions",
        "protocol-version-mismatch",
        weight=5,
    ),
    _rule(r"remote error: tls: handshake failure", *_HANDSHAKE),
    _rule(
        r"remote error: tls: insufficient security level|tls: no cipher suite supported by both client and server",
        "no-shared-cipher",
    ),
    _rule(
        r"tls: first record does not look like a TLS handshake|tls: oversized record received|"
        r"server gave HTTP response",
        "wrong-tls-mode",
        weight=5,
    ),
    _rule(r"remote error: tls: certificate required", "client-certificate-required", weight=5),
    _rule(
        r"remote error: tls: (?:bad certificate|unknown certificate authority|unsupported certificate)",
        "client-certificate-required",
        weight=1,
    ),
    # smtp.PlainAuth refuses to send the password over a connection without TLS.
    _rule(r"\bunencrypted connection\b", "starttls-required", "starttls-not-offered"),
    _rule(r"smtp: server doesn't support AUTH", "starttls-required", "auth-failed"),
)

# Node's tls module (OpenSSL underneath: its reason strings are read too) and nodemailer.
NODE: tuple[Rule, ...] = (
    _rule(
        r"Hostname/IP does not match certificate's altnames|ERR_TLS_CERT_ALTNAME_INVALID",
        "hostname-mismatch",
        weight=5,
    ),
    _rule(r"\bCERT_HAS_EXPIRED\b", "certificate-expired", weight=5),
    _rule(r"\bCERT_NOT_YET_VALID\b", "certificate-not-yet-valid", weight=5),
    _rule(
        r"\bDEPTH_ZERO_SELF_SIGNED_CERT\b|\bSELF_SIGNED_CERT_IN_CHAIN\b|self[- ]signed certificate in certificate chain",
        "untrusted-certificate",
        weight=5,
    ),
    _rule(r"\bUNABLE_TO_GET_ISSUER_CERT(?:_LOCALLY)?\b|\bUNABLE_TO_VERIFY_LEAF_SIGNATURE\b", *_CHAIN),
    _rule(r"\bERR_SSL_(?:WRONG_VERSION_NUMBER|HTTP_REQUEST|PACKET_LENGTH_TOO_LONG)\b", "wrong-tls-mode", weight=5),
    _rule(
        r"\bERR_SSL_(?:TLSV1_ALERT_PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE|VERSION_TOO_LOW)\b",
        "protocol-version-mismatch",
        weight=5,
    ),
    _rule(
        r"\bERR_SSL_(?:NO_CIPHERS_AVAILABLE|NO_SHARED_CIPHER|SSLV3_ALERT_INSUFFICIENT_SECURITY|"
        r"TLSV1_ALERT_INSUFFICIENT_SECURITY)\b",
        "no-shared-cipher",
        weight=5,
    ),
    _rule(r"\bERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE\b", *_HANDSHAKE),
    _rule(r"\bERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED\b", "client-certificate-required", weight=5),
    _rule(r"\bERR_SSL_(?:EE_KEY_TOO_SMALL|CA_KEY_TOO_SMALL|CA_MD_TOO_WEAK)\b", "weak-key-or-signature", weight=5),
    _rule(r"\bInvalid login\b|\bEAUTH\b", "auth-failed", weight=5),
    # A plaintext client on an implicit-TLS port waits for a greeting that never comes (the server waits too).
    _rule(r"Greeting never received", "wrong-tls-mode", hint=True),
    _rule(r"Unexpected socket close|\bECONNRESET\b|socket hang up", *_HANGUP, hint=True),
)

# rustls' Error Display (old: Debug names such as "UnknownIssuer"; 0.23: sentences such as "certificate expired:")
# and lettre. native-tls on Linux is OpenSSL: the family reads OpenSSL's reasons too.
RUST: tuple[Rule, ...] = (
    _rule(r"invalid peer certificate: (?:UnknownIssuer|UnknownCA)\b", *_CHAIN),
    _rule(
        r"invalid peer certificate: (?:NotValidForName\w*|certificate not valid for name)",
        "hostname-mismatch",
        weight=5,
    ),
    _rule(r"invalid peer certificate: (?:Expired\w*|certificate expired)", "certificate-expired", weight=5),
    _rule(
        r"invalid peer certificate: (?:NotValidYet\w*|certificate not valid yet)", "certificate-not-yet-valid", weight=5
    ),
    _rule(
        r"invalid peer certificate: (?:BadSignature|UnsupportedSignatureAlgorithm)\w*",
        "weak-key-or-signature",
        weight=5,
    ),
    _rule(r"invalid peer certificate", *_CERT),
    _rule(
        r"received fatal alert: (?:ProtocolVersion\b|.*\bprotocol[ _]version)", "protocol-version-mismatch", weight=5
    ),
    _rule(r"received fatal alert: (?:HandshakeFailure\b|.*\bhandshake[ _]failure)", *_HANDSHAKE),
    _rule(
        r"received fatal alert: (?:CertificateRequired\b|.*\bcertificate[ _]required)",
        "client-certificate-required",
        weight=5,
    ),
    _rule(
        r"received fatal alert: (?:BadCertificate|UnknownCA|CertificateUnknown)\b",
        "client-certificate-required",
        weight=1,
    ),
    _rule(r"peer is incompatible: \w*(?:Tls12|Tls13|Version)\w*", "protocol-version-mismatch", weight=5),
    _rule(r"peer is incompatible: No(?:CipherSuites|KxGroups)InCommon", "no-shared-cipher", weight=5),
    _rule(r"peer is incompatible", "protocol-version-mismatch", "no-shared-cipher"),
    _rule(r"corrupt message of type InvalidContentType|\bInvalidContentType\b", "wrong-tls-mode"),
    _rule(r"peer sent no certificates", "client-certificate-required", weight=5),
    _rule(r"Connection error: .*(?:reset|closed|eof)", *_HANGUP, hint=True),
)

# .NET SslStream / SChannel (System.Net.Security resources) and MailKit.
DOTNET: tuple[Rule, ...] = (
    _rule(r"RemoteCertificateNameMismatch", "hostname-mismatch", weight=5),
    _rule(r"\bNotTimeValid\b", *_DATES),
    _rule(r"\bUntrustedRoot\b", "untrusted-certificate", weight=5),
    _rule(r"\bPartialChain\b", *_CHAIN),
    _rule(r"\bNotSignatureValid\b|\bHasWeakSignature\b", "weak-key-or-signature"),
    # Chain errors are everything but the name.
    _rule(
        r"RemoteCertificateChainErrors|remote certificate is invalid because of errors in the certificate chain",
        *(c for c in _CERT if c != "hostname-mismatch"),
    ),
    _rule(
        r"The remote certificate is invalid according to the validation procedure|"
        r"rejected by the provided RemoteCertificateValidationCallback",
        *_CERT,
    ),
    _rule(r"do not possess a common algorithm", "protocol-version-mismatch", "no-shared-cipher"),
    _rule(r"remote party sent a TLS alert: '?ProtocolVersion", "protocol-version-mismatch", weight=5),
    _rule(r"remote party sent a TLS alert: '?HandshakeFailure", *_HANDSHAKE),
    _rule(r"remote party sent a TLS alert: '?CertificateRequired", "client-certificate-required", weight=5),
    _rule(
        r"remote party sent a TLS alert: '?(?:BadCertificate|UnknownCA|CertificateUnknown)",
        "client-certificate-required",
        weight=1,
    ),
    _rule(
        r"unexpected packet format|Cannot determine the frame size or a corrupted frame was received",
        "wrong-tls-mode",
        weight=5,
    ),
    _rule(
        r"remote party has closed the transport stream|unexpected EOF or 0 bytes from the transport stream",
        *_HANGUP,
        hint=True,
    ),
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
    _rule(r"Authentication required|Relay access denied|\b530[ -]5\.7\.0\b", "auth-failed", "starttls-required"),
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
    _rule(r"Could not authenticate|<\*\* +535\b|<~\* +535\b", "auth-failed", weight=5),
    _rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
    _rule(r"Host did not advertise authentication", "starttls-required", "auth-failed"),
    _rule(
        r"TLS startup failed",
        *_CERT,
        "protocol-version-mismatch",
        "no-shared-cipher",
        "client-certificate-required",
        hint=True,
    ),
)

GNUTLS: tuple[Rule, ...] = (
    _rule(r"uses expired certificate|certificate has expired(?! or is not yet valid)", "certificate-expired", weight=5),
    _rule(r"uses not yet valid certificate|not yet activated", "certificate-not-yet-valid", weight=5),
    _rule(r"name in the certificate does not match|owner does not match", "hostname-mismatch", weight=5),
    _rule(r"certificate issuer is unknown|signer not found", *_CHAIN),
    _rule(r"\bis self-signed\b|\bself signed\b", "untrusted-certificate"),
    _rule(r"uses insecure algorithm|insecure algorithm|key size is too small", "weak-key-or-signature", weight=5),
    _rule(
        r"\bunsupported version\b|illegal or unsupported version|version is not supported|Error in protocol version",
        "protocol-version-mismatch",
    ),
    _rule(r"Could not negotiate a supported cipher suite|No supported cipher suites", "no-shared-cipher"),
    _rule(r"An unexpected TLS packet was received|unexpected TLS packet", "wrong-tls-mode", weight=1),
    _rule(r"non-properly terminated|The TLS connection was non-properly terminated", *_HANGUP, hint=True),
    _rule(r"A TLS fatal alert has been received|Received alert \[40\]", *_HANDSHAKE),
    _rule(r"does not support TLS via the STARTTLS command", "starttls-not-offered", weight=5),
    _rule(r"authentication failed(?!,? (?:see inner|because))", "auth-failed", weight=5),
    _rule(
        r"Must issue a STARTTLS command first|cannot use a secure authentication method", "starttls-required", weight=5
    ),
    _rule(r"server does not support authentication", "starttls-required", "auth-failed"),
)


def _tables(*tables: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """Tables joined in order, each rule once (a family reading several tables must not count a rule twice)."""
    return tuple(dict.fromkeys(rule for table in tables for rule in table))


#: Client-side tables per family (the family's own table first, then its TLS library's, then common words).
CLIENT_TABLES: dict[str, tuple[Rule, ...]] = {
    "python": _tables(PYTHON, OPENSSL_CLIENT, COMMON),
    "curl": _tables(CURL, OPENSSL_CLIENT, COMMON),
    "openssl": _tables(S_CLIENT, OPENSSL_CLIENT, COMMON),
    "swaks": _tables(SWAKS, OPENSSL_CLIENT, COMMON),
    "msmtp": _tables(GNUTLS, COMMON),
    "gnutls": _tables(GNUTLS, COMMON),
    "java": _tables(JAVA, COMMON),
    "node": _tables(NODE, OPENSSL_CLIENT, COMMON),
    "go": _tables(GO, COMMON),
    "rust": _tables(RUST, OPENSSL_CLIENT, COMMON),
    "dotnet": _tables(DOTNET, OPENSSL_CLIENT, COMMON),
    # Unknown programs: every table (the specific ones first, OpenSSL's reasons and common words last).
    "command": _tables(PYTHON, CURL, S_CLIENT, SWAKS, JAVA, GO, NODE, RUST, DOTNET, GNUTLS, OPENSSL_CLIENT, COMMON),
}

# --- server tables ------------------------------------------------------------------
# OpenSSL reasons as a *server* logs them: alerts received are the client rejecting our certificate.
OPENSSL_SERVER: tuple[Rule, ...] = (
    _rule(
        r"\bunsupported protocol\b|\bversion too low\b|wrong version number.*TLS|\bUNSUPPORTED_PROTOCOL\b",
        "protocol-version-mismatch",
    ),
    _rule(r"no shared cipher|\bNO_SHARED_CIPHER\b", "no-shared-cipher"),
    _rule(
        r"peer did not return a certificate|PEER_DID_NOT_RETURN_A_CERTIFICATE", "client-certificate-required", weight=5
    ),
    # OpenSSL clients send certificate_expired for both dates.
    _rule(r"alert certificate expired|ALERT_CERTIFICATE_EXPIRED", *_DATES),
    _rule(r"alert unknown ca|ALERT_UNKNOWN_CA", *_CHAIN),
    # OpenSSL sends bad_certificate for a host name, a weak key or a future date; Go sends it for every
    # verification failure, "unknown authority" included: the client's own words must decide.
    _rule(r"alert bad certificate|ALERT_BAD_CERTIFICATE", *_CERT),
    _rule(r"alert certificate unknown|ALERT_CERTIFICATE_UNKNOWN", *_CERT),
    _rule(r"\bhttp request\b|\bHTTP_REQUEST\b|wrong version number|WRONG_VERSION_NUMBER", "wrong-tls-mode", weight=1),
)

#: Shared helpers for the server tables that backends declare (``Backend.log_rules``).
rule = _rule
reply_code = _code
CHAIN_CLASSES = _CHAIN
DATE_CLASSES = _DATES


def server_tables() -> dict[str, tuple[Rule, ...]]:
    """Each server's log table, as its backend declares it (``Backend.log_rules``)."""
    from .backends import backend_class, server_names

    return {name: backend_class(name).log_rules() for name in server_names()}


# --- wire ---------------------------------------------------------------------------
# Sentences the session recorder's facts are written in (see wire_findings); a recorder may hand over its
# own Finding lines in the same words. Who sent an alert matters: a server's alert is about the client's
# offer or certificate, a client's alert is about the server's certificate or choice.
_ANSWER_REFUSED = r"(?:[45]\d\d\b|(?:\S+ )?(?:NO|BAD)\b|-ERR\b)"
WIRE: tuple[Rule, ...] = (
    _rule(
        r"first bytes on this implicit-TLS port were not a TLS record|plaintext on an implicit-TLS port",
        "wrong-tls-mode",
        weight=6,
    ),
    _rule(r"the server answered TLS to a plaintext hello", "wrong-tls-mode", weight=6),
    _rule(rf"answered (?:STARTTLS|STLS) with '{_ANSWER_REFUSED}", "starttls-not-offered", weight=6),
    _rule(
        r"answered (?:AUTH|AUTHENTICATE|LOGIN|USER|PASS|APOP|MAIL|RCPT)\b.* with '.*(?:PRIVACYREQUIRED|"
        r"Plaintext authentication disallowed|Must issue a STARTTLS command first|\b530[ -]5\.7\.0)",
        "starttls-required",
        weight=8,
    ),
    _rule(
        r"answered (?:AUTH|AUTHENTICATE|LOGIN|PASS|APOP)\b.* with '(?:535\b|(?:\S+ )?NO\b|-ERR\b)",
        "auth-failed",
        weight=5,
    ),
    _rule(r"no version in common", "protocol-version-mismatch", weight=6),
    _rule(r"server sent fatal alert protocol_version", "protocol-version-mismatch", weight=6),
    _rule(r"server sent fatal alert (?:insufficient_security|inappropriate_fallback)", "no-shared-cipher"),
    _rule(r"server sent fatal alert handshake_failure", *_HANDSHAKE),
    _rule(r"server sent fatal alert certificate_required", "client-certificate-required", weight=6),
    _rule(
        r"server sent fatal alert (?:bad_certificate|unknown_ca|certificate_unknown|unsupported_certificate|"
        r"access_denied|decrypt_error)",
        "client-certificate-required",
    ),
    _rule(r"client sent fatal alert protocol_version", "protocol-version-mismatch", weight=6),
    _rule(
        r"client sent fatal alert (?:handshake_failure|insufficient_security)",
        "protocol-version-mismatch",
        "no-shared-cipher",
    ),
    _rule(r"client sent fatal alert unknown_ca", *_CHAIN),
    _rule(r"client sent fatal alert certificate_expired", *_DATES),
    # Go sends bad_certificate for every verification failure; OpenSSL for a host name, a weak key, a date.
    _rule(
        r"client sent fatal alert (?:bad_certificate|certificate_unknown|unsupported_certificate|decrypt_error)",
        *_CERT,
    ),
)

_TIMEOUT_OR_CLOSED = re.compile(
    r"\btimed? ?out\b|SocketTimeoutException|Connection unexpectedly closed|connection closed|"
    r"closed the connection|SMTPServerDisconnected|\bEOF\b|Read timed out|reset by peer|Greeting never received",
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


_ANY = re.compile(".")


def _finding_matches(items: Sequence[Finding], source: str) -> tuple[list[_Match], tuple[str, ...]]:
    """Findings as matches (those without classes read with the WIRE table), and the classes they rule out."""
    matches: list[_Match] = []
    excluded: list[str] = []
    for f in items:
        if f.classes:
            matches.append(_Match(Rule(_ANY, f.classes, f.weight), f.line.strip()[:400], source))
        else:
            found = match_table(WIRE, [f.line], source=source)
            matches += found
            if not found:
                # An unread fact (or one that only rules classes out) is still evidence for the reader.
                matches.append(_Match(Rule(_ANY, (), 0), f.line.strip()[:400], source))
        excluded += [c for c in f.excludes if c not in excluded]
    return matches, tuple(excluded)


def _scores(matches: Iterable[_Match], allowed: Sequence[str]) -> dict[str, int]:
    """Summed weights per class, only for classes still ``allowed``, in order of first appearance."""
    scores: dict[str, int] = {}
    for m in matches:
        for cls in m.rule.classes:
            if cls in allowed:
                scores[cls] = scores.get(cls, 0) + m.rule.weight
    return scores


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
    wire: Sequence[Finding] = (),
    offered_versions: Sequence[str] | None = None,
    offered_ciphers: Sequence[str] | None = None,
) -> Diagnosis:
    """Classify a failure from what the wire showed, what the client said and what the server logged.

    ``wire``: facts from the session recorder (see :func:`wire_findings`), read
    first; ``family``: which client table reads ``error_text`` (a profile's
    family); ``server``: which server table reads ``server_lines``;
    ``findings``: evidence from asking the server again (weak ones only choose
    among classes other evidence left open); ``cell``, ``profile`` and the
    client's real offer (``offered_versions``, ``offered_ciphers``, from its
    ClientHello) make the remedy concrete; ``expected`` breaks ties between
    classes the evidence cannot tell apart, and nothing more; ``tls``: whether
    TLS came up (for the implicit-TLS context rule).
    """
    client_lines = error_text.splitlines() or [""]
    if exception_type and not client_lines[0].startswith(exception_type):
        client_lines[0] = f"{exception_type}: {client_lines[0]}"
    wire_matches, wire_excluded = _finding_matches(wire, "wire")
    client_matches = match_table(CLIENT_TABLES.get(family, CLIENT_TABLES["command"]), client_lines, source="client")
    server_matches: list[_Match] = []
    if server is not None:
        from .backends import REGISTRY, backend_class

        if server in REGISTRY:
            server_matches = match_table(backend_class(server).log_rules(), server_lines, source="server")
    probe_matches, probe_excluded = _finding_matches(findings, "probe")
    stages: list[tuple[str, list[_Match], tuple[str, ...]]] = [
        ("wire", wire_matches, wire_excluded),
        ("client", client_matches, ()),
        ("server", server_matches, ()),
        ("probe", probe_matches, probe_excluded),
    ]
    every = [m for _, ms, _ in stages for m in ms]

    allowed: list[str] = list(FAILURE_CLASSES)
    proposed = False  # whether positive evidence has narrowed ``allowed``
    decided_by = ""
    notes: list[str] = []
    deferred: list[_Match] = []  # weak probe findings: they may only choose among classes already open
    settled = False
    for name, matches, excluded in stages:
        if settled:  # a stronger witness decided; say where a weaker one disagrees
            firm = [m for m in matches if not m.rule.hint and m.rule.classes and m.rule.weight >= 3]
            if firm and not _scores(firm, allowed):
                said = ", ".join(dict.fromkeys(c for m in firm for c in m.rule.classes))
                notes.append(f"note: the {name} evidence ({said}) contradicts the {decided_by} evidence, which decides")
            continue
        if excluded:
            narrowed = [c for c in allowed if c not in excluded]
            allowed = narrowed or allowed  # a fact that would rule out everything contradicts stronger evidence
        firm = [m for m in matches if not m.rule.hint and m.rule.classes]
        if name == "probe" and not proposed:
            deferred = [m for m in firm if m.rule.weight < 3]
            firm = [m for m in firm if m.rule.weight >= 3]
        scores = _scores(firm, allowed)
        if not scores:
            if firm and proposed:
                said = ", ".join(dict.fromkeys(c for m in firm for c in m.rule.classes))
                notes.append(f"note: the {name} evidence ({said}) contradicts the {decided_by} evidence, which decides")
            continue
        best = max(scores.values())
        allowed = [c for c in scores if scores[c] == best]
        proposed, decided_by = True, name
        settled = len(allowed) == 1

    context_line = ""
    if len(allowed) > 1 or not proposed:
        context = _context_class(error_text, cell, tls)
        if context is not None and (not proposed or context[0] in allowed):
            allowed, proposed, decided_by, context_line = [context[0]], True, "context", context[1]
    if not proposed:
        hinted = _scores([m for m in every if m.rule.hint], allowed)
        if hinted:
            allowed, proposed, decided_by = list(hinted), True, "hint"
    if proposed and len(allowed) > 1 and deferred:
        scores = _scores(deferred, allowed)
        if scores:
            best = max(scores.values())
            allowed, decided_by = [c for c in scores if scores[c] == best], "probe"

    if not proposed:
        first = next((ln.strip() for ln in error_text.splitlines() if ln.strip()), "(no error text)")
        evidence = [f"wire: {m.line}" for m in wire_matches]
        evidence += [f"client: {first[:400]}"]
        evidence += [f"server: {ln.strip()[:400]}" for ln in server_lines[-5:] if ln.strip()]
        evidence += [f"probe: {m.line}" for m in probe_matches]
        return Diagnosis(
            UNCLASSIFIED,
            list(dict.fromkeys(evidence)),
            "No known pattern matched; read the evidence and the transcript.",
        )

    chosen = expected if expected in allowed else allowed[0]
    mentioned = [c for m in every for c in m.rule.classes]
    candidates = tuple(dict.fromkeys([chosen, *allowed, *mentioned]))
    evidence = [f"{m.source}: {m.line}" for m in every if chosen in m.rule.classes]
    if context_line:
        evidence.append(f"context: {context_line}")
    evidence += [f"{m.source}: {m.line}" for m in every if not m.rule.classes]  # facts that name no class
    evidence += notes
    if len(allowed) > 1:
        others = ", ".join(c for c in allowed if c != chosen)
        how = "the cell's expected outcome" if expected == chosen else "table order"
        evidence.append(f"note: the evidence also fits {others}; {how} decided")
    tie = tuple(allowed) if len(allowed) > 1 else ()
    text = remedy(
        chosen,
        cell=cell,
        profile=profile,
        family=family if profile is None else None,
        offered_versions=offered_versions,
        offered_ciphers=offered_ciphers,
    )
    return Diagnosis(
        chosen,
        list(dict.fromkeys(evidence)),
        text,
        candidates,
        tie,
        "expected" if tie and expected == chosen else decided_by,
    )


def _context_class(error_text: str, cell: Cell | None, tls: bool | None) -> tuple[str, str] | None:
    """Classes no message names but the situation does: a plaintext client stuck on an implicit-TLS port."""
    if cell is None or cell.mode is not Mode.IMPLICIT or tls is not False:
        return None
    if _TIMEOUT_OR_CLOSED.search(error_text):
        return "wrong-tls-mode", "the port speaks TLS from the first byte; the client waited for a plaintext greeting"
    return None


# --- facts from the wire ----------------------------------------------------------------


def _versions_text(versions: Sequence[str]) -> str:
    """``TLSv1.2-TLSv1.3`` for a contiguous run, the names otherwise; "only X" is the caller's to say."""
    items = [v for v in VERSIONS if v in versions] + [v for v in versions if v not in VERSIONS]
    if not items:
        return "no version"
    if len(items) > 1 and items == list(VERSIONS[VERSIONS.index(items[0]) : VERSIONS.index(items[0]) + len(items)]):
        return f"{items[0]}-{items[-1]}"
    return " ".join(items)


def _offer_text(versions: Sequence[str]) -> str:
    return f"only {versions[0]}" if len(versions) == 1 else _versions_text(versions)


# --- remedies -----------------------------------------------------------------------
# Knobs per family; each template may use {proto}, {ca}, and for versions {want} (names separated by spaces),
# {lo}/{hi} (curl's 1.2), {lo_name}/{hi_name} (TLSv1.2), {go_lo}/{go_hi} (tls.VersionTLS12), {dotnet}
# (SslProtocols.Tls12 | SslProtocols.Tls13), {gnutls} (+VERS-TLS1.2:+VERS-TLS1.3), {rust_versions},
# {rust_min}; for ciphers {openssl} and {jsse} (IANA name, as Go, .NET and rustls spell it).

_VERSION_KNOB: dict[str, str] = {
    "java": 'set mail.{proto}.ssl.protocols="{want}"',
    "python": "set context.minimum_version / context.maximum_version (ssl.TLSVersion) so that {want} is offered",
    "curl": "pass --tlsv{lo} (the minimum) and --tls-max {hi}",
    "openssl": "drop the version pins (-tls1, -no_tls1_3 ...) or pass -tls1_2 / -tls1_3",
    "swaks": "pass --tls-protocol to allow {want}",
    "msmtp": "set tls_priorities to allow {want} (e.g. NORMAL)",
    "gnutls": "allow {want} in the priority string (NORMAL:-VERS-ALL:{gnutls})",
    "node": "set tls: {{ minVersion: '{lo_name}', maxVersion: '{hi_name}' }} in the transport options "
    "(nodemailer passes tls to tls.connect)",
    "go": "set tls.Config{{MinVersion: {go_lo}, MaxVersion: {go_hi}}}",
    "rust": "offer {want}: rustls ClientConfig::builder_with_protocol_versions(&[{rust_versions}]) "
    "(rustls speaks only TLSv1.2 and TLSv1.3); native-tls TlsConnector::builder().min_protocol_version("
    "Some({rust_min}))",
    "dotnet": "set SslProtocols = {dotnet} (SslClientAuthenticationOptions.EnabledSslProtocols; MailKit: "
    "client.SslProtocols), or leave it to the OS default (SslProtocols.None)",
    "command": "configure the client to offer {want}",
}
_CIPHER_KNOB: dict[str, str] = {
    "java": 'set mail.{proto}.ssl.ciphersuites="{jsse}"',
    "python": 'call context.set_ciphers("{openssl}")',
    "curl": 'pass --ciphers "{openssl}"',
    "openssl": 'pass -cipher "{openssl}"',
    "swaks": 'pass --tls-cipher "{openssl}"',
    "msmtp": "add the suite to tls_priorities",
    "gnutls": "add the suite to the priority string",
    "node": "set tls: {{ ciphers: '{openssl}' }} in the transport options",
    "go": "add tls.{jsse} to tls.Config.CipherSuites (Go leaves static-RSA key exchange out of its defaults)",
    "rust": "enable {jsse} in the rustls CryptoProvider's cipher_suites",
    "dotnet": "allow {jsse} (CipherSuitesPolicy on Linux and macOS; the system's suite list on Windows)",
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
    "gnutls": "load {ca} with gnutls_certificate_set_x509_trust_file (gnutls-cli --x509cafile)",
    "node": "pass tls: {{ ca: [fs.readFileSync('ca.pem')] }} (or NODE_EXTRA_CA_CERTS=ca.pem); never "
    "rejectUnauthorized: false",
    "go": "add {ca} to an x509.CertPool set as tls.Config{{RootCAs: pool}}; never InsecureSkipVerify",
    "rust": "add {ca} to the rustls RootCertStore (native-tls: TlsConnector::builder().add_root_certificate); "
    "never a verifier that accepts everything",
    "dotnet": "trust {ca} (X509ChainPolicy.CustomTrustStore with TrustMode = CustomRootTrust, or the system "
    "store); never a RemoteCertificateValidationCallback that returns true",
    "command": "make the client trust {ca}",
}
_HOST_KNOB: dict[str, str] = {
    "java": "connect with the name the certificate carries; keep mail.{proto}.ssl.checkserveridentity=true",
    "python": "connect with server_hostname set to a name the certificate carries; keep check_hostname=True",
    "curl": "use a URL whose host the certificate names (with --resolve NAME:PORT:IP)",
    "openssl": "pass -verify_hostname with a name the certificate carries",
    "swaks": "connect with a name the certificate carries",
    "msmtp": "set host (or tls_host_override) to a name the certificate carries",
    "gnutls": "verify against a name the certificate carries (gnutls_session_set_verify_cert, gnutls-cli HOST)",
    "node": "connect to (or set tls: {{ servername }} to) a name the certificate carries; keep the default "
    "checkServerIdentity",
    "go": "set tls.Config{{ServerName: ...}} to a name the certificate carries",
    "rust": "pass a ServerName the certificate carries",
    "dotnet": "set TargetHost to a name the certificate carries (MailKit: connect with that host name)",
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
    "gnutls": "load the certificate and key (gnutls-cli --x509certfile client.pem --x509keyfile client-key.pem)",
    "node": "pass tls: {{ cert, key }} (PEM; the key in PKCS#8 or PKCS#1)",
    "go": 'set tls.Config{{Certificates: ...}} from tls.LoadX509KeyPair("client.pem", "client-key.pem")',
    "rust": "call with_client_auth_cert(chain, key) on the rustls ClientConfig builder (native-tls: "
    "Identity::from_pkcs8, which takes the PKCS#8 key {{client_key}})",
    "dotnet": 'add X509Certificate2.CreateFromPemFile("client.pem", "client-key.pem") to ClientCertificates',
    "command": "configure the client certificate and key",
}
_STARTTLS_KNOB: dict[str, str] = {
    "java": "set mail.{proto}.starttls.enable=true and mail.{proto}.starttls.required=true",
    "python": "call starttls(context=...) before logging in (smtplib.SMTP.starttls, IMAP4.starttls, POP3.stls)",
    "curl": "pass --ssl-reqd with a {proto}:// URL",
    "openssl": "pass -starttls {proto}",
    "swaks": "pass --tls",
    "msmtp": "set tls on and tls_starttls on",
    "gnutls": "pass --starttls-proto={proto}",
    "node": "set requireTLS: true and drop ignoreTLS (nodemailer)",
    "go": 'call (*smtp.Client).StartTLS before Auth, and fail when Extension("STARTTLS") is false',
    "rust": "use a STARTTLS transport that requires TLS (lettre: SmtpTransport::starttls_relay, Tls::Required)",
    "dotnet": "connect with SecureSocketOptions.StartTls (not StartTlsWhenAvailable, not None)",
    "command": "enable STARTTLS in the client",
}
_MODE_KNOB: dict[str, dict[bool, str]] = {
    "java": {True: "set mail.{proto}.ssl.enable=true", False: "set mail.{proto}.ssl.enable=false and use STARTTLS"},
    "python": {True: "use SMTP_SSL / IMAP4_SSL / POP3_SSL", False: "use SMTP / IMAP4 / POP3 and then STARTTLS"},
    "curl": {True: "use a {proto}s:// URL", False: "use a {proto}:// URL with --ssl-reqd"},
    "openssl": {True: "drop -starttls", False: "pass -starttls {proto}"},
    "swaks": {True: "pass --tls-on-connect", False: "pass --tls instead of --tls-on-connect"},
    "msmtp": {True: "set tls_starttls off", False: "set tls_starttls on"},
    "gnutls": {True: "drop --starttls-proto", False: "pass --starttls-proto={proto}"},
    "node": {True: "set secure: true", False: "set secure: false and requireTLS: true (STARTTLS)"},
    "go": {True: "dial with tls.Dial and hand the connection to smtp.NewClient", False: "smtp.Dial, then StartTLS"},
    "rust": {
        True: "use implicit TLS (lettre: SmtpTransport::relay, Tls::Wrapper)",
        False: "use STARTTLS (lettre: SmtpTransport::starttls_relay, Tls::Required)",
    },
    "dotnet": {
        True: "connect with SecureSocketOptions.SslOnConnect",
        False: "connect with SecureSocketOptions.StartTls",
    },
    "command": {True: "speak TLS from the first byte", False: "open in plaintext and send STARTTLS"},
}


def remedy(
    failure_class: str,
    *,
    cell: Cell | None = None,
    profile: ClientProfile | None = None,
    family: str | None = None,
    offered_versions: Sequence[str] | None = None,
    offered_ciphers: Sequence[str] | None = None,
) -> str:
    """A concrete fix for ``failure_class``, worded for the client family and the server of ``cell``.

    ``family`` overrides the profile's (a ``--command`` client named by its
    family); ``offered_versions`` and ``offered_ciphers`` are what the client
    really offered in its ClientHello (``None``: not seen; the profile's
    claims are used then). An empty ``offered_versions`` means no ClientHello
    was sent at all.
    """
    handler = _REMEDIES.get(failure_class)
    if handler is None:
        return "No known pattern matched; read the evidence and the transcript."
    return handler(
        _Ctx(
            cell,
            profile,
            family,
            tuple(offered_versions) if offered_versions is not None else None,
            tuple(offered_ciphers) if offered_ciphers is not None else None,
        )
    )


@dataclass
class _Ctx:
    cell: Cell | None
    profile: ClientProfile | None
    family_name: str | None = None
    offered_versions: tuple[str, ...] | None = None
    offered_ciphers: tuple[str, ...] | None = None

    @property
    def family(self) -> str:
        if self.family_name is not None:
            return self.family_name
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

    def on_server(self, knob: str) -> str:
        """How this cell's server says ``knob`` (``versions``, ``chain``, ``tls``: the backend's remedy
        hints); for an unknown server, how the container servers say it."""
        from .backends import REGISTRY, backend_class, docker_servers

        if self.server in REGISTRY:
            hint = backend_class(self.server).remedies.get(knob, "")
            if hint:
                return hint
        return "; ".join(
            f"{name}: {backend_class(name).remedies[knob]}"
            for name in docker_servers()
            if knob in backend_class(name).remedies
        )


_GO_VERSION = {"TLSv1": "VersionTLS10", "TLSv1.1": "VersionTLS11", "TLSv1.2": "VersionTLS12", "TLSv1.3": "VersionTLS13"}
_DOTNET_VERSION = {"TLSv1": "Tls", "TLSv1.1": "Tls11", "TLSv1.2": "Tls12", "TLSv1.3": "Tls13"}
_RUST_VERSION = {"TLSv1": "Tlsv10", "TLSv1.1": "Tlsv11", "TLSv1.2": "Tlsv12", "TLSv1.3": "Tlsv13"}


def _version_values(versions: Sequence[str]) -> dict[str, str]:
    """Every spelling the version knobs need, for the versions to allow (ascending)."""
    lo, hi = versions[0], versions[-1]
    modern = [v for v in versions if v in ("TLSv1.2", "TLSv1.3")] or ["TLSv1.2"]
    return {
        "want": " ".join(versions),
        "lo": _curl_v(lo),
        "hi": _curl_v(hi),
        "lo_name": lo,
        "hi_name": hi,
        "go_lo": f"tls.{_GO_VERSION[lo]}",
        "go_hi": f"tls.{_GO_VERSION[hi]}",
        "dotnet": " | ".join(f"SslProtocols.{_DOTNET_VERSION[v]}" for v in versions),
        "gnutls": ":".join(f"+VERS-TLS{_curl_v(v)}" for v in versions),
        "rust_versions": ", ".join(f"&rustls::version::TLS1{v[-1]}" for v in reversed(modern)),
        # native-tls has no TLS 1.3 minimum: TLSv1.2 is the closest it can say.
        "rust_min": f"native_tls::Protocol::{_RUST_VERSION[lo] if lo != 'TLSv1.3' else 'Tlsv12'}",
    }


def _fix_versions(ctx: _Ctx) -> str:
    server = ctx.cell.policy.versions if ctx.cell and ctx.cell.policy else ()
    secure = [v for v in server if v in SECURE_VERSIONS]
    configured = ctx.profile.versions if ctx.profile else ()
    said: list[str] = []
    sep = ", "
    if ctx.offered_versions is not None:
        # What the client really offered (its ClientHello) beats what its profile claims.
        sep = "; "
        offered = ctx.offered_versions
        said.append(
            f"the client offered {_offer_text(offered)}"
            if offered
            else "the client sent no ClientHello (no TLS version it was told to offer is enabled in its runtime)"
        )
        if server:
            said.append(f"the server accepts {_versions_text(server)}")
    else:
        offered = ctx.profile.effective_versions if ctx.profile else ()
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
    head = sep.join(said) + (sep if sep == "; " else ": ") if said else ""
    if server and not secure:
        return (
            f"{head}the server speaks only legacy TLS, and refusing it is right. Fix the server "
            f"({ctx.on_server('versions')}). Only if you must reach it: "
            + ctx.knob(_VERSION_KNOB, **_version_values(list(server)))
            + " and lower the security level (OpenSSL: @SECLEVEL=0 in the cipher string)"
        )
    fix = ctx.knob(_VERSION_KNOB, **_version_values(secure or ["TLSv1.2", "TLSv1.3"]))
    if ctx.family == "java":
        if ctx.offered_versions is not None and tuple(ctx.offered_versions) == ("TLSv1",):
            fix += (
                f" (javax.mail 1.4.x enables only TLSv1 when mail.{ctx.proto}.ssl.protocols is unset: set it, "
                "or upgrade to Jakarta/Angus Mail 2)"
            )
        elif ctx.offered_versions is not None and not ctx.offered_versions:
            fix += (
                f" (javax.mail 1.4.x enables only TLSv1 when mail.{ctx.proto}.ssl.protocols is unset, and JDK 17 "
                "disables TLSv1: set the property, or upgrade to Jakarta/Angus Mail 2)"
            )
        elif ctx.offered_versions is None and configured and not offered:
            fix += (
                " (javax.mail 1.4.5 enabled only TLSv1 when ssl.protocols was unset: upgrade to Jakarta/Angus Mail 2)"
            )
    return head + fix


def _curl_v(version: str) -> str:
    return {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}[version]


def _cipher_weakness(cell: Cell | None) -> str | None:
    """What the server's suites lack for a secure session (``None``: it offers a secure one).

    Read from the suites the server really has (its policy, expanded by the local
    OpenSSL, for the key type of its certificate), never from the cell's other
    faults: an ECDHE-AEAD list on a wrong-host cell is not "no forward secrecy".
    """
    policy = cell.policy if cell is not None else None
    if policy is None:
        return None
    if policy.accepts("TLSv1.3") and _server_tls13_suites(policy):
        return None
    if not policy.accepts("TLSv1.2"):
        return "legacy TLS versions only, where no suite is secure"
    suites = _server_ciphers(policy, cell.cert if cell is not None and cell.cert else CertProfile.VALID, "TLSv1.2")
    if not suites:
        return None  # nothing we can name: do not guess
    forward = [c for c in suites if c["kea"] in ("kx-ecdhe", "kx-dhe")]
    aead = [c for c in suites if c["aead"]]
    if any(c["aead"] for c in forward):
        return None
    if not forward and not aead:
        return "no forward secrecy and no AEAD"
    if not forward:
        return "no forward secrecy"
    if not aead:
        return "no AEAD"
    return "no suite with both forward secrecy and AEAD"


def _names(items: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _fix_ciphers(ctx: _Ctx) -> str:
    policy = ctx.cell.policy if ctx.cell is not None else None
    server = policy.ciphers if policy is not None and policy.ciphers else "the server's list"
    head = ""
    if ctx.offered_ciphers is not None:
        head = f"the client offered {_names(ctx.offered_ciphers) or 'no cipher suite'}; "
    weakness = _cipher_weakness(ctx.cell)
    if weakness is not None:
        return (
            f"{head}the server offers only {server} ({weakness}), and refusing it is right: "
            f"give the server ECDHE suites with AES-GCM or ChaCha20 (or TLS 1.3)"
        )
    first = (policy.ciphers or "ECDHE-RSA-AES128-GCM-SHA256").split(":")[0] if policy else "ECDHE-RSA-AES128-GCM-SHA256"
    return f"{head}the client and the server share no cipher (server: {server}): " + ctx.knob(
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
        f"configure the full chain on the server ({ctx.on_server('chain')}); clients must not paper over it"
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
        f"enable TLS on the server ({ctx.on_server('tls')}), or use its implicit-TLS port"
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


# --- vulnerabilities a hostile network shows (the classes of wire.attacks.VULNERABILITY_CLASSES) ---------------


def _fix_stripping(ctx: _Ctx) -> str:
    return (
        "the client went on in clear after a network removed or refused STARTTLS: treat a missing or refused "
        "STARTTLS as fatal, never fall back to plaintext for credentials or mail: " + ctx.knob(_STARTTLS_KNOB)
    )


def _fix_response_injection(ctx: _Ctx) -> str:
    return (
        "the client acted on plaintext it read before the TLS handshake (or on an answer that was not its own): "
        "discard everything buffered when STARTTLS is answered (or refuse when more data follows the answer), "
        "match IMAP answers to their own tag, and read the capabilities again over TLS"
    )


def _fix_command_injection(ctx: _Ctx) -> str:
    return (
        "the client pipelined cleartext behind STARTTLS: send nothing after STARTTLS/STLS until its answer, "
        "then only the TLS hello (RFC 3207 section 4.2, RFC 2595 section 3.1)"
    )


def _fix_tampering(ctx: _Ctx) -> str:
    return (
        "the client believed capabilities changed in clear and logged in without TLS: upgrade first whenever "
        "STARTTLS is offered (or required), and trust only the capabilities read over TLS"
    )


def _fix_interception(ctx: _Ctx) -> str:
    return (
        "the client accepted a certificate from a CA it must not trust and talked to an interceptor: verify the "
        "server's certificate against the CA it is issued by (and no other), and never turn verification off"
    )


def _fix_downgrade(ctx: _Ctx) -> str:
    return (
        "the client retried below TLS 1.2 (or in clear) after a middlebox reset its hello: never fall back below "
        "the configured floor; a retry at TLS 1.2 carries TLS_FALLBACK_SCSV (RFC 7507)"
    )


_REMEDIES: dict[str, Callable[[_Ctx], str]] = {
    "starttls-stripping": _fix_stripping,
    "response-injection": _fix_response_injection,
    "command-injection": _fix_command_injection,
    "negotiation-tampering": _fix_tampering,
    "tls-interception": _fix_interception,
    "tls-downgrade": _fix_downgrade,
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
