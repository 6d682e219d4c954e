"""Expected outcomes: what a client with a given profile must get on each cell, and the verdict.

The expectation is the outcome of a *correct* client with the profile's
capabilities (versions, ciphers, trust anchor, client certificate, TLS modes).
The profile's security switches (verification off, host name not checked,
plaintext fallback) never change it: a client that turns verification off
still *must* fail on an expired certificate, and succeeding there is what the
verdict ``insecure`` reports.

Verdicts: ``pass`` (worked where it should), ``refused-correctly`` (failed where
no secure session exists), ``incompatible`` (failed although a secure session
exists, or although the expectation was success), ``insecure`` (succeeded where
it must fail, or continued in plaintext where TLS was offered).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import dataclasses
import functools
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from .clients.families import DEFAULT_FAMILY, client_family, family_names
from .policy import VERSIONS, Cell, CertProfile, Mode, TLSPolicy, version_index

__all__ = [
    "FAILURE_CLASSES",
    "FailureClass",
    "Verdict",
    "SUCCESS",
    "VERDICTS",
    "ClientProfile",
    "Expectation",
    "expect",
    "applicable",
    "verdict",
    "jsse_to_openssl",
    "cell_is_secure",
    "SECURE_VERSIONS",
    "FAMILIES",
]

SUCCESS = "success"


class FailureClass(StrEnum):
    """Why a client failed, as a stable string shared with ``CertFault.failure``, diagnose, the families' rule
    tables and the report (a ``StrEnum``: each member is its string, so JSON and old comparisons are unchanged).
    The wire's vulnerability classes (``starttls-stripping``, ``lost-mail``, ...) are declared by their attacks
    and faults (:mod:`pytest_mailtls.wire.attacks`)."""

    PROTOCOL_VERSION_MISMATCH = "protocol-version-mismatch"
    NO_SHARED_CIPHER = "no-shared-cipher"
    WEAK_DH = "weak-dh"
    UNTRUSTED_CERTIFICATE = "untrusted-certificate"
    HOSTNAME_MISMATCH = "hostname-mismatch"
    CERTIFICATE_EXPIRED = "certificate-expired"
    CERTIFICATE_NOT_YET_VALID = "certificate-not-yet-valid"
    INCOMPLETE_CHAIN = "incomplete-chain"
    WEAK_KEY_OR_SIGNATURE = "weak-key-or-signature"
    CERTIFICATE_REVOKED = "certificate-revoked"
    WRONG_KEY_USAGE = "wrong-key-usage"
    NAME_CONSTRAINT_VIOLATION = "name-constraint-violation"
    WRONG_TLS_MODE = "wrong-tls-mode"
    STARTTLS_NOT_OFFERED = "starttls-not-offered"
    STARTTLS_REQUIRED = "starttls-required"
    AUTH_FAILED = "auth-failed"
    CLIENT_CERTIFICATE_REQUIRED = "client-certificate-required"
    SERVER_REFUSED = "server-refused"


class Verdict(StrEnum):
    """A cell's verdict for a client (docs/certify.md)."""

    PASS = "pass"  # worked where it should (or went on where the client may)
    REFUSED_CORRECTLY = "refused-correctly"  # failed where it must, with the right class
    INCOMPATIBLE = "incompatible"  # failed although a secure session exists
    INSECURE = "insecure"  # went on where it must not


#: Failure classes and verdicts as strings, in declaration order.
FAILURE_CLASSES: tuple[str, ...] = tuple(FailureClass)
VERDICTS: tuple[str, ...] = tuple(Verdict)

#: Versions a secure session may use.
SECURE_VERSIONS: frozenset[str] = frozenset({"TLSv1.2", "TLSv1.3"})

_DEFAULT_TLS13_SUITES = frozenset({"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"})

#: Client families, for ``mailtls certify --family`` (remedies are worded in the family's own settings); each is
#: declared by its module in :mod:`pytest_mailtls.clients.families`.
FAMILIES: tuple[str, ...] = family_names()
StartTLS = Literal["required", "opportunistic", "never"]


@dataclass(frozen=True)
class ClientProfile:
    """What a client offers and how it behaves; the oracle predicts from this alone.

    ``versions``: the versions it is configured to offer. ``disabled_versions``:
    versions its runtime refuses although configured (JDK 17 disables TLSv1 and
    TLSv1.1). ``ciphers``: its TLS <= 1.2 list, as an OpenSSL cipher string or
    JSSE names separated by spaces or commas (``None``: the family's default).
    ``starttls``: ``required`` (uses STARTTLS where offered and refuses to go on
    without it), ``opportunistic`` (uses it where offered, else plaintext) or
    ``never``. ``scope``: ``session`` (greeting, login, send) or ``handshake``
    (TLS only, like ``openssl s_client``). ``family`` picks cipher defaults,
    error tables and the wording of remedies.
    """

    name: str
    family: str = DEFAULT_FAMILY
    protocols: tuple[str, ...] = ("smtp", "imap", "pop3")
    versions: tuple[str, ...] = ("TLSv1.2", "TLSv1.3")
    disabled_versions: tuple[str, ...] = ()
    ciphers: str | None = None
    trusts_ca: bool = True
    verify: bool = True
    check_hostname: bool = True
    implicit_tls: bool = True
    starttls: StartTLS = "required"
    sends_credentials: bool = True
    client_cert: bool = True
    scope: Literal["session", "handshake"] = "session"
    description: str = ""
    #: Whether versions and ciphers were declared (a built-in client) or are only a guess to be replaced by
    #: what the client's own ClientHello offers on each cell (a ``--command`` client).
    declared: bool = True

    def __post_init__(self) -> None:
        for v in (*self.versions, *self.disabled_versions):
            version_index(v)  # raises on unknown names
        if self.starttls not in ("required", "opportunistic", "never"):
            raise ValueError(f"profile {self.name!r}: starttls must be required, opportunistic or never")

    @property
    def effective_versions(self) -> tuple[str, ...]:
        """The versions the client really offers, ascending."""
        return tuple(v for v in VERSIONS if v in self.versions and v not in self.disabled_versions)

    @property
    def legacy(self) -> bool:
        return any(v in ("TLSv1", "TLSv1.1") for v in self.effective_versions)

    def cipher_string(self) -> str:
        """The OpenSSL cipher string this profile stands for (JSSE names translated)."""
        if self.ciphers is not None:
            if _looks_jsse(self.ciphers):
                return ":".join(jsse_to_openssl(n) for n in re.split(r"[\s,]+", self.ciphers.strip()) if n)
            return self.ciphers
        family = client_family(self.family)
        if family.default_suites:  # a runtime with a fixed list (JSSE) offers it whatever the versions
            return ":".join(jsse_to_openssl(n) for n in family.default_suites)
        if self.legacy:
            return "DEFAULT:@SECLEVEL=0"
        return family.default_ciphers

    def cipher_names(self) -> frozenset[str]:
        """OpenSSL names of the TLS <= 1.2 suites offered."""
        return frozenset(c["name"] for c in _expand(self.cipher_string(), client=True) if c["protocol"] != "TLSv1.3")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "protocols": list(self.protocols),
            "versions": list(self.versions),
            "disabled_versions": list(self.disabled_versions),
            "ciphers": self.ciphers,
            "trusts_ca": self.trusts_ca,
            "verify": self.verify,
            "check_hostname": self.check_hostname,
            "implicit_tls": self.implicit_tls,
            "starttls": self.starttls,
            "sends_credentials": self.sends_credentials,
            "client_cert": self.client_cert,
            "scope": self.scope,
            "description": self.description,
            "declared": self.declared,
        }


@dataclass(frozen=True)
class Expectation:
    """The outcome a correct client with the profile gets on a cell.

    ``outcome``: ``"success"`` or a failure class. ``secure_overlap``: the cell
    offers a secure session (TLS 1.2+ with a forward-secret AEAD cipher or TLS
    1.3, a certificate that verifies, TLS reachable by STARTTLS or implicitly),
    so a failure there is the client's incompatibility. ``tls``: a success must
    run over TLS. ``reason``: one line saying why.
    """

    outcome: str
    secure_overlap: bool
    tls: bool
    reason: str
    version: str | None = None  # the version a successful handshake is expected to negotiate
    notes: tuple[str, ...] = field(default=())
    #: A hostile-network cell where a secure client may also go on (the attack is harmless to it): a success over
    #: TLS is ``pass`` although ``outcome`` names the refusal a careful client may meet instead.
    may_succeed: bool = False
    #: A certificate fault that only a client checking more than OpenSSL's defaults refuses (revocation, CN
    #: fallback): what a client that goes on does not check (its success is ``pass``, and says so).
    lenient: str | None = None

    @property
    def success(self) -> bool:
        return self.outcome == SUCCESS

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "secure_overlap": self.secure_overlap,
            "tls": self.tls,
            "reason": self.reason,
            "version": self.version,
        }


def applicable(profile: ClientProfile, cell: Cell) -> bool:
    """Whether the client speaks the cell's protocol at all."""
    return str(cell.protocol) in profile.protocols


def expect(profile: ClientProfile, cell: Cell) -> Expectation:
    """The expected outcome of ``profile`` on ``cell``."""
    if cell.network is not None:
        return _expect_hostile(profile, cell)
    secure = cell_is_secure(cell)
    proto = str(cell.protocol)
    mode = cell.mode

    if mode is Mode.IMPLICIT and not profile.implicit_tls:
        return Expectation(
            "wrong-tls-mode", secure, True, "the port speaks implicit TLS; the client opens in plaintext"
        )
    if mode is Mode.PLAIN:
        if profile.starttls == "required" or profile.scope == "handshake":
            return Expectation("starttls-not-offered", False, False, "no TLS on this port and the client requires it")
        if _needs_credentials(profile, cell):
            return Expectation(
                "starttls-not-offered",
                False,
                False,
                "no TLS on this port: logging in would send the password in plaintext",
            )
        if proto == "smtp" and cell.auth.required and not profile.sends_credentials:
            return Expectation("auth-failed", False, False, "the port requires authentication; the client sends none")
        return Expectation(SUCCESS, False, False, "a plaintext port that needs no credentials")
    if mode in (Mode.STARTTLS, Mode.STARTTLS_REQUIRED) and profile.starttls == "never":
        return Expectation(
            "starttls-required", secure, True, "STARTTLS is offered (or required) but the client never uses it"
        )
    return _expect_tls(profile, cell, secure)


def _expect_tls(profile: ClientProfile, cell: Cell, secure: bool) -> Expectation:
    policy, cert = cell.policy, cell.cert
    assert policy is not None and cert is not None  # TLS cells carry both
    offered = profile.effective_versions
    common = [v for v in policy.versions if v in offered]
    if not common:
        if profile.versions and not offered:
            what = f"the client is set to {_versions(profile.versions)}, which its runtime disables"
        else:
            what = f"the client offers {_versions(offered)}"
        why = f"{what}; the server accepts {_versions(policy.versions)}"
        return Expectation("protocol-version-mismatch", secure, True, why)
    version = common[-1]  # both ends pick the highest common version; no fallback to lower ones
    if policy.null_encryption:
        # Whatever the client offered: a session here would carry the mail in clear inside TLS records.
        why = (
            f"at {version} the server offers NULL encryption only ({policy.ciphers}): a session would carry the "
            "mail and the password in clear, so a correct client offers no such suite"
        )
        return Expectation("no-shared-cipher", False, True, why, version)
    if policy.weak_dh:
        # Whatever the client offered: a session here would rest on a DH group small enough to break (Logjam).
        why = (
            f"at {version} the server offers DHE only ({policy.ciphers}) over a {policy.dh_bits}-bit DH group "
            "(Logjam-era, under 2048 bits), so a correct client refuses the key exchange (or offers no DHE suite)"
        )
        return Expectation("weak-dh", False, True, why, version)
    if not _cipher_overlap(profile, policy, cert, version):
        why = f"at {version} the client and the server share no cipher"
        return Expectation("no-shared-cipher", secure, True, why, version)
    if not profile.trusts_ca and cert.verifies:
        return Expectation("untrusted-certificate", secure, True, "the client does not trust the session CA", version)
    fault = cert.fault
    if fault.failure is not None:
        said = f"the server presents {fault.words or cert}"
        if fault.lenient is not None:  # refusing is right; going on says the client does not check it
            why = f"{said}: a client that checks it refuses; one that goes on does not check {fault.lenient}"
            return Expectation(fault.failure, False, True, why, version, lenient=fault.lenient)
        return Expectation(fault.failure, False, True, said, version)
    if cell.auth.client_cert and not profile.client_cert:
        why = "the server requires a client certificate; the client presents none"
        return Expectation("client-certificate-required", secure, True, why, version)
    smtp_auth = profile.scope == "session" and str(cell.protocol) == "smtp" and cell.auth.required
    if smtp_auth and not profile.sends_credentials and not cell.auth.client_cert:
        return Expectation("auth-failed", secure, True, "the server requires AUTH; the client sends none", version)
    if fault.may_refuse is not None:  # it verifies, and a stricter client may still refuse it
        why = f"{version} with {fault.words}; {fault.may_refuse}"
        return Expectation(SUCCESS, False, True, why, version)
    return Expectation(SUCCESS, secure, True, f"{version} with a certificate that verifies", version)


def _expect_hostile(profile: ClientProfile, cell: Cell) -> Expectation:
    """A hostile-network cell: what a secure client does there (the attack's own statement), given what it would
    get from the real server behind (``cell.base``)."""
    from .wire.attacks import attack_named  # the registry of attacks imports this module's neighbours

    attack = attack_named(cell.network or "")
    base = expect(profile, cell.base)
    said = f"{attack.name}: {attack.description}; {attack.secure_outcome}"
    if attack.expected == "refuse":
        return Expectation(attack.refusal or "starttls-not-offered", False, True, said, base.version)
    if not base.success:  # the client cannot have this cell's session anyway: the attack changes nothing
        return dataclasses.replace(base, secure_overlap=False, reason=f"{base.reason} ({attack.name})")
    if attack.refusal is not None:  # a secure client meets the refusal, or goes on at a version it accepts
        return Expectation(attack.refusal, False, True, said, base.version, may_succeed=True)
    return dataclasses.replace(base, secure_overlap=False, reason=said, may_succeed=True)


def verdict(expectation: Expectation, *, ok: bool, tls: bool | None) -> tuple[Verdict, str]:
    """The verdict for an actual outcome, and one line saying why.

    ``tls``: whether the session ran over TLS (``None`` when the client cannot tell).
    """
    if ok:
        if not expectation.success and not expectation.may_succeed and expectation.lenient is None:
            return Verdict.INSECURE, f"succeeded although it must fail with {expectation.outcome}: {expectation.reason}"
        if expectation.tls and tls is False:
            return Verdict.INSECURE, "went on in plaintext although the port offers TLS"
        if expectation.lenient is not None:
            return (
                Verdict.PASS,
                f"went on: the client does not check {expectation.lenient} ({expectation.outcome} missed)",
            )
        return Verdict.PASS, "worked as it should"
    if not expectation.secure_overlap and expectation.tls:
        # No secure session exists on this cell: refusing it is right, whatever the profile predicted.
        return Verdict.REFUSED_CORRECTLY, f"refused a cell that offers no secure session: {expectation.reason}"
    if expectation.success:
        return Verdict.INCOMPATIBLE, f"failed although it should work: {expectation.reason}"
    if expectation.secure_overlap:
        return (
            Verdict.INCOMPATIBLE,
            f"failed with {expectation.outcome} although a secure session exists: {expectation.reason}",
        )
    return Verdict.REFUSED_CORRECTLY, f"refused as it must: {expectation.reason}"


# --- the cell side ----------------------------------------------------------------


def cell_is_secure(cell: Cell) -> bool:
    """Whether a correctly configured client can have a secure session with this cell."""
    if not cell.mode.tls or cell.policy is None or cell.cert is None or not cell.cert.verifies:
        return False
    if cell.policy.accepts("TLSv1.3") and _server_tls13_suites(cell.policy):
        return True
    if not cell.policy.accepts("TLSv1.2"):
        return False
    # DHE over a group under 2048 bits is no secure key exchange (Logjam): such suites do not count.
    forward = ("kx-ecdhe",) if cell.policy.small_dh else ("kx-ecdhe", "kx-dhe")
    return any(c["kea"] in forward and c["aead"] for c in _server_ciphers(cell.policy, cell.cert, "TLSv1.2"))


def _needs_credentials(profile: ClientProfile, cell: Cell) -> bool:
    """Whether the session can only succeed by sending the password (IMAP/POP3 always log in)."""
    if str(cell.protocol) != "smtp":
        return True
    return profile.sends_credentials and cell.auth.required and bool(cell.auth.mechanisms)


def _cipher_overlap(profile: ClientProfile, policy: TLSPolicy, cert: CertProfile, version: str) -> bool:
    if version == "TLSv1.3":
        return bool(_server_tls13_suites(policy) & _DEFAULT_TLS13_SUITES)
    server = {c["name"] for c in _server_ciphers(policy, cert, version)}
    return bool(server & profile.cipher_names())


def _server_tls13_suites(policy: TLSPolicy) -> frozenset[str]:
    if policy.ciphersuites is None:
        return _DEFAULT_TLS13_SUITES
    return frozenset(policy.ciphersuites.split(":"))


def _server_ciphers(policy: TLSPolicy, cert: CertProfile, version: str) -> list[dict[str, Any]]:
    """The server's TLS <= 1.2 suites usable at ``version`` with a certificate of ``cert``'s key type."""
    wanted_auth = "auth-ecdsa" if cert.key_type == "ecdsa" else "auth-rsa"
    usable = []
    for c in _expand(policy.openssl_ciphers(), client=False):
        if c["protocol"] == "TLSv1.3" or c["auth"] != wanted_auth:
            continue
        if c["kea"] == "kx-rsa" and cert.key_type != "rsa":
            continue
        if _cipher_min_version(c["protocol"]) > version_index(version):
            continue
        usable.append(c)
    return usable


def _cipher_min_version(protocol: str) -> int:
    # OpenSSL labels suites by the version that introduced them; SSLv3 suites work from TLSv1 on.
    return {"SSLv3": 0, "TLSv1.0": 0, "TLSv1.1": 1, "TLSv1.2": 2, "TLSv1.3": 3}.get(protocol, 2)


@functools.lru_cache(maxsize=64)
def _expand_cached(cipher_string: str, client: bool) -> tuple[tuple[tuple[str, Any], ...], ...]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT if client else ssl.PROTOCOL_TLS_SERVER)
    if cipher_string:
        try:
            ctx.set_ciphers(cipher_string)
        except ssl.SSLError:
            return ()
    return tuple(tuple(sorted(c.items())) for c in ctx.get_ciphers())


def _expand(cipher_string: str, *, client: bool) -> list[dict[str, Any]]:
    """The suites a cipher string selects in the local OpenSSL, as ``SSLContext.get_ciphers()`` dicts."""
    return [dict(c) for c in _expand_cached(cipher_string, client)]


# --- names ------------------------------------------------------------------------

_JSSE_KX = {
    "ECDHE_ECDSA": "ECDHE-ECDSA-",
    "ECDHE_RSA": "ECDHE-RSA-",
    "DHE_RSA": "DHE-RSA-",
    "DHE_DSS": "DHE-DSS-",
    "RSA": "",
}
_JSSE_BULK = {
    "AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "CHACHA20_POLY1305_SHA256": "CHACHA20-POLY1305",
    "AES_128_CBC_SHA": "AES128-SHA",
    "AES_256_CBC_SHA": "AES256-SHA",
    "AES_128_CBC_SHA256": "AES128-SHA256",
    "AES_256_CBC_SHA256": "AES256-SHA256",
    "AES_256_CBC_SHA384": "AES256-SHA384",
    "AES_128_CCM": "AES128-CCM",
    "AES_256_CCM": "AES256-CCM",
}


def jsse_to_openssl(name: str) -> str:
    """``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`` -> ``ECDHE-RSA-AES128-GCM-SHA256``; TLS 1.3 names pass through."""
    match = re.fullmatch(r"(?:TLS|SSL)_(\w+?)_WITH_(\w+)", name)
    if match is None:
        return name  # TLS 1.3 suites and OpenSSL names are spelled alike
    kx, bulk = match.groups()
    if kx not in _JSSE_KX or bulk not in _JSSE_BULK:
        return name
    if kx.startswith("DHE") and bulk.startswith("CHACHA20"):
        return "DHE-RSA-CHACHA20-POLY1305"
    if kx in ("DHE_RSA", "DHE_DSS") and bulk.endswith("_CCM"):
        return f"DHE-RSA-{_JSSE_BULK[bulk]}"
    return _JSSE_KX[kx] + _JSSE_BULK[bulk]


def _looks_jsse(ciphers: str) -> bool:
    return bool(re.search(r"\b(?:TLS|SSL)_\w+_WITH_\w+", ciphers))


def _versions(versions: Iterable[str]) -> str:
    items = list(versions)
    if not items:
        return "no usable version"
    return items[0] if len(items) == 1 else f"{items[0]}..{items[-1]}"
