"""The policy model: pure data, no I/O.

A *cell* is the unit everything in pytest-mailtls speaks: one server, one
service (port role), one TLS mode, one TLS policy, one certificate profile and
one auth policy. Fixtures are parametrized by cells, the manifest lists cells,
probe/verify check cells and certify reports on them.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .pki import CertFault

__all__ = [
    "CELL_KEYS",
    "GROUPS",
    "VERSIONS",
    "LEGACY_VERSIONS",
    "DH_GROUPS",
    "DH_SIZES",
    "DHGroup",
    "DH_SECURE_BITS",
    "Protocol",
    "Mode",
    "Service",
    "SERVICES",
    "CertProfile",
    "TLSPolicy",
    "AuthPolicy",
    "Cell",
    "version_index",
]

#: The attributes a cell is selected by (markers, ``where=``, ``--where``, selections), ``id`` included.
CELL_KEYS = ("server", "service", "protocol", "mode", "policy", "cert", "auth", "network", "id")

#: Protocol versions in ascending order, spelled as OpenSSL and the manifest spell them.
VERSIONS: tuple[str, ...] = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
#: Versions that OpenSSL 3 (Debian bookworm) only negotiates at security level 0.
LEGACY_VERSIONS: frozenset[str] = frozenset({"TLSv1", "TLSv1.1"})


@dataclass(frozen=True)
class DHGroup:
    """A finite-field Diffie-Hellman group a policy's ``dh_bits`` names: a well-known safe prime, so nothing is
    generated per session (1024-bit parameters take seconds to make) and every backend serves the same group."""

    bits: int
    name: str
    prime: int
    generator: int = 2


#: The DH groups a policy may name, by size (``dh_bits``); their PEM is :func:`pytest_mailtls.tls.dh_params_pem`.
DH_GROUPS: dict[int, DHGroup] = {
    1024: DHGroup(
        1024,
        "RFC 2409 Oakley group 2 (Logjam-era 1024-bit MODP, badssl's dh1024)",
        int(
            "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DD"
            "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
            "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF",
            16,
        ),
    ),
    2048: DHGroup(
        2048,
        "RFC 7919 ffdhe2048",
        int(
            "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695A9E13641146433FBCC939DCE249B3EF9"
            "7D2FE363630C75D8F681B202AEC4617AD3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
            "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797ABC0AB182B324FB61D108A94BB2C8E3FB"
            "B96ADAB760D7F4681D4F42A3DE394DF4AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
            "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005C58EF1837D1683B2C6F34A26C1B2EFFA"
            "886B423861285C97FFFFFFFFFFFFFFFF",
            16,
        ),
    ),
}
DH_SIZES: tuple[int, ...] = tuple(DH_GROUPS)
#: The smallest DH group OpenSSL 3 accepts at security level 2 (Debian's default, on both ends).
DH_SECURE_BITS = 2048


def version_index(version: str) -> int:
    """Position of ``version`` in :data:`VERSIONS`; ``ValueError`` if unknown."""
    try:
        return VERSIONS.index(version)
    except ValueError:
        raise ValueError(f"unknown TLS version {version!r}; allowed: {', '.join(VERSIONS)}") from None


class Protocol(StrEnum):
    SMTP = "smtp"
    IMAP = "imap"
    POP3 = "pop3"


class Mode(StrEnum):
    """How TLS is reached on a port."""

    PLAIN = "plain"  # no TLS at all, STARTTLS not offered
    STARTTLS = "starttls"  # STARTTLS offered, plaintext still allowed
    STARTTLS_REQUIRED = "starttls-required"  # STARTTLS offered, commands refused before it
    IMPLICIT = "implicit"  # TLS from the first byte (465, 993, 995)

    @property
    def tls(self) -> bool:
        return self is not Mode.PLAIN


@dataclass(frozen=True)
class Service:
    """A port role: what protocol it speaks and whether TLS is implicit."""

    name: str
    protocol: Protocol
    default_port: int
    implicit: bool

    def allows(self, mode: Mode) -> bool:
        """Implicit-TLS ports only take ``implicit``; the others take everything else."""
        return (mode is Mode.IMPLICIT) == self.implicit


SERVICES: dict[str, Service] = {
    s.name: s
    for s in (
        Service("smtp", Protocol.SMTP, 25, False),
        Service("submission", Protocol.SMTP, 587, False),
        Service("smtps", Protocol.SMTP, 465, True),
        Service("imap", Protocol.IMAP, 143, False),
        Service("imaps", Protocol.IMAP, 993, True),
        Service("pop3", Protocol.POP3, 110, False),
        Service("pop3s", Protocol.POP3, 995, True),
    )
}


class CertProfile(StrEnum):
    """Certificate profiles a server can present. Each is one field failure, or none; its spec (how it is made,
    checked and judged) is its :class:`~pytest_mailtls.pki.CertFault` in :data:`pki.CERT_FAULTS`."""

    VALID = "valid"
    ECDSA_P256 = "ecdsa-p256"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    WRONG_HOST = "wrong-host"
    SELF_SIGNED = "self-signed"
    UNTRUSTED_CA = "untrusted-ca"
    MISSING_INTERMEDIATE = "missing-intermediate"
    WEAK_RSA_1024 = "weak-rsa-1024"
    SHA1_SIGNATURE = "sha1-signature"
    REVOKED = "revoked"
    REVOCATION_UNREACHABLE = "revocation-unreachable"
    NO_SAN = "no-san"
    SHA1_INTERMEDIATE = "sha1-intermediate"
    EXPIRED_INTERMEDIATE = "expired-intermediate"
    WRONG_EKU = "wrong-eku"
    NAME_CONSTRAINT_VIOLATION = "name-constraint-violation"
    RSA_4096 = "rsa-4096"
    ECDSA_P384 = "ecdsa-p384"

    @property
    def verifies(self) -> bool:
        """Whether a client that trusts the session CA and checks the host name accepts it."""
        return self.fault.verifies

    @property
    def failure(self) -> str | None:
        """The diagnosis class a verifying client must fail with, or ``None``."""
        return self.fault.failure

    @property
    def key_type(self) -> str:
        return self.fault.key_type

    @property
    def fault(self) -> CertFault:
        """This profile's facts, declared next to the PKI that makes it (:data:`pki.CERT_FAULTS`)."""
        from .pki import CERT_FAULTS

        return CERT_FAULTS[self]


#: The groups of the report's grid, in order (badssl's dashboard, plus faults and cleartext ports). Each cell's group
#: is declared by what makes it what it is: its network (``Attack.group``, :mod:`pytest_mailtls.wire.attacks`), its certificate profile
#: (``CertFault.group``), its TLS policy (``TLSPolicy.group``); ``Cell.group`` reads them.
GROUPS: tuple[str, ...] = (
    "certificate validation",
    "interception",
    "broken crypto",
    "legacy crypto",
    "STARTTLS attacks",
    "faults",
    "cleartext",
    "secure",
)


@dataclass(frozen=True)
class TLSPolicy:
    """What a server accepts once TLS starts.

    ``ciphers`` is an OpenSSL cipher list for TLS <= 1.2 (``None``: the
    server's default), ``ciphersuites`` the TLS 1.3 suites (``None``: default).
    ``dh_bits`` is the size of the finite-field Diffie-Hellman group the server
    uses for DHE suites (``None``: the server's own); each size is one fixed,
    well-known group (:data:`DH_GROUPS`).
    """

    name: str
    min_version: str = "TLSv1.2"
    max_version: str = "TLSv1.3"
    ciphers: str | None = None
    ciphersuites: str | None = None
    description: str = ""
    dh_bits: int | None = None

    def __post_init__(self) -> None:
        if version_index(self.min_version) > version_index(self.max_version):
            raise ValueError(
                f"policy {self.name!r}: min_version {self.min_version} is above max_version {self.max_version}"
            )
        if self.dh_bits is not None and self.dh_bits not in DH_SIZES:
            raise ValueError(
                f"policy {self.name!r}: no DH group of {self.dh_bits} bits (known: {', '.join(map(str, DH_SIZES))})"
            )

    @property
    def versions(self) -> tuple[str, ...]:
        """The protocol versions this policy accepts, ascending."""
        lo, hi = version_index(self.min_version), version_index(self.max_version)
        return VERSIONS[lo : hi + 1]

    def accepts(self, version: str) -> bool:
        return version in self.versions

    @property
    def legacy(self) -> bool:
        """TLSv1/1.1 allowed: OpenSSL 3 needs security level 0 on both ends."""
        return any(v in LEGACY_VERSIONS for v in self.versions)

    @property
    def group(self) -> str:
        """The report's group of a cell with this policy and a good certificate (:data:`GROUPS`): ``legacy crypto``
        when TLSv1/1.1 are accepted, ``broken crypto`` when TLS 1.3 is not and every TLS <= 1.2 suite listed lacks
        forward secrecy (static RSA), every one encrypts nothing (NULL) or every one is DHE over a small group
        (:attr:`weak_dh`), ``secure`` otherwise."""
        if self.legacy:
            return "legacy crypto"
        if self.null_encryption or self.weak_dh:
            return "broken crypto"
        names = (self.ciphers or "").split(":")
        if self.ciphers and self.max_version != "TLSv1.3" and not any("DHE" in n or n.startswith("@") for n in names):
            return "broken crypto"
        return "secure"

    @property
    def null_encryption(self) -> bool:
        """TLS 1.3 is not accepted and every TLS <= 1.2 suite of ``ciphers`` has NULL encryption (``eNULL``): a
        session carries mail in clear inside TLS records. OpenSSL offers such suites at security level 0 only."""
        if self.ciphers is None or self.accepts("TLSv1.3"):
            return False
        from .tls import null_encryption  # tls imports this module

        return null_encryption(self.ciphers)

    @property
    def small_dh(self) -> bool:
        """The server's DH group is under :data:`DH_SECURE_BITS` bits: OpenSSL 3 only loads (and a client only
        accepts) it below security level 2 (level 1 takes 1024 bits)."""
        return self.dh_bits is not None and self.dh_bits < DH_SECURE_BITS

    @property
    def weak_dh(self) -> bool:
        """TLS 1.3 is not accepted, every TLS <= 1.2 suite of ``ciphers`` is a DHE one and the group is small
        (:attr:`small_dh`): every session has a Logjam-era key exchange (badssl's ``dh1024``)."""
        if not self.small_dh or self.ciphers is None or self.accepts("TLSv1.3"):
            return False
        from .tls import dhe_only  # tls imports this module

        return dhe_only(self.ciphers)

    @property
    def tls12_only_ciphers(self) -> bool:
        return self.max_version != "TLSv1.3"

    def openssl_ciphers(self) -> str:
        """The cipher string a server hands OpenSSL, with ``@SECLEVEL=0`` where legacy versions or NULL
        encryption need it, and ``@SECLEVEL=1`` where a small DH group does (OpenSSL 3 refuses to load one
        under 2048 bits at level 2)."""
        base = self.ciphers or "DEFAULT"
        if (self.legacy or self.null_encryption) and "@SECLEVEL" not in base:
            base += ":@SECLEVEL=0"
        elif self.small_dh and "@SECLEVEL" not in base:
            base += ":@SECLEVEL=1"
        return base

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "min_version": self.min_version,
            "max_version": self.max_version,
            "ciphers": self.ciphers,
            "ciphersuites": self.ciphersuites,
            "dh_bits": self.dh_bits,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TLSPolicy:
        return cls(
            name=str(data["name"]),
            min_version=str(data["min_version"]),
            max_version=str(data["max_version"]),
            ciphers=_opt_str(data.get("ciphers")),
            ciphersuites=_opt_str(data.get("ciphersuites")),
            dh_bits=_opt_int(data.get("dh_bits")),
        )


@dataclass(frozen=True)
class AuthPolicy:
    """Who may send or log in, and when AUTH is offered.

    ``tls_only``: AUTH is advertised and accepted only after TLS is up.
    ``required``: SMTP refuses MAIL/RCPT until the client authenticates.
    ``client_cert``: the server demands a client certificate from the session CA.
    """

    name: str
    mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    tls_only: bool = True
    required: bool = True
    client_cert: bool = False
    description: str = ""

    def to_json(self, *, username: str, password: str) -> dict[str, object]:
        return {
            "name": self.name,
            "mechanisms": list(self.mechanisms),
            "username": username,
            "password": password,
            "tls_only": self.tls_only,
            "required": self.required,
        }

    @classmethod
    def from_json(cls, data: dict[str, object], *, client_cert: bool) -> AuthPolicy:
        mechs = data.get("mechanisms") or []
        assert isinstance(mechs, list)
        return cls(
            name=str(data.get("name", "default")),
            mechanisms=tuple(str(m) for m in mechs),
            tls_only=bool(data.get("tls_only", True)),
            required=bool(data.get("required", True)),
            client_cert=client_cert,
        )


#: The auth policy whose name is left out of cell ids.
DEFAULT_AUTH = "default"


@dataclass(frozen=True)
class Cell:
    """One server port serving one combination of the grid.

    Plain cells have no TLS policy and no certificate profile.
    """

    server: str
    service: Service
    mode: Mode
    policy: TLSPolicy | None
    cert: CertProfile | None
    auth: AuthPolicy = field(default_factory=lambda: AuthPolicy(DEFAULT_AUTH))
    #: A hostile network between client and server: the name of an attack (``strip-capa``, ``intercept``, ...; see
    #: :mod:`pytest_mailtls.wire.attacks`) played by the relay in front of the real server, or ``None``.
    network: str | None = None

    def __post_init__(self) -> None:
        if not self.service.allows(self.mode):
            raise ValueError(f"service {self.service.name} cannot run in mode {self.mode}")
        if self.mode.tls != (self.policy is not None) or self.mode.tls != (self.cert is not None):
            raise ValueError("a TLS cell needs a policy and a certificate profile; a plain cell neither")

    @property
    def id(self) -> str:
        """Stable, readable id, e.g. ``postfix-submission-starttls-tls12-only-valid``."""
        parts = [self.server, self.service.name, str(self.mode)]
        if self.policy is not None and self.cert is not None:
            parts += [self.policy.name, str(self.cert)]
        if self.auth.name != DEFAULT_AUTH:
            parts.append(self.auth.name)
        if self.network is not None:
            parts.append(self.network)
        return "-".join(parts)

    @property
    def base(self) -> Cell:
        """The cell the real server serves: this one without its hostile network."""
        return self if self.network is None else replace(self, network=None)

    @property
    def hostile(self) -> bool:
        return self.network is not None

    @property
    def group(self) -> str:
        """The report's group (:data:`GROUPS`), as declared by what makes the cell what it is: its network (an attack
        or a fault), else its certificate profile (``CertFault.group``), else its TLS policy; a port without TLS is
        ``cleartext``."""
        if self.network is not None:
            from .wire.attacks import attack_named  # the wire package imports this module

            return attack_named(self.network).group
        if self.cert is not None and (kind := self.cert.fault.report_group) != "secure":
            return kind
        if self.policy is not None and self.policy.group != "secure":
            return self.policy.group
        return "secure" if self.mode.tls else "cleartext"

    @property
    def protocol(self) -> Protocol:
        return self.service.protocol

    @property
    def tls(self) -> bool:
        return self.mode.tls

    def accepts_version(self, version: str) -> bool:
        """Whether a handshake at exactly ``version`` completes on this cell."""
        return self.policy is not None and self.policy.accepts(version)

    def __str__(self) -> str:
        return self.id


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_int(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"not a number of bits: {value!r}")
    return int(value)
