"""The session's throwaway PKI: a trustme CA, and every certificate fault as one spec (how it is made, what
verify checks in the presented chain, how clients must take it).

Everything is written under one directory (the session's temp dir) and made
lazily, once per profile. Valid certificates name ``server_hostname``
(``localhost`` by default), ``mail.mailtls.test`` and ``127.0.0.1``.
A new certificate fault is one :class:`CertFault` entry in :data:`CERT_FAULTS`
(plus its ``CertProfile`` member); a profile without one fails at import.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar, cast

import trustme
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from .errors import MailTLSError
from .policy import CertProfile
from .revocation import CLOSED_PORT, CRL_NAME, STATUS_NAME, Responder, write_crl

__all__ = [
    "CERT_FAULTS",
    "CertFault",
    "Issuer",
    "Presented",
    "SessionPKI",
    "ServerCertFiles",
    "ClientCertFiles",
    "SERVER_NAMES",
    "WRONG_HOST",
    "PKCS1_KEY_NAME",
    "REVOCATION_DIR",
    "pkcs1_key_file",
    "load_own_key",
    "session_intermediates",
]

#: Names every valid server certificate carries besides ``server_hostname``.
SERVER_NAMES = ("mail.mailtls.test", "127.0.0.1")
# RSA-2048 is the baseline (static-RSA ciphers and old clients need it); ECDSA is its own profile.
_RSA = trustme.KeyType.RSA
_SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
_CA_USAGE = x509.KeyUsage(
    digital_signature=True,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
#: How a maker gets its leaf key: from the session PKI, so that RSA keys can come from its key pool.
KeyFactory = Callable[["SessionPKI"], PrivateKey]
ExtT = TypeVar("ExtT", bound=x509.ExtensionType)

#: Files of a shared PKI (:meth:`SessionPKI.open_shared`): the CA's key, the lock, and the marker that
#: says a profile's files are complete.
CA_KEY_NAME = "ca-key.pem"
LOCK_NAME = ".lock"
MADE_MARKER = ".made"
#: Where the CRL and the OCSP statuses the revocation responder serves live (:mod:`pytest_mailtls.revocation`).
REVOCATION_DIR = "revocation"

#: The only name a ``wrong-host`` certificate carries.
WRONG_HOST = "wrong-host.mailtls.invalid"


class Issuer(enum.Enum):
    """Who signed a presented leaf, relative to the session PKI (verify works it out; checks read it)."""

    SELF = "self-signed"
    ROOT = "issued by the session root CA"
    INTERMEDIATE_SENT = "issued by the session's intermediate CA, which the server sent"
    INTERMEDIATE_WITHHELD = "issued by the session's intermediate CA, which the server did not send"
    FOREIGN = "issued by a CA foreign to the session"


@dataclass(frozen=True)
class Presented:
    """What verify saw of a cell's certificate, for its fault's check (:attr:`CertFault.check`).

    ``handshake(adjust)``: one more real handshake with the cell as a careful client makes it (the session
    CA, the host name, default security level), its context changed by ``adjust`` first (a CRL loaded,
    CN fallback off); returns ``None`` when the certificate verified, else OpenSSL's verify error.
    """

    chain: tuple[x509.Certificate, ...]
    server_hostname: str
    issuer: Issuer
    names_match: bool
    handshake: Callable[[Callable[[ssl.SSLContext], None]], str | None]
    root: x509.Certificate | None = None  # the session CA the client trusts
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def intermediate(self) -> x509.Certificate | None:
        """The first CA certificate sent after the leaf, if any."""
        return self.chain[1] if len(self.chain) > 1 else None


#: (what the profile needs, what was found) for each way a presented certificate is not what it must be.
Problems = list[tuple[str, str]]
#: Writes ``key.pem`` and ``chain.pem`` (leaf first) for one profile into the folder it is given.
Maker = Callable[["SessionPKI", Path], None]
#: Reads what verify saw of a presented certificate and says how it differs from the profile.
LeafCheck = Callable[[Presented], Problems]


def _need(holds: bool, expected: str, actual: object) -> Problems:
    return [] if holds else [(expected, str(actual))]


@dataclass(frozen=True)
class CertFault:
    """One certificate profile in one place: how it is made, what verify checks in the presented chain,
    whether a verifying client accepts it, the failure class it must report otherwise, how the fault reads in
    a sentence, OpenSSL 3's verification errors for it and the highest OpenSSL security level at which a
    server can still present it.

    ``lenient``: what a client that accepts this certificate does not check, when OpenSSL's defaults (Python's
    ``ssl``, curl) do not check it either (revocation, CN fallback): a client that checks it must refuse with
    ``failure``; one that goes on is reported as not checking it, not as ``insecure``. ``may_refuse``: a
    certificate that verifies, which a client may still refuse for a stricter reason it states (a revocation
    endpoint it cannot reach, for a client that hard-fails): such a refusal is ``refused-correctly``.
    """

    make: Maker
    check: LeafCheck
    verifies: bool = False
    failure: str | None = None
    words: str = ""
    verify_errors: tuple[str, ...] = ()
    max_seclevel: int | None = None  # None: every level the policies use
    key_type: str = "rsa"
    #: The fix is on the server, whatever the client: the remedy a diagnosis gives for this fault.
    server_remedy: str | None = None
    lenient: str | None = None
    may_refuse: str | None = None
    #: The report's group for its cells (``policy.GROUPS``); empty: :attr:`report_group` decides.
    group: str = ""
    #: Its certificate names a server of the process that makes it (the revocation responder): in a PKI shared
    #: by several processes each one makes its own, since the maker's responder ends with the maker.
    own_process: bool = False

    @property
    def report_group(self) -> str:
        """The group of the report's grid: :attr:`group` when set, else ``secure`` for a certificate that verifies,
        ``broken crypto`` for one a server can only present at a lowered OpenSSL security level (a weak key or
        signature), ``certificate validation`` for every other fault."""
        if self.group:
            return self.group
        if self.verifies:
            return "secure"
        return "broken crypto" if self.max_seclevel is not None else "certificate validation"

    @property
    def verifies_by_default(self) -> bool:
        """Whether a client with OpenSSL's default checks (trust the CA, check the name, no revocation,
        subject CN fallback, security level 2 or lower as allowed) accepts it: what verify's first handshake sees."""
        return self.verifies or self.lenient is not None

    @property
    def must_refuse(self) -> bool:
        """Whether every verifying client must refuse it (a success is ``insecure`` whatever the client)."""
        return self.failure is not None and self.lenient is None


# --- makers: how each profile is made (methods of SessionPKI do the writing) --------------------------------


def _make_valid(pki: SessionPKI, folder: Path) -> None:
    pki._write_leaf(pki.ca.issue_cert(*pki.server_names, key_type=pki.rsa_key_type), folder)


def _make_ecdsa_p256(pki: SessionPKI, folder: Path) -> None:
    pki._write_leaf(pki.ca.issue_cert(*pki.server_names, key_type=trustme.KeyType.ECDSA), folder)


def _make_dated(days_from: int, days_to: int) -> Maker:
    def make(pki: SessionPKI, folder: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        leaf = pki.ca.issue_cert(
            *pki.server_names,
            key_type=pki.rsa_key_type,
            not_before=now + dt.timedelta(days=days_from),
            not_after=now + dt.timedelta(days=days_to),
        )
        pki._write_leaf(leaf, folder)

    return make


def _make_wrong_host(pki: SessionPKI, folder: Path) -> None:
    pki._write_leaf(pki.ca.issue_cert(WRONG_HOST, key_type=pki.rsa_key_type), folder)


def _make_untrusted_ca(pki: SessionPKI, folder: Path) -> None:
    stranger = trustme.CA(organization_name="pytest-mailtls untrusted CA", key_type=pki.rsa_key_type)
    pki._write_leaf(stranger.issue_cert(*pki.server_names, key_type=pki.rsa_key_type), folder)


def _make_missing_intermediate(pki: SessionPKI, folder: Path) -> None:
    intermediate = pki.ca.create_child_ca(key_type=pki.rsa_key_type)
    leaf = intermediate.issue_cert(*pki.server_names, key_type=pki.rsa_key_type)
    # Present the leaf alone: the intermediate clients would need is withheld.
    _write_private(folder / "key.pem", leaf.private_key_pem.bytes())
    leaf.cert_chain_pems[0].write_to_path(str(folder / "chain.pem"))
    (folder / "intermediate.pem").write_bytes(intermediate.cert_pem.bytes())


def _make_self_signed(pki: SessionPKI, folder: Path) -> None:
    names = pki.server_names
    key = pki.new_rsa_key()
    cert = _builder(names, key.public_key(), _name(names[0])).sign(key, hashes.SHA256())  # issuer = subject
    _write_key_and_cert(key, [cert], folder)


def _make_rooted(
    key: KeyFactory, *, san: bool = True, usage: tuple[x509.ObjectIdentifier, ...] = (_SERVER_AUTH,)
) -> Maker:
    """A leaf for the usual names with a key from ``key(pki)``, issued by the session root (SHA-256); ``san``:
    the names in a subjectAltName (else only ``server_hostname`` as the subject CN); ``usage``: its EKU."""

    def make(pki: SessionPKI, folder: Path) -> None:
        leaf_key = key(pki)
        builder = _builder(pki.server_names, leaf_key.public_key(), pki._ca_name(), san=san, usage=usage)
        _write_key_and_cert(leaf_key, [builder.sign(pki._ca_key(), hashes.SHA256())], folder)

    make.key_bits = getattr(key, "bits", 0)  # type: ignore[attr-defined]  # what prepare() asks the key pool for
    return make


def _rsa(bits: int) -> KeyFactory:
    def make(pki: SessionPKI) -> PrivateKey:
        return pki.new_rsa_key(bits)

    make.bits = bits  # type: ignore[attr-defined]
    return make


def _make_sha1_signature(pki: SessionPKI, folder: Path) -> None:
    key = pki.new_rsa_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name(pki.server_names[0]))
        .add_extension(x509.SubjectAlternativeName(_sans(pki.server_names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    leaf = pki._openssl_sign_sha1(csr, folder, days=365)
    _write_key_and_cert(key, [leaf], folder)


def _make_sha1_intermediate(pki: SessionPKI, folder: Path) -> None:
    # The intermediate's own signature (by the root) is SHA-1; it signs the leaf with SHA-256.
    ca_key = pki.new_rsa_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("pytest-mailtls SHA-1 intermediate CA"))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    intermediate = pki._openssl_sign_sha1(csr, folder, days=365)
    leaf_key = pki.new_rsa_key()
    builder = _builder(pki.server_names, leaf_key.public_key(), intermediate.subject)
    leaf = builder.add_extension(_aki(ca_key), critical=False).sign(ca_key, hashes.SHA256())
    _write_key_and_cert(leaf_key, [leaf, intermediate], folder)


def _intermediate_maker(
    edit: Callable[[x509.CertificateBuilder], x509.CertificateBuilder], name: str, *, days: tuple[int, int] = (-1, 365)
) -> Maker:
    """A leaf for the usual names issued by an intermediate CA of the session root, presented with it;
    ``edit`` changes the intermediate's builder (name constraints), ``days`` its validity (from, to)."""

    def make(pki: SessionPKI, folder: Path) -> None:
        now = dt.datetime.now(dt.UTC)
        ca_key = pki.new_rsa_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(pki._ca_name())
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days[0]))
            .not_valid_after(now + dt.timedelta(days=days[1]))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_CA_USAGE, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .add_extension(_aki(pki._ca_key()), critical=False)
        )
        intermediate = edit(builder).sign(pki._ca_key(), hashes.SHA256())
        leaf_key = pki.new_rsa_key()
        leaf_builder = _builder(pki.server_names, leaf_key.public_key(), intermediate.subject)
        leaf = leaf_builder.add_extension(_aki(ca_key), critical=False).sign(ca_key, hashes.SHA256())
        _write_key_and_cert(leaf_key, [leaf, intermediate], folder)

    return make


#: The only names an intermediate of the ``name-constraint-violation`` profile may issue for.
PERMITTED_DNS = "permitted.mailtls.invalid"
PERMITTED_IP = ipaddress.ip_network("192.0.2.0/24")  # TEST-NET-1


def _constrained(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    constraints = x509.NameConstraints(
        permitted_subtrees=[x509.DNSName(PERMITTED_DNS), x509.IPAddress(PERMITTED_IP)], excluded_subtrees=None
    )
    return builder.add_extension(constraints, critical=True)


def _revocable(pki: SessionPKI, folder: Path, *, revoked: bool) -> None:
    """A leaf of the session root that names a CRL distribution point and an OCSP responder: the session's
    (:mod:`pytest_mailtls.revocation`, started here) for ``revoked``, a closed port of 127.0.0.1 otherwise."""
    base = pki.revocation_url() if revoked else f"http://127.0.0.1:{CLOSED_PORT}"
    key = pki.new_rsa_key()
    builder = _builder(pki.server_names, key.public_key(), pki._ca_name())
    builder = builder.add_extension(
        x509.CRLDistributionPoints(
            [x509.DistributionPoint([x509.UniformResourceIdentifier(f"{base}/{CRL_NAME}")], None, None, None)]
        ),
        critical=False,
    ).add_extension(
        x509.AuthorityInformationAccess(
            [x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(f"{base}/ocsp"))]
        ),
        critical=False,
    )
    cert = builder.sign(pki._ca_key(), hashes.SHA256())
    if revoked:
        pki._revoke(cert.serial_number)
    _write_key_and_cert(key, [cert], folder)


# --- checks: what verify must find in the presented chain --------------------------------------------------


def _key_of(cert: x509.Certificate) -> tuple[str, int]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return "rsa", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "ecdsa", key.curve.key_size
    return type(key).__name__, 0


def _key_check(kind: str, holds: Callable[[int], bool], expected: str) -> LeafCheck:
    def check(seen: Presented) -> Problems:
        key_type, size = _key_of(seen.leaf)
        return _need(key_type == kind and holds(size), expected, f"{key_type} {size}")

    return check


def _plain_leaf(seen: Presented) -> Problems:
    """A leaf as the valid profiles have it: the names in a subjectAltName, no revocation endpoints."""
    crls, ocsps = _urls(seen.leaf)
    problems = _need(_sans_of(seen.leaf) is not None, "a subjectAltName", "none")
    return problems + _need(not crls and not ocsps, "no revocation endpoints", f"CRL {crls}, OCSP {ocsps}")


def _all(*checks: LeafCheck) -> LeafCheck:
    return lambda seen: [problem for check in checks for problem in check(seen)]


def _sig_hash(cert: x509.Certificate) -> str | None:
    try:
        algorithm = cert.signature_hash_algorithm
    except Exception:  # an algorithm cryptography does not know
        return None
    return algorithm.name if algorithm is not None else None


def _sans_of(cert: x509.Certificate) -> list[str] | None:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    return [str(v) for v in ext.get_values_for_type(x509.DNSName)] + [
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    ]


def _ext(cert: x509.Certificate, kind: type[ExtT]) -> ExtT | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def _check_expired(seen: Presented) -> Problems:
    return _need(seen.leaf.not_valid_after_utc < seen.now, "not_after in the past", seen.leaf.not_valid_after_utc)


def _check_not_yet_valid(seen: Presented) -> Problems:
    return _need(seen.leaf.not_valid_before_utc > seen.now, "not_before in the future", seen.leaf.not_valid_before_utc)


def _check_wrong_host(seen: Presented) -> Problems:
    names = ", ".join(_sans_of(seen.leaf) or []) or "no SAN"
    return _need(not seen.names_match, f"names without {seen.server_hostname}", names)


def _check_self_signed(seen: Presented) -> Problems:
    return _need(seen.issuer is Issuer.SELF, "issuer == subject", f"issuer {seen.leaf.issuer.rfc4514_string()}")


def _issued(seen: Presented) -> str:
    return f"issuer {seen.leaf.issuer.rfc4514_string()} ({seen.issuer.value})"


# Both fail with "unable to get local issuer certificate": only the issuer tells them apart.
def _check_untrusted_ca(seen: Presented) -> Problems:
    expected = "a leaf issued by a foreign CA (neither the session root nor its intermediate)"
    return _need(seen.issuer is Issuer.FOREIGN, expected, _issued(seen))


def _check_missing_intermediate(seen: Presented) -> Problems:
    expected = "a leaf issued by the session's intermediate CA, the intermediate not sent"
    found = f"{len(seen.chain)} certificate(s), {_issued(seen)}"
    return _need(seen.issuer is Issuer.INTERMEDIATE_WITHHELD, expected, found)


def _check_sha1_signature(seen: Presented) -> Problems:
    return _need(_sig_hash(seen.leaf) == "sha1", "a SHA-1 signature", seen.leaf.signature_algorithm_oid._name)


def _intermediate_problems(seen: Presented) -> tuple[x509.Certificate | None, Problems]:
    inter = seen.intermediate
    if inter is None:
        return None, [("the leaf and its intermediate CA", f"{len(seen.chain)} certificate(s)")]
    if inter.subject != seen.leaf.issuer:
        return None, [("the leaf's issuer sent after it", f"sent {inter.subject.rfc4514_string()}")]
    basic = _ext(inter, x509.BasicConstraints)
    return inter, _need(basic is not None and basic.ca, "an intermediate with CA:TRUE", basic)


def _check_sha1_intermediate(seen: Presented) -> Problems:
    inter, problems = _intermediate_problems(seen)
    if inter is None:
        return problems
    problems += _need(
        _sig_hash(inter) == "sha1", "an intermediate signed with SHA-1", inter.signature_algorithm_oid._name
    )
    return problems + _need(_sig_hash(seen.leaf) == "sha256", "a leaf signed with SHA-256", _sig_hash(seen.leaf))


def _check_expired_intermediate(seen: Presented) -> Problems:
    inter, problems = _intermediate_problems(seen)
    if inter is None:
        return problems
    problems += _need(
        inter.not_valid_after_utc < seen.now, "an intermediate whose not_after is past", inter.not_valid_after_utc
    )
    return problems + _need(
        seen.leaf.not_valid_after_utc > seen.now, "a leaf still in its validity", seen.leaf.not_valid_after_utc
    )


def _check_name_constraints(seen: Presented) -> Problems:
    inter, problems = _intermediate_problems(seen)
    if inter is None:
        return problems
    nc = _ext(inter, x509.NameConstraints)
    if nc is None or not nc.permitted_subtrees:
        return [*problems, ("an intermediate with permitted name subtrees", "no name constraints")]
    permitted = [str(getattr(n, "value", n)) for n in nc.permitted_subtrees]
    inside = [n for n in _sans_of(seen.leaf) or [] if n == PERMITTED_DNS or n.endswith("." + PERMITTED_DNS)]
    found = f"permitted {', '.join(permitted)}; leaf names {', '.join(_sans_of(seen.leaf) or [])}"
    return problems + _need(
        seen.names_match and not inside, "a leaf naming the host outside the permitted subtrees", found
    )


def _check_wrong_eku(seen: Presented) -> Problems:
    eku = _ext(seen.leaf, x509.ExtendedKeyUsage)
    usages = [u._name for u in eku] if eku is not None else ["no EKU"]
    holds = eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    return _need(holds, "an extended key usage of clientAuth only (no serverAuth)", ", ".join(usages))


def _check_no_san(seen: Presented) -> Problems:
    cns = [str(a.value) for a in seen.leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    problems = _need(_sans_of(seen.leaf) is None, "no subjectAltName extension", _sans_of(seen.leaf))
    problems += _need(seen.server_hostname in cns, f"the subject CN {seen.server_hostname}", ", ".join(cns) or "no CN")
    error = seen.handshake(_no_cn_fallback)
    if not any(f.lower() in (error or "").lower() for f in CERT_FAULTS[CertProfile.NO_SAN].verify_errors):
        problems.append(
            ("a client without CN fallback (RFC 9525) to refuse: Hostname mismatch", error or "it verifies")
        )
    return problems


def _no_cn_fallback(ctx: ssl.SSLContext) -> None:
    ctx.hostname_checks_common_name = False


def _urls(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """The CRL distribution points and OCSP responders ``cert`` names."""
    cdp = _ext(cert, x509.CRLDistributionPoints)
    crls = [str(n.value) for p in cdp or [] for n in p.full_name or [] if isinstance(n, x509.UniformResourceIdentifier)]
    aia = _ext(cert, x509.AuthorityInformationAccess)
    ocsps = [str(d.access_location.value) for d in aia or [] if d.access_method == AuthorityInformationAccessOID.OCSP]
    return crls, ocsps


def _fetch(url: str, body: bytes | None = None) -> bytes:
    headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as answer:
        return bytes(answer.read())


def _local(url: str) -> bool:
    return urllib.parse.urlparse(url).hostname == "127.0.0.1"


def _check_revoked(seen: Presented) -> Problems:
    crls, ocsps = _urls(seen.leaf)
    if not crls or not ocsps or not all(_local(u) for u in (*crls, *ocsps)):
        return [("a CRL distribution point and an OCSP responder on 127.0.0.1", f"CRL {crls}, OCSP {ocsps}")]
    problems: Problems = []
    try:
        crl = x509.load_der_x509_crl(_fetch(crls[0]))
    except (OSError, ValueError) as exc:
        return [(f"the CRL at {crls[0]}", f"not served: {exc}")]
    serial = seen.leaf.serial_number
    problems += _need(
        crl.get_revoked_certificate_by_serial_number(serial) is not None,
        "the leaf's serial on the CRL",
        f"{len(crl)} serial(s), not {serial:x}",
    )
    with tempfile.TemporaryDirectory(prefix="mailtls-crl-") as tmp:
        crl_file = Path(tmp) / "crl.pem"
        crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))

        def with_crl(ctx: ssl.SSLContext) -> None:
            ctx.load_verify_locations(str(crl_file))
            ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF

        error = seen.handshake(with_crl)
    if "certificate revoked" not in (error or "").lower():
        problems.append(("a client that loads the CRL to refuse: certificate revoked", error or "it verifies"))
    problems += _check_ocsp(seen, ocsps[0], seen.intermediate, ocsp.OCSPCertStatus.REVOKED)
    return problems


def _check_ocsp(seen: Presented, url: str, issuer: x509.Certificate | None, want: ocsp.OCSPCertStatus) -> Problems:
    if issuer is None:
        issuer = seen.root
        if issuer is None:
            return [("the session CA, to ask the OCSP responder", "not found")]
    request = ocsp.OCSPRequestBuilder().add_certificate(seen.leaf, issuer, hashes.SHA1()).build()
    try:
        answer = ocsp.load_der_ocsp_response(_fetch(url, request.public_bytes(serialization.Encoding.DER)))
    except (OSError, ValueError) as exc:
        return [(f"an OCSP answer from {url}", f"none: {exc}")]
    if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
        return [(f"a successful OCSP answer from {url}", answer.response_status.name)]
    key, digest = issuer.public_key(), answer.signature_hash_algorithm
    signed = f"an OCSP answer signed by {issuer.subject.rfc4514_string()}"
    if not isinstance(key, rsa.RSAPublicKey) or digest is None:
        return [(signed, f"a {type(key).__name__} issuer key or no digest")]
    try:
        key.verify(answer.signature, answer.tbs_response_bytes, padding.PKCS1v15(), digest)
    except InvalidSignature:
        return [(signed, "a signature that does not verify")]
    return _need(answer.certificate_status is want, f"OCSP status {want.name}", answer.certificate_status.name)


def _check_unreachable(seen: Presented) -> Problems:
    crls, ocsps = _urls(seen.leaf)
    if not crls or not ocsps:
        return [("a CRL distribution point and an OCSP responder", f"CRL {crls}, OCSP {ocsps}")]
    problems: Problems = []
    for url in (*crls, *ocsps):
        if not _local(url):
            problems.append(("revocation endpoints on 127.0.0.1", url))
            continue
        try:
            _fetch(url, b"" if url in ocsps else None)
        except OSError:
            continue  # refused, as it must be
        problems.append((f"nothing listening at {url}", "it answered"))
    return problems


_FOREIGN_ISSUER = (
    "the server's certificate is not issued by a CA the client trusts (self-signed or a foreign CA): "
    "install a certificate from the CA your clients trust on the server; do not turn verification off"
)


#: Every certificate profile's facts (checked by handshakes on OpenSSL 3.0; level 1 refuses SHA-1
#: signatures, level 2 also RSA keys under 2048 bits).
CERT_FAULTS: dict[CertProfile, CertFault] = {
    CertProfile.VALID: CertFault(
        _make_valid,
        _all(_key_check("rsa", lambda bits: bits == 2048, "an RSA-2048 key"), _plain_leaf),
        verifies=True,
        words="a valid certificate",
    ),
    CertProfile.ECDSA_P256: CertFault(
        _make_ecdsa_p256,
        _all(_key_check("ecdsa", lambda bits: bits == 256, "an ECDSA P-256 key"), _plain_leaf),
        verifies=True,
        words="a valid ECDSA P-256 certificate",
        key_type="ecdsa",
    ),
    CertProfile.EXPIRED: CertFault(
        _make_dated(-60, -1),
        _check_expired,
        failure="certificate-expired",
        words="an expired certificate",
        verify_errors=("certificate has expired",),
    ),
    CertProfile.NOT_YET_VALID: CertFault(
        _make_dated(30, 400),
        _check_not_yet_valid,
        failure="certificate-not-yet-valid",
        words="a certificate that is not valid yet",
        verify_errors=("certificate is not yet valid",),
    ),
    CertProfile.WRONG_HOST: CertFault(
        _make_wrong_host,
        _check_wrong_host,
        failure="hostname-mismatch",
        words="a certificate for another host name",
        verify_errors=("Hostname mismatch", "IP address mismatch"),
    ),
    CertProfile.SELF_SIGNED: CertFault(
        _make_self_signed,
        _check_self_signed,
        failure="untrusted-certificate",
        words="a self-signed certificate",
        verify_errors=("self-signed certificate", "self signed certificate"),
        server_remedy=_FOREIGN_ISSUER,
    ),
    CertProfile.UNTRUSTED_CA: CertFault(
        _make_untrusted_ca,
        _check_untrusted_ca,
        failure="untrusted-certificate",
        words="a certificate from a CA the client does not trust",
        verify_errors=("unable to get local issuer certificate",),
        server_remedy=_FOREIGN_ISSUER,
    ),
    CertProfile.MISSING_INTERMEDIATE: CertFault(
        _make_missing_intermediate,
        _check_missing_intermediate,
        failure="incomplete-chain",
        words="its certificate without the intermediate CA",
        verify_errors=("unable to get local issuer certificate",),
    ),
    CertProfile.WEAK_RSA_1024: CertFault(
        _make_rooted(_rsa(1024)),
        _key_check("rsa", lambda bits: bits < 2048, "an RSA key under 2048 bits"),
        failure="weak-key-or-signature",
        words="a certificate with a 1024-bit RSA key",
        verify_errors=("key too weak", "key too small"),
        max_seclevel=1,
    ),
    CertProfile.SHA1_SIGNATURE: CertFault(
        _make_sha1_signature,
        _check_sha1_signature,
        failure="weak-key-or-signature",
        words="a certificate signed with SHA-1",
        verify_errors=("digest algorithm too weak", "md too weak"),
        max_seclevel=0,
    ),
    CertProfile.REVOKED: CertFault(
        lambda pki, folder: _revocable(pki, folder, revoked=True),
        _check_revoked,
        failure="certificate-revoked",
        words="a revoked certificate (on the session CA's CRL and revoked by its OCSP responder)",
        verify_errors=("certificate revoked",),
        lenient="revocation (it neither loads the CRL nor asks the OCSP responder the certificate names)",
        own_process=True,
    ),
    CertProfile.REVOCATION_UNREACHABLE: CertFault(
        lambda pki, folder: _revocable(pki, folder, revoked=False),
        _check_unreachable,
        verifies=True,
        words="a valid certificate whose CRL and OCSP endpoints do not answer",
        may_refuse="a client that hard-fails when the revocation status is unknown may refuse it",
    ),
    CertProfile.NO_SAN: CertFault(
        _make_rooted(_rsa(2048), san=False),
        _check_no_san,
        failure="hostname-mismatch",
        words="a certificate without subjectAltName (the host name only in the subject CN)",
        verify_errors=("Hostname mismatch",),
        lenient="that the host name is in a subjectAltName: it falls back to the subject CN (RFC 9525 forbids it)",
    ),
    CertProfile.SHA1_INTERMEDIATE: CertFault(
        _make_sha1_intermediate,
        _check_sha1_intermediate,
        failure="weak-key-or-signature",
        words="a chain whose intermediate CA is signed with SHA-1",
        verify_errors=("CA signature digest algorithm too weak", "ca md too weak"),
        max_seclevel=0,
    ),
    CertProfile.EXPIRED_INTERMEDIATE: CertFault(
        _intermediate_maker(lambda b: b, "pytest-mailtls expired intermediate CA", days=(-400, -1)),
        _check_expired_intermediate,
        failure="certificate-expired",
        words="a valid leaf under an expired intermediate CA",
        verify_errors=("certificate has expired",),
    ),
    CertProfile.WRONG_EKU: CertFault(
        _make_rooted(_rsa(2048), usage=(ExtendedKeyUsageOID.CLIENT_AUTH,)),
        _check_wrong_eku,
        failure="wrong-key-usage",
        words="a certificate whose extended key usage is clientAuth only",
        verify_errors=("unsuitable certificate purpose",),
    ),
    CertProfile.NAME_CONSTRAINT_VIOLATION: CertFault(
        _intermediate_maker(_constrained, "pytest-mailtls name-constrained intermediate CA"),
        _check_name_constraints,
        failure="name-constraint-violation",
        words="a leaf for names outside its intermediate CA's permitted name constraints",
        verify_errors=("permitted subtree violation", "excluded subtree violation"),
    ),
    CertProfile.RSA_4096: CertFault(
        _make_rooted(_rsa(4096)),
        _all(_key_check("rsa", lambda bits: bits == 4096, "an RSA-4096 key"), _plain_leaf),
        verifies=True,
        words="a valid RSA-4096 certificate",
    ),
    CertProfile.ECDSA_P384: CertFault(
        _make_rooted(lambda pki: ec.generate_private_key(ec.SECP384R1())),
        _all(_key_check("ecdsa", lambda bits: bits == 384, "an ECDSA P-384 key"), _plain_leaf),
        verifies=True,
        words="a valid ECDSA P-384 certificate",
        key_type="ecdsa",
    ),
}

_missing = [str(p) for p in CertProfile if p not in CERT_FAULTS]
if _missing:  # a profile without its spec (maker, check, facts) cannot be imported, let alone served
    raise ImportError(f"pytest_mailtls.pki: certificate profile(s) without a CertFault: {', '.join(_missing)}")


@dataclass(frozen=True)
class ServerCertFiles:
    """A server's key and the chain it presents (leaf first), as PEM files."""

    key_file: Path
    cert_file: Path

    @property
    def chain_file(self) -> Path:
        return self.cert_file


@dataclass(frozen=True)
class ClientCertFiles:
    """A client certificate for mutual TLS (chain PEM) and its key.

    ``key_file`` is PKCS#8 (``BEGIN PRIVATE KEY``), the form every TLS stack
    loads (Rust's native-tls and rustls-pemfile users take nothing else);
    ``key_pkcs1_file`` holds the same RSA key as PKCS#1 (``BEGIN RSA PRIVATE
    KEY``) for clients that want the traditional form.
    """

    key_file: Path
    cert_file: Path
    key_pkcs1_file: Path | None = None


class SessionPKI:
    """A CA trusted by clients, and server/client certificates for every profile.

    >>> pki = SessionPKI(tmp_path)
    >>> files = pki.server_files(CertProfile.EXPIRED)
    """

    def __init__(self, directory: str | Path, *, server_hostname: str = "localhost", shared: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Private: it holds every key of the session. Containers get copies (backends/container.copy_pki).
        self.directory.chmod(0o700)
        self.server_hostname = server_hostname
        self.ca_file = self.directory / "ca.pem"
        self._lock = threading.Lock()
        self._responder_lock = threading.Lock()
        self._responder: Responder | None = None
        self._server: dict[CertProfile, ServerCertFiles] = {}
        self._clients: dict[str, ClientCertFiles] = {}
        self._ca_key_cache: tuple[trustme.CA, rsa.RSAPrivateKey] | None = None
        self._pool: _KeyPool | None = None
        # shared: several processes use this directory (the workers of a pytest-xdist run and the grid they
        # share). The first makes the CA and keeps its key beside it; the others load it; every certificate
        # is made once, under a file lock, and read back by the rest.
        self.shared = shared
        if not shared:
            self.ca = trustme.CA(organization_name="pytest-mailtls session CA", key_type=_RSA)
            self.ca.cert_pem.write_to_path(str(self.ca_file))
            return
        ca_key = self.directory / CA_KEY_NAME
        with self._file_lock():
            if ca_key.exists() and self.ca_file.exists():
                self.ca = trustme.CA.from_pem(self.ca_file.read_bytes(), ca_key.read_bytes())
            else:
                self.ca = trustme.CA(organization_name="pytest-mailtls session CA", key_type=_RSA)
                _write_private(ca_key, self.ca.private_key_pem.bytes())
                self.ca.cert_pem.write_to_path(str(self.ca_file))

    @classmethod
    def open_shared(cls, directory: str | Path, *, server_hostname: str = "localhost") -> SessionPKI:
        """The PKI in ``directory`` shared by several processes: made by the first, loaded by the others."""
        return cls(directory, server_hostname=server_hostname, shared=True)

    def _file_lock(self) -> contextlib.AbstractContextManager[object]:
        """Across processes for a shared PKI (certificates are made once), a no-op otherwise."""
        if not self.shared:
            return contextlib.nullcontext()
        import filelock

        return filelock.FileLock(str(self.directory / LOCK_NAME), mode=0o600)

    @property
    def client_ca_file(self) -> Path:
        """The CA servers trust for client certificates (the session CA)."""
        return self.ca_file

    def client_context(self) -> ssl.SSLContext:
        """A client ``ssl.SSLContext`` that trusts the session CA and checks host names."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def server_names(self) -> tuple[str, ...]:
        return (self.server_hostname, *SERVER_NAMES)

    # --- server certificates ---------------------------------------------------
    def server_files(self, profile: CertProfile | str) -> ServerCertFiles:
        """Key and presented chain for ``profile``, made on first use."""
        profile = CertProfile(profile)
        with self._lock:
            if profile not in self._server:
                with self._file_lock():
                    folder = self._folder(profile)
                    made = folder / MADE_MARKER
                    if self.shared and made.exists():  # another process of the run made it
                        self._server[profile] = ServerCertFiles(folder / "key.pem", folder / "chain.pem")
                    else:
                        self._server[profile] = self._make_server(profile)
                        if self.shared:
                            made.touch()
            return self._server[profile]

    def _folder(self, profile: CertProfile) -> Path:
        """Where ``profile``'s files live: one folder per profile, per process for an ``own_process`` fault
        of a shared PKI."""
        if self.shared and profile.fault.own_process:
            return self.directory / f"{profile}.{os.getpid()}"
        return self.directory / str(profile)

    def _make_server(self, profile: CertProfile) -> ServerCertFiles:
        folder = self._folder(profile)
        folder.mkdir(exist_ok=True)
        profile.fault.make(self, folder)
        key_file, cert_file = folder / "key.pem", folder / "chain.pem"
        key_file.chmod(0o600)  # never readable by others, even for the instant before a chmod
        cert_file.chmod(0o644)
        return ServerCertFiles(key_file, cert_file)

    def _write_leaf(self, leaf: trustme.LeafCert, folder: Path) -> None:
        _write_private(folder / "key.pem", leaf.private_key_pem.bytes())
        (folder / "chain.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))

    def _ca_key(self) -> rsa.RSAPrivateKey:
        if self._ca_key_cache is None or self._ca_key_cache[0] is not self.ca:
            key = load_own_key(self.ca.private_key_pem.bytes())
            assert isinstance(key, rsa.RSAPrivateKey)
            self._ca_key_cache = (self.ca, key)
        return self._ca_key_cache[1]

    # --- keys ------------------------------------------------------------------
    def new_rsa_key(self, bits: int = 2048) -> rsa.RSAPrivateKey:
        """A fresh RSA key: from the key pool while :meth:`prepare` runs one, else made here."""
        pool = self._pool
        key = pool.take(bits) if pool is not None else None
        return key if key is not None else rsa.generate_private_key(public_exponent=65537, key_size=bits)

    @property
    def rsa_key_type(self) -> trustme.KeyType:
        """What trustme gets as ``key_type`` for an RSA-2048 key: ``trustme.KeyType.RSA``, or while :meth:`prepare`
        runs a key pool a stand-in whose ``_generate_key()`` (all that trustme 1.x asks of a key type) takes the
        key from the pool, so that trustme's keys are made on both cores too."""
        if self._pool is None:
            return _RSA
        return cast(trustme.KeyType, _PooledRSA(self))

    def prepare(self, profiles: Iterable[CertProfile | str], *, client: bool = False) -> None:
        """Make the files of every profile in ``profiles`` (and the client certificate with ``client``) now.

        Key generation is most of it (about 35 ms per RSA-2048 key, 0.3-1.5 s for RSA-4096) and holds the GIL,
        so when several profiles are to be made a second process makes RSA keys alongside (:class:`_KeyPool`),
        the bigger ones first; it ends with this call, and its keys never touch the disk on the way."""
        todo = [p for p in dict.fromkeys(map(CertProfile, profiles)) if not self._made(p)]
        big = sorted((b for p in todo if (b := getattr(CERT_FAULTS[p].make, "key_bits", 0)) > 2048), reverse=True)
        pool = _KeyPool(big, spares=2 * len(todo)) if len(todo) >= _POOL_FROM or (big and len(todo) > 1) else None
        self._pool = pool
        try:
            # Profiles whose keys the pool makes come last: their keys are ready by then.
            for profile in sorted(todo, key=lambda p: getattr(CERT_FAULTS[p].make, "key_bits", 0) > 2048):
                self.server_files(profile)
            if client:
                self.client_files()
        finally:
            self._pool = None
            if pool is not None:
                pool.close()

    def _made(self, profile: CertProfile) -> bool:
        return profile in self._server or (self.shared and (self._folder(profile) / MADE_MARKER).exists())

    def _ca_cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca.cert_pem.bytes())

    def _ca_name(self) -> x509.Name:
        return self._ca_cert().subject

    def _openssl_sign_sha1(self, csr: x509.CertificateSigningRequest, folder: Path, *, days: int) -> x509.Certificate:
        """``csr`` signed by the session CA with SHA-1, its extensions copied: cryptography refuses to sign
        with SHA-1, so the ``openssl`` command does."""
        work = Path(tempfile.mkdtemp(prefix="sha1-", dir=folder))
        ca_key, request, out = work / "ca-key.pem", work / "request.pem", work / "cert.pem"
        _write_private(ca_key, self.ca.private_key_pem.bytes())
        request.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        cmd = [
            "openssl", "x509", "-req", "-in", str(request), "-out", str(out),
            "-CA", str(self.ca_file), "-CAkey", str(ca_key), "-sha1", "-copy_extensions", "copyall",
            "-set_serial", str(x509.random_serial_number()), "-days", str(days),
        ]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)
            return x509.load_pem_x509_certificate(out.read_bytes())
        except FileNotFoundError:
            raise MailTLSError(
                f"the {folder.name} profile needs the `openssl` command: apt-get install openssl"
            ) from None
        except subprocess.CalledProcessError as exc:
            raise MailTLSError(f"openssl could not sign the {folder.name} certificate: {exc.stderr.strip()}") from None
        finally:
            for path in (ca_key, request, out):
                path.unlink(missing_ok=True)
            work.rmdir()

    # --- revocation ------------------------------------------------------------
    def revocation_url(self) -> str:
        """The base URL of the session's CRL and OCSP responder (started on first use, in this process)."""
        with self._responder_lock:
            if self._responder is None:
                folder = self.directory / REVOCATION_DIR
                folder.mkdir(exist_ok=True)
                self._responder = Responder(folder, self._ca_cert, self._ca_key)
            return self._responder.base_url

    def _revoke(self, serial: int) -> None:
        """Put ``serial`` on the session CA's CRL and make the OCSP responder answer ``revoked`` for it."""
        folder = self.directory / REVOCATION_DIR
        folder.mkdir(exist_ok=True)
        status_file = folder / STATUS_NAME
        try:
            statuses = json.loads(status_file.read_text())
        except (OSError, ValueError):
            statuses = {}
        statuses[str(serial)] = "revoked"
        write_crl(folder, self._ca_cert(), self._ca_key(), [int(s) for s, v in statuses.items() if v == "revoked"])
        tmp = folder / f".{STATUS_NAME}.tmp"
        tmp.write_text(json.dumps(statuses))
        tmp.replace(status_file)

    def close(self) -> None:
        """Stop the revocation responder, if this process started one (files stay until the directory goes)."""
        with self._responder_lock:
            if self._responder is not None:
                self._responder.close()
                self._responder = None

    # --- client certificates ---------------------------------------------------
    def client_files(self) -> ClientCertFiles:
        """A client certificate issued by the session CA (servers trust it)."""
        return self._client("client", self.ca)

    def foreign_client_files(self) -> ClientCertFiles:
        """A client certificate from a CA no server trusts (for negative mTLS tests)."""
        return self._client("foreign-client", None)

    def _client(self, name: str, ca: trustme.CA | None) -> ClientCertFiles:
        with self._lock, self._file_lock():
            folder = self.directory / name
            if name not in self._clients and self.shared and (folder / MADE_MARKER).exists():
                self._clients[name] = ClientCertFiles(folder / "key.pem", folder / "chain.pem", folder / PKCS1_KEY_NAME)
            if name not in self._clients:
                issuer = ca or trustme.CA(organization_name="pytest-mailtls foreign CA", key_type=self.rsa_key_type)
                leaf = issuer.issue_cert("tester@mailtls.test", common_name="tester", key_type=self.rsa_key_type)
                folder.mkdir(exist_ok=True)
                self._write_leaf(leaf, folder)
                # trustme writes PKCS#1; clients get PKCS#8 as key.pem and PKCS#1 beside it.
                key = load_own_key(leaf.private_key_pem.bytes())
                assert isinstance(key, rsa.RSAPrivateKey)
                _write_private(
                    folder / "key.pem",
                    key.private_bytes(
                        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                    ),
                )
                pkcs1 = folder / PKCS1_KEY_NAME
                _write_private(pkcs1, _pkcs1(key))
                self._clients[name] = ClientCertFiles(folder / "key.pem", folder / "chain.pem", pkcs1)
                if self.shared:
                    (folder / MADE_MARKER).touch()
            return self._clients[name]


def load_own_key(pem: bytes) -> PrivateKey:
    """A private key this session made (its PKI's files, a trustme key), loaded without OpenSSL's RSA
    consistency check: that check costs about 35 ms per RSA-2048 key, and these keys are known good. A key
    file from anywhere else goes through :func:`serialization.load_pem_private_key` with its checks."""
    key = serialization.load_pem_private_key(pem, password=None, unsafe_skip_rsa_key_validation=True)
    assert isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey)
    return key


#: From how many profiles to make at once a :class:`_KeyPool` is worth its process (about 0.1 s to start).
_POOL_FROM = 4

# The key pool's process: RSA keys of the sizes in argv, then RSA-2048 spares, each as a length-prefixed DER
# PKCS#8 blob on stdout, until the pool closes its end.
_POOL_SCRIPT = """
import sys
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
sizes = [int(a) for a in sys.argv[1:-1]] + [2048] * int(sys.argv[-1])
out = sys.stdout.buffer
for bits in sizes:
    der = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_bytes(
        Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    out.write(bits.to_bytes(4, "big") + len(der).to_bytes(4, "big") + der)
    out.flush()
"""


class _PooledRSA:
    """:attr:`SessionPKI.rsa_key_type` while a key pool runs: trustme's RSA-2048 key, from the pool."""

    def __init__(self, pki: SessionPKI) -> None:
        self.pki = pki

    def _generate_key(self) -> rsa.RSAPrivateKey:
        return self.pki.new_rsa_key(2048)


class _KeyPool:
    """RSA keys made by a second process while this one makes certificates and the rest of the keys.

    Key generation holds the GIL, so threads would not help; the pool's process starts with ``big`` (sizes
    above 2048, biggest first: the caller would otherwise wait for them alone at the end), then makes up to
    ``spares`` RSA-2048 keys. :meth:`take` hands out a ready key of that size, waits for a big one the pool
    is making, and returns None otherwise (the caller makes its own: both processes then make keys). The keys
    travel over a pipe, never through a file; :meth:`close` ends the process (unused keys are dropped)."""

    def __init__(self, big: list[int], *, spares: int) -> None:
        self._ready: dict[int, deque[bytes]] = {}
        self._coming = list(big)  # big keys not yet received
        self._cond = threading.Condition()
        self._done = False
        try:
            self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-c", _POOL_SCRIPT, *map(str, big), str(spares)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError:  # no second process: every key is made here, as without a pool
            self._process, self._done = None, True
            return
        threading.Thread(target=self._read, name="mailtls-keypool", daemon=True).start()

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        stream = self._process.stdout
        try:
            while len(head := stream.read(8)) == 8:
                bits, size = int.from_bytes(head[:4], "big"), int.from_bytes(head[4:], "big")
                der = stream.read(size)
                if len(der) != size:
                    break
                with self._cond:
                    self._ready.setdefault(bits, deque()).append(der)
                    if bits in self._coming:
                        self._coming.remove(bits)
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def take(self, bits: int) -> rsa.RSAPrivateKey | None:
        with self._cond:
            while not self._ready.get(bits) and bits in self._coming and not self._done:
                self._cond.wait(0.5)
            ready = self._ready.get(bits)
            if not ready:
                return None
            der = ready.popleft()
        key = serialization.load_der_private_key(der, password=None, unsafe_skip_rsa_key_validation=True)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        with self._cond:
            self._ready.clear()


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600 from creation on, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "wb") as out:
        out.write(data)


#: The file name of a client key's PKCS#1 twin, beside its PKCS#8 ``key.pem``.
PKCS1_KEY_NAME = "key-pkcs1.pem"


def _pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def pkcs1_key_file(key_file: str | Path) -> Path:
    """The PKCS#1 form of the RSA key in ``key_file`` (PKCS#8 or PKCS#1 PEM).

    A :class:`SessionPKI` client key has its twin beside it already; for any
    other key the twin is written next to it (``<stem>-pkcs1.pem``) once.
    """
    path = Path(key_file)
    twin = path.with_name(PKCS1_KEY_NAME if path.name == "key.pem" else f"{path.stem}-pkcs1.pem")
    if twin.exists():
        return twin
    data = path.read_bytes()
    if b"BEGIN RSA PRIVATE KEY" in data:
        return path
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise MailTLSError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MailTLSError(f"{path}: PKCS#1 is an RSA key form; this is a {type(key).__name__}")
    try:
        _write_private(twin, _pkcs1(key))
    except OSError as exc:
        raise MailTLSError(f"cannot write the PKCS#1 form of {path} to {twin}: {exc}") from None
    return twin


def session_intermediates(ca_file: str | Path) -> list[x509.Certificate]:
    """The intermediate CAs the session PKI whose root is ``ca_file`` made (and withholds from chains).

    Each lives next to the profile that uses it (``<pki dir>/<profile>/intermediate.pem``); verify compares
    a presented leaf's issuer with them to tell "issued by our intermediate" from "issued by a stranger".
    """
    found = []
    for path in sorted(Path(ca_file).parent.glob("*/intermediate.pem")):
        try:
            found.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError):
            continue
    return found


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pytest-mailtls"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sans(names: tuple[str, ...]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    return sans


def _builder(
    names: tuple[str, ...],
    public_key: object,
    issuer: x509.Name,
    *,
    san: bool = True,
    usage: tuple[x509.ObjectIdentifier, ...] = (_SERVER_AUTH,),
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usage)), critical=False)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
    return builder


def _aki(issuer_key: PrivateKey) -> x509.AuthorityKeyIdentifier:
    return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key())  # type: ignore[arg-type]


def _write_key_and_cert(key: PrivateKey, certs: list[x509.Certificate], folder: Path) -> None:
    """``folder/key.pem`` (PKCS#8, private) and ``folder/chain.pem`` (``certs``, leaf first)."""
    _write_private(
        folder / "key.pem",
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    (folder / "chain.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
