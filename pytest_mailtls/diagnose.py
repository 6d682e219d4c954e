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

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, Field

# _server_ciphers/_server_tls13_suites: the cell's real suites, so that a remedy names only what is really missing.
from .clients.families import client_families, client_family
from .oracle import (
    FAILURE_CLASSES,
    SECURE_VERSIONS,
    ClientProfile,
    _server_ciphers,
    _server_tls13_suites,
    jsse_to_openssl,
)
from .policy import VERSIONS, Cell, CertProfile, Mode
from .records import Record

if TYPE_CHECKING:
    from .clients.families import ClientFamily

__all__ = [
    "UNCLASSIFIED",
    "Diagnosis",
    "Finding",
    "Rule",
    "client_table",
    "client_tables",
    "server_tables",
    "rule",
    "reply_code",
    "CHAIN_CLASSES",
    "DATE_CLASSES",
    "HANGUP_CLASSES",
    "HANDSHAKE_CLASSES",
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
    "certificate-revoked",
    "wrong-key-usage",
    "name-constraint-violation",
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
    (`` 535 5.7.8``). ``sessionId=0c535408`` and ``127.0.0.1:53574`` never match, and neither do curl's TLS
    alert numbers (``TLS alert, handshake failure (552)``, ``bad certificate (554)``: 512 plus the alert).
    """
    alt = "|".join(codes)
    return (
        rf"(?:^\s*|[<>~*]\s*|:\s+|(?<!handshake failure )(?<!bad certificate )\(|\bresponseCode:?\s*)"
        rf"(?:{alt})(?=[\s,:)\-]|$)"
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
    _rule(r"\bcertificate revoked\b|alert certificate revoked|unable to get certificate CRL", "certificate-revoked"),
    _rule(r"unsuitable certificate purpose|\binvalid purpose\b", "wrong-key-usage"),
    _rule(
        r"(?:permitted|excluded) subtree violation|name constraints? (?:violation|check failed)",
        "name-constraint-violation",
    ),
    _rule(r"alert protocol version|\bunsupported protocol\b|no protocols available", "protocol-version-mismatch"),
    _rule(
        r"\bversion too low\b|wrong ssl version|\bunsupported_protocol\b|legacy sigalg disallowed",
        "protocol-version-mismatch",
    ),
    _rule(r"inappropriate fallback", "protocol-version-mismatch"),
    _rule(r"no ciphers available|no cipher match|no shared cipher", "no-shared-cipher"),
    # The client refused the server's DH group (OpenSSL 3 below 2048 bits at security level 2).
    _rule(r"\bdh key too small\b|\bDH_KEY_TOO_SMALL\b", "weak-dh", weight=5),
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
    # A temporary or permanent refusal of the greeting, the sender, a recipient or the message (not of TLS or AUTH).
    _rule(_code("421", "450", "451", "452", "550", "551", "552", "553", "554"), "server-refused"),
    _rule(
        r"SMTPRecipientsRefused|SMTPSenderRefused|SMTPDataError|SMTPConnectError|Recipient address rejected|"
        r"Sender address rejected|\bSYS/TEMP\b|\[UNAVAILABLE\]|\[OVERQUOTA\]",
        "server-refused",
    ),
    _rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
    # A text about certificates is about a certificate class, whatever else a fallback may think.
    _rule(r"\bcertificates?\b", *_CERT, "client-certificate-required", weight=1),
)


def _tables(*tables: tuple[Rule, ...]) -> tuple[Rule, ...]:
    """Tables joined in order, each rule once (a family reading several tables must not count a rule twice)."""
    return tuple(dict.fromkeys(rule for table in tables for rule in table))


@functools.cache
def client_table(family: str | None) -> tuple[Rule, ...]:
    """The table that reads the errors of ``family`` (a name no family module declares: the generic family's):
    the family's own words first (:attr:`ClientFamily.rules`), then OpenSSL's reasons if it prints them,
    then the words every family may print."""
    spec = client_family(family)
    return _tables(spec.rules(), OPENSSL_CLIENT if spec.openssl_reasons else (), COMMON)


def client_tables() -> dict[str, tuple[Rule, ...]]:
    """Each client family's table, as its family module declares it."""
    return {spec.name: client_table(spec.name) for spec in client_families()}


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

#: Shared helpers for the tables that backends (``Backend.log_rules``) and client families
#: (``ClientFamily.rules``) declare.
rule = _rule
reply_code = _code
CHAIN_CLASSES = _CHAIN
DATE_CLASSES = _DATES
HANGUP_CLASSES = _HANGUP
HANDSHAKE_CLASSES = _HANDSHAKE


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
    family: str | None = None,
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
    family; none or an unknown name: the generic family, which reads every table); ``server``: which server table reads ``server_lines``;
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
    client_matches = match_table(client_table(family), client_lines, source="client")
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
# Worded in the client family's own knobs (``ClientFamily.knobs``; pytest_mailtls.clients.families.KNOBS says
# what each one asks and which values its template may use).


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
    def family(self) -> ClientFamily:
        """The client's family (the generic one when neither the caller nor the profile names one)."""
        if self.family_name is not None:
            return client_family(self.family_name)
        return client_family(self.profile.family if self.profile is not None else None)

    @property
    def proto(self) -> str:
        return str(self.cell.protocol) if self.cell is not None else "smtp"

    @property
    def server(self) -> str:
        return self.cell.server if self.cell is not None else ""

    def knob(self, name: str, **values: str) -> str:
        """How the client's family says knob ``name`` (see ``clients.families.KNOBS``), for this cell."""
        return self.family.knob(name, proto=self.proto, ca="the session CA file (ca.pem)", **values)

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


def _version_values(family: ClientFamily, versions: Sequence[str]) -> dict[str, str]:
    """Every spelling the version knob of ``family`` needs, for the versions to allow (ascending)."""
    return {
        "want": " ".join(versions),
        "lo_name": versions[0],
        "hi_name": versions[-1],
        **family.version_words(versions),
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
                    + (f" ({disabled_by})" if (disabled_by := ctx.knob("disabled-by")) else "")
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
            + ctx.knob("versions", **_version_values(ctx.family, list(server)))
            + " and lower the security level (OpenSSL: @SECLEVEL=0 in the cipher string)"
        )
    fix = ctx.knob("versions", **_version_values(ctx.family, secure or ["TLSv1.2", "TLSv1.3"]))
    # A family's note on why its client offered what it did (javax.mail 1.4 enables only TLSv1, ...).
    if ctx.offered_versions is not None and tuple(ctx.offered_versions) == ("TLSv1",):
        note = ctx.knob("only-tls1")
    elif ctx.offered_versions is not None and not ctx.offered_versions:
        note = ctx.knob("offered-none")
    elif ctx.offered_versions is None and configured and not offered:
        note = ctx.knob("runtime-disabled")
    else:
        note = ""
    if note:
        fix += f" ({note})"
    return head + fix


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
    if policy.weak_dh:
        return f"DHE only, over a {policy.dh_bits}-bit DH group (Logjam-era, under 2048 bits)"
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
        "ciphers", openssl=first, jsse=_openssl_to_jsse(first)
    )


def _openssl_to_jsse(name: str) -> str:
    """The IANA (JSSE) name of an OpenSSL suite name, as the families' default suite lists spell it."""
    for spec in client_families():
        for jsse in spec.default_suites:
            if jsse_to_openssl(jsse) == name:
                return jsse
    return name


def _fix_untrusted(ctx: _Ctx) -> str:
    fault = ctx.cell.cert.fault if ctx.cell is not None and ctx.cell.cert is not None else None
    if fault is not None and fault.server_remedy:
        return fault.server_remedy  # declared with the fault (pki.CERT_FAULTS)
    if ctx.profile is not None and not ctx.profile.trusts_ca:
        return "the client does not trust the CA that issued the server's certificate: " + ctx.knob("trust")
    return (
        "the client cannot chain the server's certificate to a CA it trusts: make the client trust the issuing CA ("
        + ctx.knob("trust")
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
        "name, or " + ctx.knob("hostname")
    )


def _fix_expired(ctx: _Ctx) -> str:
    return "the server's certificate has expired: renew it on the server; clients must keep rejecting it"


def _fix_not_yet_valid(ctx: _Ctx) -> str:
    return (
        "the server's certificate is not valid yet (notBefore in the future): check the clocks of server and "
        "client, or reissue the certificate with a current notBefore"
    )


def _fix_weak_dh(ctx: _Ctx) -> str:
    policy = ctx.cell.policy if ctx.cell is not None else None
    bits = f"a {policy.dh_bits}-bit" if policy is not None and policy.dh_bits else "a small"
    return (
        f"the server's DHE key exchange uses {bits} DH group (under 2048 bits, breakable since Logjam), and refusing "
        "it is right: give the server a 2048-bit group or more (RFC 7919 ffdhe2048) or ECDHE suites; do not lower "
        "the client's security level or its DH minimum"
    )


def _fix_weak(ctx: _Ctx) -> str:
    return (
        "the server's certificate uses an RSA key under 2048 bits or a SHA-1 signature, refused at OpenSSL "
        "security level 2: reissue it with RSA-2048+ or ECDSA P-256 and SHA-256; do not lower the client's level"
    )


def _fix_revoked(ctx: _Ctx) -> str:
    return (
        "the server's certificate is revoked by its CA (on the CRL, OCSP says revoked), or a client that hard-fails "
        "could not learn its status: install a certificate that is not revoked on the server (and keep its CRL and "
        "OCSP endpoints reachable); clients must keep refusing revoked certificates"
    )


def _fix_key_usage(ctx: _Ctx) -> str:
    return (
        "the server's certificate is not issued for TLS servers (its extended key usage lacks serverAuth): reissue "
        "it with extendedKeyUsage serverAuth; clients must keep refusing it"
    )


def _fix_name_constraints(ctx: _Ctx) -> str:
    return (
        "the server's certificate names a host its intermediate CA may not issue for (name constraints): reissue it "
        "from a CA whose permitted subtrees cover the name; clients must keep refusing it"
    )


def _fix_mode(ctx: _Ctx) -> str:
    implicit = ctx.cell is not None and ctx.cell.mode is Mode.IMPLICIT
    where = f"port {ctx.cell.service.name}" if ctx.cell is not None else "this port"
    if implicit:
        return f"{where} speaks TLS from the first byte (implicit TLS): " + ctx.knob("implicit-tls")
    return f"{where} opens in plaintext and upgrades with STARTTLS: " + ctx.knob("plaintext-first")


def _fix_not_offered(ctx: _Ctx) -> str:
    return (
        "the server does not offer STARTTLS on this port, and refusing to go on in plaintext is right: "
        f"enable TLS on the server ({ctx.on_server('tls')}), or use its implicit-TLS port"
    )


def _fix_required(ctx: _Ctx) -> str:
    return "the server requires TLS before login or mail: " + ctx.knob("starttls")


def _fix_auth(ctx: _Ctx) -> str:
    setting = ctx.knob("smtp-auth") if ctx.proto == "smtp" else ""
    extra = f" and {setting}" if setting else ""
    return f"the server rejected (or did not receive) the credentials: check user name and password{extra}"


def _fix_server_refused(ctx: _Ctx) -> str:
    return (
        "the server refused the session or the message (a 4xx/5xx answer, NO, -ERR) or dropped the connection: "
        "nothing to fix in TLS; a 4xx is temporary (retry later), a 5xx permanent (report it, never retry as is)"
    )


def _fix_client_cert(ctx: _Ctx) -> str:
    return "the server requires a client certificate issued by the CA it trusts for clients: " + ctx.knob("client-cert")


# --- vulnerabilities a hostile network shows (the classes of wire.attacks.VULNERABILITY_CLASSES) ---------------


def _fix_stripping(ctx: _Ctx) -> str:
    return (
        "the client went on in clear after a network removed or refused STARTTLS: treat a missing or refused "
        "STARTTLS as fatal, never fall back to plaintext for credentials or mail: " + ctx.knob("starttls")
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


def _fix_lost_mail(ctx: _Ctx) -> str:
    return (
        "the client reported success for mail the server never accepted: treat any answer but 2xx to MAIL, every "
        "RCPT refused, and anything but 2xx after the end of DATA (or a connection lost before it) as a failure: "
        "exit non-zero or raise, and queue a retry for 4xx only"
    )


def _fix_ignored_error(ctx: _Ctx) -> str:
    return (
        "the client reported success although the server refused a step (its greeting, the login, the mailbox, "
        "the message): check every answer (a tagged NO/BAD, -ERR, 4xx/5xx) and fail when it is not a success"
    )


def _fix_retry_storm(ctx: _Ctx) -> str:
    return (
        "the client reconnected at once for what the server refused: never retry a permanent refusal (5xx, NO "
        "[AUTHENTICATIONFAILED], -ERR [AUTH]) as it is; retry a temporary one (4xx) later, with a growing delay "
        "(RFC 5321 section 4.5.4.1: at least 30 minutes between attempts for a queue)"
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
    "lost-mail": _fix_lost_mail,
    "ignored-error": _fix_ignored_error,
    "retry-storm": _fix_retry_storm,
    "protocol-version-mismatch": _fix_versions,
    "no-shared-cipher": _fix_ciphers,
    "weak-dh": _fix_weak_dh,
    "untrusted-certificate": _fix_untrusted,
    "incomplete-chain": _fix_chain,
    "hostname-mismatch": _fix_host,
    "certificate-expired": _fix_expired,
    "certificate-not-yet-valid": _fix_not_yet_valid,
    "weak-key-or-signature": _fix_weak,
    "certificate-revoked": _fix_revoked,
    "wrong-key-usage": _fix_key_usage,
    "name-constraint-violation": _fix_name_constraints,
    "wrong-tls-mode": _fix_mode,
    "starttls-not-offered": _fix_not_offered,
    "starttls-required": _fix_required,
    "auth-failed": _fix_auth,
    "client-certificate-required": _fix_client_cert,
    "server-refused": _fix_server_refused,
}
