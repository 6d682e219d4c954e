"""Verify: probe every served cell and compare what it accepts with what it declares.

A compatibility matrix is only worth what its cells are worth: a cell called
``tls12-only`` that also takes TLSv1.1 makes every verdict built on it wrong.
:func:`verify_endpoint` compares one probe with one cell (versions, ciphers,
certificate profile, mode, AUTH before and after TLS, client certificates);
:func:`verify_endpoints` probes many cells side by side and returns a
:class:`VerifyReport` with a table and an ``ok`` flag.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import imaplib
import ipaddress
import poplib
import smtplib
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID
from pydantic import Field

from .connect import ProtocolError
from .manifest import Endpoint
from .pki import CERT_FAULTS, Issuer, Presented, session_intermediates
from .policy import VERSIONS, Cell, CertProfile, Mode, TLSPolicy
from .probe import AuthAttempt, CertificateInfo, CertificateReport, ProbeError, ProbeResult, probe
from .records import Record
from .stdclients import close_client, open_client
from .tls import expand_ciphers as policy_ciphers  # the cipher names a policy allows (re-exported)

__all__ = [
    "Mismatch",
    "CellVerdict",
    "VerifyReport",
    "verify_endpoint",
    "verify_endpoints",
    "probe_endpoint",
    "policy_ciphers",
    "cleartext_login_allowed",
    "named_suites",
    "server_dh_group",
    "weak_policy_mismatches",
]

#: The OpenSSL 3 verification message each certificate fault produces in a verifying client
#: (declared with the fault: :data:`pki.CERT_FAULTS`).
CERT_ERRORS: dict[CertProfile, tuple[str, ...]] = {
    profile: fault.verify_errors for profile, fault in CERT_FAULTS.items() if fault.verify_errors
}
_OLD_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2")

Progress = Callable[[str], None]


def _no_progress(_: str) -> None:
    return None


@dataclass(frozen=True)
class Mismatch:
    """One way a cell does not do what it declares."""

    cell_id: str
    aspect: str  # versions, ciphers, certificate, mode, auth, client-cert, probe
    expected: str
    actual: str

    def __str__(self) -> str:
        return f"{self.cell_id}: {self.aspect}: expected {self.expected}; found {self.actual}"

    def record(self) -> MismatchRecord:
        return MismatchRecord(cell=self.cell_id, aspect=self.aspect, expected=self.expected, actual=self.actual)

    def to_json(self) -> dict[str, Any]:
        return self.record().model_dump()


# --- the JSON document (mailtls verify --json): the models are the schema (docs/schemas/verify.json) ----


class MismatchRecord(Record):
    """One way a cell does not do what it declares."""

    cell: str
    aspect: str = Field(description="versions, ciphers, certificate, mode, auth, client-cert or probe")
    expected: str = Field(description="what the cell declares")
    actual: str = Field(description="what the probe found")


class CellVerdictRecord(Record):
    """One cell's outcome."""

    cell: str
    target: str = Field(description="host:port probed")
    ok: bool = Field(description="no mismatch")
    mismatches: list[MismatchRecord]
    probe: dict[str, Any] | None = Field(description="what the probe found (docs/probe.md); null if it could not run")
    elapsed_seconds: float


class VerifyDocument(Record):
    """Every cell probed against what it declares."""

    ok: bool = Field(description="no cell contradicts its declaration: the exit status is 0")
    cells: int = Field(description="cells verified")
    mismatched_cells: int
    elapsed_seconds: float
    verdicts: list[CellVerdictRecord]


# --- one cell -----------------------------------------------------------------------------------


def probe_endpoint(endpoint: Endpoint, *, timeout: float = 5.0, concurrency: int = 8, **kwargs: Any) -> ProbeResult:
    """Probe an endpoint as its cell says it is reached: mode, SNI name, session CA, client certificate.

    Plain cells are probed in STARTTLS mode (which reports that STARTTLS is not offered).
    """
    result = probe(
        endpoint.host,
        endpoint.port,
        protocol=endpoint.protocol,
        mode="implicit" if endpoint.mode is Mode.IMPLICIT else "starttls",
        server_hostname=endpoint.server_hostname,
        ca_file=endpoint.ca_file,
        client_cert=endpoint.client_cert_file if endpoint.cell.auth.client_cert else None,
        client_key=endpoint.client_key_file if endpoint.cell.auth.client_cert else None,
        # The test user's real credentials: logins are attempted in clear, not read off EHLO/CAPABILITY/CAPA.
        username=endpoint.username if endpoint.mode is not Mode.IMPLICIT else None,
        password=endpoint.password if endpoint.mode is not Mode.IMPLICIT else None,
        timeout=timeout,
        concurrency=concurrency,
        **kwargs,
    )
    if endpoint.cell.auth.client_cert and result.client_cert_required is False:
        # Dovecot (auth_ssl_require_client_cert) completes the handshake and refuses the login instead.
        refused, evidence = _login_without_client_cert(endpoint, timeout)
        result.client_cert_login_refused, result.client_cert_evidence = refused, evidence
    return result


def _login_without_client_cert(endpoint: Endpoint, timeout: float) -> tuple[bool | None, str]:
    """(refused, evidence) for a login with the test user's password but no client certificate.

    A refusal only counts when the same login with the certificate succeeds
    (otherwise the credentials, not the certificate, are the problem: None).
    """
    ok, evidence = _login(endpoint, timeout, client_cert=False)
    if ok:
        return False, "login succeeded without a client certificate"
    with_cert, twin = _login(endpoint, timeout, client_cert=True)
    if not with_cert:
        return None, f"login fails with the client certificate too ({twin}); without: {evidence}"
    return True, evidence


#: What a mail session can fail with before or during login: TLS, the socket, or the protocol's own errors.
_SESSION_ERRORS = (ssl.SSLError, OSError, ProtocolError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto)


def _login(endpoint: Endpoint, timeout: float, *, client_cert: bool) -> tuple[bool, str]:
    context = endpoint.client_context(client_cert=client_cert, verify=False)
    try:
        client = open_client(endpoint, context=context, timeout=timeout)
    except _SESSION_ERRORS as exc:
        return False, f"refused before login: {exc}"
    try:
        if isinstance(client, smtplib.SMTP | imaplib.IMAP4):
            client.login(endpoint.username, endpoint.password)
        else:
            client.user(endpoint.username)
            client.pass_(endpoint.password)
        return True, "login succeeded"
    except (smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto) as exc:
        return False, f"login refused: {exc}"
    except (ssl.SSLError, OSError) as exc:
        return False, f"connection dropped at login: {exc}"
    finally:
        close_client(client)


def verify_endpoint(endpoint: Endpoint, probe_result: ProbeResult) -> list[Mismatch]:
    """Every way ``probe_result`` contradicts ``endpoint``'s cell (empty: the cell tells the truth)."""
    cell = endpoint.cell
    found: list[Mismatch] = []

    def add(aspect: str, expected: str, actual: str) -> None:
        found.append(Mismatch(cell.id, aspect, expected, actual))

    pr = probe_result
    _check_mode(cell.mode, cell.auth.tls_only, endpoint.protocol, pr, add)
    _check_versions(cell.policy, pr, add)
    if cell.policy is not None:
        _check_ciphers(cell.policy, pr, add)
    if cell.cert is not None and pr.accepted_versions:
        if pr.certificate is None or not pr.certificate.chain:
            add("certificate", f"the {cell.cert} profile", "no certificate could be read")
        else:
            for expected, actual in _cert_problems(cell.cert, pr.certificate, endpoint, pr.notes):
                add("certificate", expected, actual)
    _check_auth(endpoint, pr, add)
    return found


def _check_mode(
    mode: Mode, tls_only: bool, protocol: str, pr: ProbeResult, add: Callable[[str, str, str], None]
) -> None:
    if mode is Mode.PLAIN:
        if pr.starttls_offered:
            add("mode", "plain (no STARTTLS)", "STARTTLS offered")
        return
    if mode is Mode.IMPLICIT:
        if not pr.accepted_versions:
            add("mode", "implicit TLS", "no TLS handshake completed")
        return
    if not pr.starttls_offered:
        add("mode", str(mode), "STARTTLS not offered")
        return
    want = mode is Mode.STARTTLS_REQUIRED
    got = pr.starttls_required
    if protocol != "smtp" and not want and got and tls_only:
        # IMAP and POP3 can only show "TLS required" as plaintext login refused, which tls_only AUTH also causes.
        return
    if got is not None and got != want:
        expected = "plaintext commands refused before STARTTLS" if want else "plaintext commands allowed"
        add("mode", f"{mode}: {expected}", pr.starttls_evidence or ("refused" if got else "allowed"))


def _check_versions(policy: TLSPolicy | None, pr: ProbeResult, add: Callable[[str, str, str], None]) -> None:
    declared = list(policy.versions) if policy else []
    accepted = pr.accepted_versions
    if declared == accepted:
        return
    extra = [v for v in accepted if v not in declared]
    missing = [v for v in declared if v not in accepted]
    detail = []
    if extra:
        detail.append(f"also accepts {', '.join(extra)}")
    if missing:
        why = "; ".join(f"{v}: {pr.versions[v].error}" for v in missing if v in pr.versions and pr.versions[v].error)
        detail.append(f"refuses {', '.join(missing)}" + (f" ({why})" if why else ""))
    add("versions", " ".join(declared) or "no TLS", f"{' '.join(accepted) or 'no TLS'}: {'; '.join(detail)}")


def _check_ciphers(policy: TLSPolicy, pr: ProbeResult, add: Callable[[str, str, str], None]) -> None:
    if policy.ciphers is not None:
        allowed = policy_ciphers(policy.openssl_ciphers())
        for version in _OLD_VERSIONS:
            if not pr.versions.get(version) or not pr.versions[version].accepted:
                continue
            extra = [c for c in pr.ciphers(version) if c not in allowed]
            if extra:
                add("ciphers", f"only {policy.ciphers!r} at {version}", f"also accepts {', '.join(extra)}")
    named = named_suites(policy)
    tls12 = pr.versions.get("TLSv1.2")
    if named and tls12 is not None and tls12.accepted and tls12.complete:
        missing12 = [c for c in named if c not in tls12.ciphers]
        if missing12:
            add("ciphers", f"each of {policy.ciphers!r} at TLSv1.2", f"refuses {', '.join(missing12)}")
    if policy.ciphersuites is not None and pr.versions.get("TLSv1.3") and pr.versions["TLSv1.3"].accepted:
        allowed13 = set(policy.ciphersuites.split(":"))
        got = pr.ciphers("TLSv1.3")
        extra = [s for s in got if s not in allowed13]
        if extra:
            add("ciphers", f"only {policy.ciphersuites!r} at TLSv1.3", f"also accepts {', '.join(extra)}")
        missing = [s for s in allowed13 if s not in got]
        if missing and pr.versions["TLSv1.3"].complete:
            add("ciphers", f"{policy.ciphersuites!r} at TLSv1.3", f"refuses {', '.join(missing)}")


def named_suites(policy: TLSPolicy) -> tuple[str, ...]:
    """The suites of a TLS 1.2 policy that names its suites one by one (``AES128-SHA:AES256-SHA``), each of which
    the server must accept; empty for any other policy (a keyword list, or TLS 1.3 accepted)."""
    if policy.ciphers is None or policy.max_version != "TLSv1.2" or policy.min_version != "TLSv1.2":
        return ()
    names = [n for n in policy.ciphers.split(":") if not n.startswith("@")]
    try:
        one_by_one = bool(names) and all(policy_ciphers(n + ":@SECLEVEL=0") == {n} for n in names)
    except ssl.SSLError:  # a keyword or exclusion OpenSSL selects nothing for alone
        one_by_one = False
    if not one_by_one:
        return ()
    return tuple(names)


def _cert_problems(
    profile: CertProfile, report: CertificateReport, endpoint: Endpoint, notes: Sequence[str]
) -> list[tuple[str, str]]:
    """(expected, actual) pairs where the presented chain does not have the profile's properties: the
    verifying handshake's verdict and error, then the fault's own check (:attr:`pki.CertFault.check`)."""
    leaf = report.leaf
    assert leaf is not None
    fault = profile.fault
    problems: list[tuple[str, str]] = []
    level0 = any("security level 0" in n for n in notes)
    waived = level0 and fault.max_seclevel is not None  # a level-0 client takes weak keys and SHA-1
    expected = fault.verifies_by_default  # revocation and CN fallback are not checked by OpenSSL's defaults
    if report.verifies is None:
        problems.append((f"a verifying handshake ({profile})", report.verify_error or "it failed"))
    elif report.verifies != expected and not waived:
        if expected:
            problems.append(("a certificate that verifies", f"verification fails: {report.verify_error}"))
        else:
            problems.append((f"verification to fail ({profile})", "the certificate verifies"))
    elif not report.verifies and profile in CERT_ERRORS:
        error = report.verify_error or ""
        if not any(fragment.lower() in error.lower() for fragment in CERT_ERRORS[profile]):
            problems.append((f"verify error {CERT_ERRORS[profile][0]!r}", error))

    try:
        chain = tuple(x509.load_der_x509_certificate(c.der) for c in report.chain)
    except ValueError as exc:
        return [*problems, ("a readable presented chain", str(exc))]
    # Without a subjectAltName, OpenSSL's default (Python's, curl's) falls back to the subject CN.
    names = leaf.sans or [str(a.value) for a in chain[0].subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    names_match = _name_matches(names, endpoint.server_hostname)
    seen = Presented(
        chain=chain,
        server_hostname=endpoint.server_hostname,
        issuer=_issuer_kind(leaf, report.chain, endpoint.ca_file),
        names_match=names_match,
        handshake=functools.partial(_handshake, endpoint),
        root=_ca_cert(endpoint.ca_file),
    )
    problems += [(f"{profile}: {want}", found) for want, found in fault.check(seen)]
    if fault.verifies and not names_match:
        problems.append((f"a name matching {endpoint.server_hostname}", ", ".join(leaf.sans) or "no SAN"))
    return problems


def _handshake(endpoint: Endpoint, adjust: Callable[[ssl.SSLContext], None], timeout: float = 5.0) -> str | None:
    """One more verifying session with ``endpoint`` (the session CA, its host name), its context changed by
    ``adjust``: ``None`` when the certificate verified, else OpenSSL's verify error (or why it failed)."""
    ctx = endpoint.client_context(client_cert=endpoint.cell.auth.client_cert)
    adjust(ctx)
    try:
        client = open_client(endpoint, context=ctx, timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        return str(exc.verify_message)
    except _SESSION_ERRORS as exc:
        return f"handshake failed: {exc}"
    close_client(client)
    return None


def _check_auth(endpoint: Endpoint, pr: ProbeResult, add: Callable[[str, str, str], None]) -> None:
    cell = endpoint.cell
    auth = cell.auth
    mechanisms = sorted(auth.mechanisms)
    if cell.mode is not Mode.IMPLICIT and pr.auth_before_tls is not None:
        expected = [] if auth.tls_only else mechanisms
        if sorted(pr.auth_before_tls) != expected:
            add("auth", f"before TLS: {' '.join(expected) or 'no AUTH'}", " ".join(pr.auth_before_tls) or "no AUTH")
    if cell.tls and pr.auth_after_tls is not None and sorted(pr.auth_after_tls) != mechanisms:
        add("auth", f"after TLS: {' '.join(mechanisms) or 'no AUTH'}", " ".join(pr.auth_after_tls) or "no AUTH")
    _check_cleartext_logins(endpoint, pr.auth_attempts, add)
    if endpoint.protocol == "smtp" and pr.auth_required is not None and pr.auth_required != auth.required:
        want = "AUTH required before MAIL/RCPT" if auth.required else "mail accepted without AUTH"
        add("auth", want, "AUTH required" if pr.auth_required else "mail accepted without AUTH")
    if auth.client_cert:
        if endpoint.client_cert_file is None:
            add("client-cert", "a client certificate in the manifest", "none to present")
        elif pr.client_cert_required is False and pr.client_cert_login_refused is not True:
            found = pr.client_cert_evidence or "the handshake succeeds without one"
            add("client-cert", "handshakes or logins without a client certificate refused", found)


#: The login every server of a protocol has (SMTP's is SASL PLAIN); the others count only when advertised.
_BASE_LOGIN = {"smtp": "AUTH PLAIN", "imap": "LOGIN", "pop3": "USER/PASS"}


def cleartext_login_allowed(cell: Cell) -> bool:
    """Whether ``cell`` must accept a login in clear, before STARTTLS (else it must refuse every one).

    Refused: STARTTLS required, an auth policy that allows AUTH only after TLS, and SMTP without AUTH.
    """
    if cell.mode is Mode.IMPLICIT or cell.mode is Mode.STARTTLS_REQUIRED or cell.auth.tls_only:
        return False
    return bool(cell.auth.mechanisms) or cell.protocol != "smtp"


def _check_cleartext_logins(
    endpoint: Endpoint, attempts: Sequence[AuthAttempt] | None, add: Callable[[str, str, str], None]
) -> None:
    """Logins really attempted in clear must succeed exactly where the cell allows them."""
    if attempts is None:
        return
    cell = endpoint.cell
    if not cleartext_login_allowed(cell):
        why = "STARTTLS required" if cell.mode is Mode.STARTTLS_REQUIRED else f"auth policy {cell.auth.name}"
        for a in attempts:
            if a.accepted:
                add("auth", f"{a.method} in clear refused before STARTTLS ({why})", f"sent {a.sent}: {a.answer}")
        return
    for a in attempts:
        # SASL PLAIN beside IMAP LOGIN / POP3 USER-PASS is only promised where the cell offers PLAIN.
        base = a.method == _BASE_LOGIN[endpoint.protocol] and endpoint.protocol != "smtp"
        must = base or "PLAIN" in cell.auth.mechanisms
        if must and not a.accepted:
            add("auth", f"{a.method} in clear accepted ({cell.auth.name})", f"sent {a.sent}: {a.answer}")


@cache
def _ca_cert(ca_file: str) -> x509.Certificate | None:
    try:
        with open(ca_file, "rb") as fh:
            return x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError):
        return None


def _ski(cert: x509.Certificate) -> str | None:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    except (x509.ExtensionNotFound, ValueError):
        return None


def _aki(cert: x509.Certificate) -> str | None:
    try:
        digest = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    except (x509.ExtensionNotFound, ValueError):
        return None
    return digest.hex() if digest else None


def _signed_by(aki: str | None, issuer: str, cert: x509.Certificate) -> bool:
    """Whether a certificate with authority key id ``aki`` and issuer name ``issuer`` names ``cert`` as its signer.

    Key identifiers decide when both sides have one (two CAs may share a name); names otherwise.
    """
    ski = _ski(cert)
    if aki is not None and ski is not None:
        return aki == ski
    return issuer == cert.subject.rfc4514_string()


def _issuer_kind(leaf: CertificateInfo, chain: Sequence[CertificateInfo], ca_file: str) -> Issuer:
    """Who issued ``leaf``: compared by key identifier (else name) with the session root and its intermediates."""
    if leaf.self_signed:
        return Issuer.SELF
    root = _ca_cert(ca_file)
    if root is not None and _signed_by(leaf.authority_key_id, leaf.issuer, root):
        return Issuer.ROOT
    for intermediate in session_intermediates(ca_file):
        if not _signed_by(leaf.authority_key_id, leaf.issuer, intermediate):
            continue
        if root is not None and not _signed_by(_aki(intermediate), intermediate.issuer.rfc4514_string(), root):
            continue  # an intermediate of another session's root
        sent = any(c.subject_key_id is not None and c.subject_key_id == _ski(intermediate) for c in chain[1:])
        return Issuer.INTERMEDIATE_SENT if sent else Issuer.INTERMEDIATE_WITHHELD
    return Issuer.FOREIGN


def _name_matches(sans: Iterable[str], name: str) -> bool:
    try:
        ip = ipaddress.ip_address(name)
        return any(_same_ip(san, ip) for san in sans)
    except ValueError:
        pass
    name = name.lower().rstrip(".")
    for san in sans:
        san = san.lower().rstrip(".")
        if san == name:
            return True
        if san.startswith("*.") and "." in name and name.split(".", 1)[1] == san[2:]:
            return True
    return False


def _same_ip(san: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(san) == ip
    except ValueError:
        return False


# --- weak policies, both ways --------------------------------------------------------------------


def _default_refusal(cell: Cell) -> str | None:
    """The class a client with the default profile (Python's default context, the session CA) must fail to
    negotiate ``cell`` with, when the oracle expects it to fail in the cipher choice (``no-shared-cipher``) or at
    the server's key exchange (``weak-dh``); ``None`` otherwise."""
    from .oracle import ClientProfile, expect  # the oracle imports the probe's neighbours

    outcome = expect(ClientProfile("default-context", scope="handshake"), cell).outcome
    return outcome if outcome in ("no-shared-cipher", "weak-dh") else None


#: What OpenSSL 3 says when a client at security level 2 refuses the server's DH group.
DH_TOO_SMALL = "dh key too small"


def weak_policy_mismatches(endpoint: Endpoint, timeout: float = 5.0) -> list[Mismatch]:
    """Real handshakes on a cell whose policy names its suites one by one (:func:`named_suites`): a permissive
    client offering exactly those suites succeeds and negotiates one of them (a NULL policy: a NULL suite); and
    where the oracle says a default client shares no suite with the cell, a default context (the session CA,
    Python's default suites and security level) is refused in the handshake. A policy with a DH group size
    (``dh_bits``) is also read on the wire: the server's ServerKeyExchange carries a prime of exactly that size,
    and where the oracle expects ``weak-dh`` the default context refuses with OpenSSL's "dh key too small"."""
    cell = endpoint.cell
    policy = cell.policy
    if policy is None or cell.cert is None or not cell.cert.verifies or not named_suites(policy):
        return []
    found: list[Mismatch] = []
    allowed = policy_ciphers(policy.openssl_ciphers())
    exact = endpoint.client_context("TLSv1.2", ciphers=policy.openssl_ciphers())
    negotiated, error = _negotiate(endpoint, exact, timeout)
    if negotiated is None:
        found.append(Mismatch(cell.id, "ciphers", f"a handshake offering exactly {policy.ciphers!r}", f"{error}"))
    elif negotiated not in allowed:
        found.append(Mismatch(cell.id, "ciphers", f"one of {policy.ciphers!r} negotiated", negotiated))
    if policy.dh_bits is not None:
        try:
            suite, bits = server_dh_group(endpoint, named_suites(policy), timeout)
        except (OSError, ProtocolError) as exc:
            suite, bits = f"the connection failed: {exc}", None
        if bits != policy.dh_bits:
            got = (
                f"{bits}-bit group ({suite})" if bits is not None else f"no DH group read ({suite or 'no ServerHello'})"
            )
            found.append(Mismatch(cell.id, "ciphers", f"a {policy.dh_bits}-bit DH group in the ServerKeyExchange", got))
    refusal = _default_refusal(cell)
    if refusal is not None:
        negotiated, error = _negotiate(endpoint, endpoint.client_context(), timeout)
        what = "no shared suite" if refusal == "no-shared-cipher" else f"'{DH_TOO_SMALL}'"
        if negotiated is not None:
            found.append(Mismatch(cell.id, "ciphers", f"a default client context refused ({what})", f"{negotiated}"))
        elif error is not None and error.startswith("certificate:"):
            found.append(Mismatch(cell.id, "ciphers", "a default client refused in the cipher choice", error))
        elif refusal == "weak-dh" and DH_TOO_SMALL not in (error or "").lower():
            found.append(Mismatch(cell.id, "ciphers", f"a default client refused with '{DH_TOO_SMALL}'", f"{error}"))
    return found


def server_dh_group(endpoint: Endpoint, suites: Sequence[str], timeout: float = 5.0) -> tuple[str | None, int | None]:
    """(the suite the server picks from ``suites``, the size in bits of its DH group's prime) as a raw TLS 1.2
    ClientHello reads them from the ServerHello and the ServerKeyExchange (after STARTTLS where the cell needs it);
    the size is ``None`` for a suite without finite-field DHE, both are ``None`` when the server refused."""
    from .connect import plain_exchange
    from .hello import hello_template
    from .hello import server_dh_bits as read_dh_bits
    from .upstream import dial

    template = hello_template("TLSv1.2", endpoint.server_hostname)
    with dial(endpoint.host, endpoint.port, timeout) as sock:
        if endpoint.mode is not Mode.IMPLICIT:
            plain_exchange(sock, endpoint.protocol, starttls=True)
        return read_dh_bits(sock, template, suites)


def _negotiate(endpoint: Endpoint, ctx: ssl.SSLContext, timeout: float) -> tuple[str | None, str | None]:
    """(negotiated suite, None) after a full session opening with ``ctx``, or (None, why it failed)."""
    try:
        client = open_client(endpoint, context=ctx, timeout=timeout)
    except ssl.SSLCertVerificationError as exc:
        return None, f"certificate: {exc.verify_message}"
    except _SESSION_ERRORS as exc:
        return None, f"handshake failed: {exc}"
    try:
        sock = client.sock
        cipher = sock.cipher() if isinstance(sock, ssl.SSLSocket) else None
        return (cipher[0], None) if cipher else (None, "no TLS session")
    finally:
        close_client(client)


# --- many cells ---------------------------------------------------------------------------------


@dataclass
class CellVerdict:
    """One cell's outcome: its mismatches, the probe behind them, or why it could not be probed."""

    endpoint: Endpoint
    mismatches: list[Mismatch] = field(default_factory=list)
    probe: ProbeResult | None = None
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def record(self) -> CellVerdictRecord:
        return CellVerdictRecord(
            cell=self.endpoint.id,
            target=f"{self.endpoint.host}:{self.endpoint.port}",
            ok=self.ok,
            mismatches=[m.record() for m in self.mismatches],
            probe=self.probe.to_json() if self.probe else None,
            elapsed_seconds=round(self.elapsed, 3),
        )

    def to_json(self) -> dict[str, Any]:
        return self.record().model_dump()


@dataclass
class VerifyReport:
    """Verdicts for every cell; ``ok`` when no cell contradicts its declaration."""

    verdicts: list[CellVerdict]
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    @property
    def mismatches(self) -> list[Mismatch]:
        return [m for v in self.verdicts for m in v.mismatches]

    def document(self) -> VerifyDocument:
        """The ``mailtls verify --json`` document."""
        return VerifyDocument(
            ok=self.ok,
            cells=len(self.verdicts),
            mismatched_cells=sum(not v.ok for v in self.verdicts),
            elapsed_seconds=round(self.elapsed, 3),
            verdicts=[v.record() for v in self.verdicts],
        )

    def to_json(self) -> dict[str, Any]:
        return self.document().model_dump()

    def render_table(self) -> str:
        """A fixed-width table (one row per cell), then every mismatch spelled out."""
        header = ("CELL", "VERSIONS", "CIPHERS", "CERT", "STARTTLS", "AUTH BEFORE/AFTER", "RESULT")
        rows = [header]
        for v in self.verdicts:
            rows.append(_row(v))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        bad = [m for m in self.mismatches]
        if bad:
            lines.append("")
            lines.append(f"{len(bad)} mismatch(es):")
            lines.extend(f"  {m}" for m in bad)
        total = len(self.verdicts)
        failed = sum(not v.ok for v in self.verdicts)
        lines.append("")
        verdict = "all cells match their declaration" if self.ok else f"{failed} of {total} cells do NOT match"
        lines.append(f"{total} cells verified in {self.elapsed:.1f} s: {verdict}")
        return "\n".join(lines)


def _short(version: str) -> str:
    return {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}[version]


def _row(v: CellVerdict) -> tuple[str, str, str, str, str, str, str]:
    pr = v.probe
    aspects = sorted({m.aspect for m in v.mismatches})
    result = "ok" if v.ok else "MISMATCH: " + ",".join(aspects)
    if pr is None:
        return (v.endpoint.id, "-", "-", "-", "-", "-", result)
    versions = " ".join(_short(x) for x in pr.accepted_versions) or "none"
    ciphers = "/".join(str(len(pr.ciphers(x))) for x in VERSIONS if pr.versions.get(x) and pr.versions[x].accepted)
    cert = "-"
    if pr.certificate is not None and pr.certificate.leaf is not None:
        leaf = pr.certificate.leaf
        state = "verifies" if pr.certificate.verifies else (pr.certificate.verify_error or "fails")[:28]
        cert = f"{leaf.key_type}{leaf.key_size} {state}"
    if pr.mode == "implicit":
        starttls = "implicit"
    elif not pr.starttls_offered:
        starttls = "not offered"
    else:
        starttls = "required" if pr.starttls_required else "offered"
    before = "-" if pr.auth_before_tls is None else (",".join(pr.auth_before_tls) or "none")
    after = "-" if pr.auth_after_tls is None else (",".join(pr.auth_after_tls) or "none")
    return (v.endpoint.id, versions, ciphers or "-", cert, starttls, f"{before} / {after}", result)


def verify_endpoints(
    endpoints: Sequence[Endpoint],
    progress: Progress = _no_progress,
    *,
    timeout: float = 5.0,
    workers: int = 8,
    concurrency: int = 4,
    budget: float = 120.0,
) -> VerifyReport:
    """Probe every endpoint (``workers`` cells at a time) and compare each with its cell.

    A cell that cannot be probed at all (closed port, plaintext where implicit
    TLS is declared, ...) is a mismatch of aspect ``probe``, never an exception.
    """
    started = time.monotonic()

    def one(endpoint: Endpoint) -> CellVerdict:
        t0 = time.monotonic()
        try:
            result = probe_endpoint(endpoint, timeout=timeout, concurrency=concurrency, budget=budget)
        except ProbeError as exc:
            verdict = CellVerdict(
                endpoint, [Mismatch(endpoint.id, "probe", f"a reachable {endpoint.mode} cell", str(exc))]
            )
        else:
            mismatches = verify_endpoint(endpoint, result) + weak_policy_mismatches(endpoint, timeout)
            verdict = CellVerdict(endpoint, mismatches, result)
        verdict.elapsed = time.monotonic() - t0
        state = "ok" if verdict.ok else f"MISMATCH ({len(verdict.mismatches)})"
        progress(f"verify {endpoint.id}: {state} in {verdict.elapsed:.2f} s")
        return verdict

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mailtls-verify") as pool:
        verdicts = list(pool.map(one, endpoints))
    return VerifyReport(verdicts, time.monotonic() - started)
