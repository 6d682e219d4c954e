"""Apache James: one JVM serves every selected James cell, each on its own port.

James accepts several ``<smtpserver>``, ``<imapserver>`` and ``<pop3server>``
entries, each with its own port, TLS mode (``socketTLS`` = implicit,
``startTLS``), protocol list, JSSE cipher-suite list, JKS keystore and, for
mutual TLS, a ``<clientAuth>`` truststore holding the session CA. Policies are
translated, not approximated:

* versions: every TLS cell lists its protocols explicitly. JDK 17 disables
  TLSv1/TLSv1.1 (and static-RSA suites) in ``jdk.tls.disabledAlgorithms``,
  which wins over any server setting; when a cell needs them, the entrypoint
  drops exactly those entries from the image's own ``java.security`` and
  passes the result with ``-Djava.security.properties``. Because that widens
  the JVM's defaults, no cell relies on defaults.
* ciphers: the policy's OpenSSL cipher string is expanded by the local OpenSSL
  and mapped to JSSE (IANA) names; what the JVM cannot offer (CAMELLIA, ARIA,
  PSK, anonymous suites, TLS 1.3 CCM...) is reported by :func:`cipher_plan`
  and in ``Endpoint.extra["jvm_missing_ciphers"]``. A cell left with none is
  unsupported.
* what stock James lacks comes from a small extension jar compiled in the image
  (``containers/james/ext``): SMTP hooks that refuse MAIL before STARTTLS
  (``starttls-required``) or before AUTH (``required``), a POP3 handler that
  refuses USER/PASS before STLS, and the capture hook below.

Capture: a message hook writes every accepted message into
``/mailtls/mail/<local port>/new/`` (a bind-mounted host folder) before James
goes on with it, so each cell's Maildir holds exactly what that port received.
The mailet pipeline then delivers mail for the test user locally (visible over
IMAP/POP3) and drops everything else: nothing is ever relayed, and DNS points
at a refusing loopback resolver.

James runs with its own main class (``containers/james/ext``, ``MailtlsJamesMain``): the
in-memory server's mailbox, users, queue and mailet container with the SMTP, IMAP and
POP3 servers only (no JMAP, LMTP, ManageSieve, JMX or WebAdmin), which then creates the
test user from ``users/<name>`` itself.

Rendering is pure (:func:`render`, :func:`cipher_plan`, the keystore writers);
:class:`JamesBackend` writes the files, starts the container and waits for a verified
handshake on every port (from the moment every server listens) and for the user.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import secrets
import shlex
import shutil
import ssl
import struct
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import ServerStartError
from ..manifest import Endpoint
from ..pki import SessionPKI, load_own_key
from ..policy import LEGACY_VERSIONS, SERVICES, AuthPolicy, Cell, CertProfile, Mode, Protocol, TLSPolicy
from .base import Progress, no_progress
from .container import (
    FIRST_PORT,
    ContainerBackend,
    ContainerServer,
    Plan,
    PlanInput,
    check_render_input,
    container_ports,
    exited,
    write_private,
)

if TYPE_CHECKING:
    from ..diagnose import Rule
    from ..runtime import Container

__all__ = [
    "DOMAIN",
    "FIRST_PORT",
    "JAMES_VERSION",
    "JDK_DEFAULT_SUITES",
    "JSSE_SUITES",
    "JSSE_TLS13_SUITES",
    "MECHANISMS",
    "CipherPlan",
    "JamesBackend",
    "JamesServer",
    "RenderedConfig",
    "cell_log_lines",
    "cipher_plan",
    "container_ports",
    "jks_keystore",
    "jks_truststore",
    "host_ca_bundle",
    "host_maven_mirror",
    "prepare_build_context",
    "render",
    "security_reenable",
    "training_cells",
    "training_files",
    "unsupported_reason",
    "write_training_files",
]

#: The James release in the image (3.8.2 is not on the Maven Central this project reaches; 3.9 needs Java 21).
JAMES_VERSION = "3.8.1"
#: The mail domain James serves; the test user lives there.
DOMAIN = "mailtls.test"
#: SASL mechanisms James offers for SMTP (always together); IMAP offers AUTHENTICATE PLAIN plus the LOGIN
#: command, POP3 USER/PASS only.
MECHANISMS = ("PLAIN", "LOGIN")

# Where things are inside the container (one read-write bind mount of a host folder).
ROOT = "/mailtls"
MAIL_ROOT = f"{ROOT}/mail"
TLS_ROOT = f"{ROOT}/tls"
HOSTNAME = "mail.mailtls.test"
#: JVM options for one James serving about a hundred ports within a 600 MB resident budget.
JAVA_OPTS = (
    "-Xms64m",
    "-Xmx256m",
    # A young generation of 24 MB however far the heap grows (Serial sizes it at a third of the heap otherwise,
    # 35 MB once the start has grown the heap): about 15 MB less resident for a few more, short collections.
    "-Xmn24m",
    "-XX:MaxMetaspaceSize=192m",
    "-XX:ReservedCodeCacheSize=64m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xss512k",
    "-Djava.net.preferIPv4Stack=true",
    # Guice calls constructors and provider methods by reflection instead of generating a class for each
    # (about 370 generated classes otherwise, none of which the class-data-sharing archive can keep).
    "-Dguice_bytecode_gen_option=DISABLED",
    # RSA signatures by NSS (native) instead of SunRsaSign's BigInteger code, which C1 compiles without the
    # C2 intrinsics: about 9 ms of CPU per handshake's 2048-bit signature (MailtlsJamesMain, nss-rsa.cfg).
    "-Dmailtls.rsa.provider=/opt/james/nss-rsa.cfg",
)

_EXT = "org.mailtls.james"

# --------------------------------------------------------------------------- cipher suites

#: OpenSSL name -> JSSE (IANA) name of every TLS <= 1.2 suite JDK 17 can offer once static RSA is re-enabled.
#: Read off the image's JVM (``getSupportedCipherSuites`` with an empty ``jdk.tls.disabledAlgorithms`` minus
#: what stays disabled here: anon, NULL, RC4, 3DES, static ECDH) and mapped with ``openssl ciphers -stdname``.
JSSE_SUITES: dict[str, str] = {
    "ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "DHE-DSS-AES256-GCM-SHA384": "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384",
    "DHE-RSA-AES256-GCM-SHA384": "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305": "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "DHE-RSA-CHACHA20-POLY1305": "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "DHE-DSS-AES128-GCM-SHA256": "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256",
    "DHE-RSA-AES128-GCM-SHA256": "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "ECDHE-ECDSA-AES256-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "ECDHE-RSA-AES256-SHA384": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "DHE-RSA-AES256-SHA256": "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    "DHE-DSS-AES256-SHA256": "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
    "ECDHE-ECDSA-AES128-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "ECDHE-RSA-AES128-SHA256": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "DHE-RSA-AES128-SHA256": "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    "DHE-DSS-AES128-SHA256": "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256",
    "ECDHE-ECDSA-AES256-SHA": "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "ECDHE-RSA-AES256-SHA": "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "DHE-RSA-AES256-SHA": "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    "DHE-DSS-AES256-SHA": "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
    "ECDHE-ECDSA-AES128-SHA": "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "ECDHE-RSA-AES128-SHA": "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "DHE-RSA-AES128-SHA": "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    "DHE-DSS-AES128-SHA": "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
    "AES256-GCM-SHA384": "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "AES128-GCM-SHA256": "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "AES256-SHA256": "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "AES128-SHA256": "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "AES256-SHA": "TLS_RSA_WITH_AES_256_CBC_SHA",
    "AES128-SHA": "TLS_RSA_WITH_AES_128_CBC_SHA",
}
#: TLS 1.3 suites JSSE implements (no CCM), in JDK 17's default order; OpenSSL spells them the same.
JSSE_TLS13_SUITES: tuple[str, ...] = (
    "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256",
)
#: JDK 17's default TLS <= 1.2 suites, in its order (the image's ``getDefaultCipherSuites``): what a policy
#: without a cipher list gets, written out so a JVM-wide java.security override cannot widen it.
JDK_DEFAULT_SUITES: tuple[str, ...] = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_DHE_DSS_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_DHE_DSS_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA256",
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_DHE_DSS_WITH_AES_256_CBC_SHA",
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_DHE_DSS_WITH_AES_128_CBC_SHA",
)
_STATIC_RSA = re.compile(r"^TLS_RSA_WITH_")


@dataclass(frozen=True)
class CipherPlan:
    """What one policy becomes in JSSE terms.

    ``suites``: the JSSE names to configure (TLS 1.3 first, then TLS <= 1.2 in the policy's order);
    ``missing``: OpenSSL names the policy asks for that the JVM cannot offer, each once.
    """

    suites: tuple[str, ...]
    missing: tuple[str, ...]

    @property
    def tls12_suites(self) -> tuple[str, ...]:
        return tuple(s for s in self.suites if s not in JSSE_TLS13_SUITES)

    @property
    def tls13_suites(self) -> tuple[str, ...]:
        return tuple(s for s in self.suites if s in JSSE_TLS13_SUITES)

    @property
    def static_rsa(self) -> bool:
        """Whether a suite needs ``TLS_RSA_*`` re-enabled in ``jdk.tls.disabledAlgorithms``."""
        return any(_STATIC_RSA.match(s) for s in self.suites)


def _expand_openssl(cipher_string: str) -> list[str]:
    """The TLS <= 1.2 suites (OpenSSL names, in order) that the local OpenSSL makes of ``cipher_string``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    text = cipher_string if "@SECLEVEL" in cipher_string else cipher_string + ":@SECLEVEL=0"
    try:
        ctx.set_ciphers(text)
    except ssl.SSLError:
        return []
    return [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


def cipher_plan(policy: TLSPolicy) -> CipherPlan:
    """Map ``policy`` to JSSE suite names and list what the JVM cannot offer.

    A policy without ``ciphers`` gets :data:`JDK_DEFAULT_SUITES`; one without ``ciphersuites`` gets every
    TLS 1.3 suite JSSE has. Suites for versions outside the policy are left out.
    """
    versions = policy.versions
    tls13: list[str] = []
    tls12: list[str] = []
    missing: list[str] = []
    if "TLSv1.3" in versions:
        if policy.ciphersuites is None:
            tls13 = list(JSSE_TLS13_SUITES)
        else:
            for suite in policy.ciphersuites.split(":"):
                (tls13 if suite in JSSE_TLS13_SUITES else missing).append(suite)
    if any(v != "TLSv1.3" for v in versions):
        if policy.ciphers is None:
            tls12 = list(JDK_DEFAULT_SUITES)
        else:
            for name in _expand_openssl(policy.ciphers):
                jsse = JSSE_SUITES.get(name)
                if jsse is None:
                    missing.append(name)
                elif jsse not in tls12:
                    tls12.append(jsse)
    return CipherPlan(tuple(dict.fromkeys(tls13 + tls12)), tuple(dict.fromkeys(missing)))


def security_reenable(cells: Sequence[Cell]) -> tuple[str, ...]:
    """Entries of ``jdk.tls.disabledAlgorithms`` the JVM must drop so every cell can be served."""
    drop: list[str] = []
    for cell in cells:
        if cell.policy is None:
            continue
        drop += [v for v in cell.policy.versions if v in LEGACY_VERSIONS]
        if cipher_plan(cell.policy).static_rsa:
            drop.append("TLS_RSA_*")
    order = ("TLSv1", "TLSv1.1", "TLS_RSA_*")
    return tuple(entry for entry in order if entry in drop)


# --------------------------------------------------------------------------- what cannot be served


def unsupported_reason(cell: Cell) -> str | None:
    """Why James cannot serve ``cell`` (a sentence), or ``None`` if it can."""
    if cell.server != "james":
        return f"the James backend serves james cells, not {cell.server}"
    auth = cell.auth
    extra = [m for m in auth.mechanisms if m not in MECHANISMS]
    if extra:
        return (
            f"James offers the SASL mechanisms {' and '.join(MECHANISMS)} only; {', '.join(extra)} "
            "would need an OIDC provider (XOAUTH2/OAUTHBEARER) or is not implemented (CRAM-MD5)"
        )
    if cell.protocol is Protocol.SMTP and auth.mechanisms and set(auth.mechanisms) != set(MECHANISMS):
        return f"James SMTP announces AUTH PLAIN and LOGIN together; it cannot offer {', '.join(auth.mechanisms)} alone"
    if cell.protocol is not Protocol.SMTP and not auth.mechanisms:
        return f"James {cell.protocol.upper()} always takes a password login; an auth policy without mechanisms"
    if cell.protocol is not Protocol.SMTP and not auth.required:
        return f"James {cell.protocol.upper()} has no anonymous access: a login is always required"
    if auth.client_cert and not cell.tls:
        return "mutual TLS needs a TLS mode"
    if cell.policy is not None and cell.policy.null_encryption:
        return (
            f"policy {cell.policy.name}: JDK 17 disables NULL encryption (NULL in jdk.tls.disabledAlgorithms) and the "
            "James backend keeps it disabled: re-enabling it would let every cell of the JVM negotiate NULL suites"
        )
    if cell.policy is not None and cell.policy.dh_bits is not None:
        return (
            f"policy {cell.policy.name}: JSSE's DHE group is JVM-wide (jdk.tls.ephemeralDHKeySize, "
            "jdk.tls.server.defaultDHEParameters), not per listener, and a client naming FFDHE groups gets one of "
            f"them (RFC 7919): a {cell.policy.dh_bits}-bit group would apply to every DHE cell of the JVM"
        )
    if cell.policy is not None:
        plan = cipher_plan(cell.policy)
        # A version left without suites would refuse handshakes the policy promises.
        if "TLSv1.3" in cell.policy.versions and not plan.tls13_suites:
            return (
                f"policy {cell.policy.name}: JSSE implements none of the TLS 1.3 suites "
                f"{cell.policy.ciphersuites} (it has no CCM suites)"
            )
        if any(v != "TLSv1.3" for v in cell.policy.versions) and not plan.tls12_suites:
            return (
                f"policy {cell.policy.name}: the JVM offers none of the ciphers {cell.policy.ciphers!r} "
                f"(not offered: {', '.join(plan.missing) or 'none known to OpenSSL'})"
            )
    return None


# --------------------------------------------------------------------------- key material (pure)


#: The JDK's own key protection for JKS private-key entries (sun.security.provider.KeyProtector): its
#: AlgorithmIdentifier, OID 1.3.6.1.4.1.42.2.17.1.1 with NULL parameters, DER-encoded.
_KEY_PROTECTOR_ALGORITHM = bytes.fromhex("300e060a2b060104012a0211010105 00".replace(" ", ""))
_JKS_MAGIC, _JKS_VERSION = 0xFEEDFEED, 2
_JKS_PRIVATE_KEY, _JKS_TRUSTED_CERT = 1, 2


def _der(tag: int, body: bytes) -> bytes:
    """One DER element: ``tag``, the definite length, ``body``."""
    n = len(body)
    if n < 0x80:
        return bytes([tag, n]) + body
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + body


def _java_utf(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack(">H", len(data)) + data


def _jks_password(password: str) -> bytes:
    """A password as the JDK's JKS code feeds it to SHA-1: each Java char as two bytes, high byte first."""
    return password.encode("utf-16-be")


def _jks(entries: Sequence[bytes], password: str) -> bytes:
    """A JKS file of the encoded ``entries``, sealed with the JDK's integrity digest: SHA-1 over the password,
    the fixed salt "Mighty Aphrodite" and the body."""
    body = struct.pack(">III", _JKS_MAGIC, _JKS_VERSION, len(entries)) + b"".join(entries)
    return body + hashlib.sha1(_jks_password(password) + b"Mighty Aphrodite" + body).digest()


def _jks_certificate(cert: x509.Certificate) -> bytes:
    der = cert.public_bytes(serialization.Encoding.DER)
    return _java_utf("X.509") + struct.pack(">I", len(der)) + der


def _protect_key(pkcs8: bytes, password: str, salt: bytes) -> bytes:
    """``pkcs8`` protected as ``KeyProtector.protect`` does: XOR with a SHA-1 chain seeded by the 20-byte
    ``salt``, then salt + masked key + SHA-1(password + key), wrapped as an EncryptedPrivateKeyInfo."""
    secret = _jks_password(password)
    stream = bytearray()
    digest = salt
    while len(stream) < len(pkcs8):
        digest = hashlib.sha1(secret + digest).digest()
        stream += digest
    masked = bytes(a ^ b for a, b in zip(pkcs8, stream, strict=False))
    check = hashlib.sha1(secret + pkcs8).digest()
    return _der(0x30, _KEY_PROTECTOR_ALGORITHM + _der(0x04, salt + masked + check))


def jks_keystore(key_pem: bytes, chain_pem: bytes, password: str, *, timestamp_ms: int = 0) -> bytes:
    """A JKS keystore holding the key and the chain exactly as presented (leaf first), alias ``mailtls``.

    JKS, not PKCS12: each of about a hundred servers opens its keystore at start, and a PKCS12 file costs
    the JVM a MAC key derivation (2048 SHA-256 rounds, more than the rest of the load) plus two PBES2
    decryptions; a JKS key costs a few SHA-1 blocks. The keys are throwaway test keys in a temp dir whose
    password sits next to them, so key stretching would protect nothing here.
    """
    key = load_own_key(key_pem)  # the session PKI's own key: no RSA consistency check (35 ms a key)
    chain = x509.load_pem_x509_certificates(chain_pem)
    if not chain:
        raise ValueError("the certificate chain is empty")
    pkcs8 = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    protected = _protect_key(pkcs8, password, secrets.token_bytes(20))
    entry = struct.pack(">I", _JKS_PRIVATE_KEY) + _java_utf("mailtls") + struct.pack(">Q", timestamp_ms)
    entry += struct.pack(">I", len(protected)) + protected + struct.pack(">I", len(chain))
    entry += b"".join(_jks_certificate(cert) for cert in chain)
    return _jks([entry], password)


def jks_truststore(ca_pem: bytes, password: str, *, timestamp_ms: int = 0) -> bytes:
    """A JKS truststore of every certificate in ``ca_pem`` (trusted-certificate entries).

    James 3.8 reads the client-auth truststore with the keystore's type, and a PKCS12 file only counts a
    certificate as trusted with an Oracle-specific attribute that ``cryptography`` cannot write.
    """
    try:
        certs = x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        certs = []
    if not certs:
        raise ValueError("no certificate in the CA file")
    return _jks(
        [
            struct.pack(">I", _JKS_TRUSTED_CERT)
            + _java_utf(f"ca{index}")
            + struct.pack(">Q", timestamp_ms)
            + _jks_certificate(cert)
            for index, cert in enumerate(certs)
        ],
        password,
    )


# --------------------------------------------------------------------------- rendering (pure)


@dataclass(frozen=True)
class RenderedConfig:
    """Everything the container needs.

    ``files``: path relative to the ``/mailtls`` mount -> content (``conf/...``, ``users/...``);
    ``environment``: for the entrypoint; ``maildirs``: cell id -> folder under ``mail/``;
    ``missing_ciphers``: cell id -> OpenSSL names its policy asks for that the JVM cannot offer.
    """

    files: dict[str, bytes]
    environment: dict[str, str]
    maildirs: dict[str, str]
    missing_ciphers: dict[str, tuple[str, ...]]


def render(
    cells: Sequence[Cell],
    *,
    ports: Sequence[int],
    keystores: Mapping[CertProfile, str],
    truststore: str | None,
    secret: str,
    username: str,
    password: str,
    java_opts: Sequence[str] = JAVA_OPTS,
    bind_address: str = "0.0.0.0",
) -> RenderedConfig:
    """Render James' configuration for ``cells``, one server entry per cell on its port.

    ``keystores`` maps each certificate profile to the container path of its JKS keystore,
    ``truststore`` is the container path of the JKS holding the client CA (needed for mutual TLS);
    both are protected by ``secret``. Raises ``ValueError`` for a cell James cannot serve.
    """
    check_render_input(
        cells,
        ports,
        unsupported_reason,
        certs=keystores,
        client_ca=truststore is not None,
        certs_name="keystore for certificate profile",
        client_ca_name="a truststore",
    )
    if not username or "/" in username or any(ch.isspace() for ch in username) or not password:
        raise ValueError("the test user name must be non-empty without '/' or whitespace, the password non-empty")
    # A bare user name logs in as it is: James then runs without virtual hosting (users without a domain).
    virtual_hosting = "@" in username

    entries: dict[Protocol, list[ET.Element[Any]]] = {Protocol.SMTP: [], Protocol.IMAP: [], Protocol.POP3: []}
    render_entry = {Protocol.SMTP: _smtp_entry, Protocol.IMAP: _imap_entry, Protocol.POP3: _pop3_entry}
    missing: dict[str, tuple[str, ...]] = {}
    for cell, port in zip(cells, ports, strict=True):

        def tls(entry: ET.Element, cell: Cell = cell) -> None:
            _tls_block(entry, cell, keystores, truststore, secret)

        if cell.policy is not None:
            missing[cell.id] = cipher_plan(cell.policy).missing
        entries[cell.protocol] += render_entry[cell.protocol](cell, f"{bind_address}:{port}", port, tls)

    conf = {
        "smtpserver.xml": _wrap("smtpservers", entries[Protocol.SMTP]),
        "imapserver.xml": _wrap("imapservers", entries[Protocol.IMAP]),
        "pop3server.xml": _wrap("pop3servers", entries[Protocol.POP3]),
        "mailetcontainer.xml": _with_texts(_MAILETCONTAINER, {"context/postmaster": f"postmaster@{DOMAIN}"}),
        "mailrepositorystore.xml": _MAILREPOSITORYSTORE,
        "domainlist.xml": _with_texts(_DOMAINLIST, {"defaultDomain": DOMAIN}),
        "usersrepository.xml": _with_texts(_USERSREPOSITORY, {"enableVirtualHosting": _bool(virtual_hosting)}),
        "dnsservice.xml": _DNSSERVICE,
        "jmap.properties": "enabled=false\n",
        "logback.xml": _LOGBACK,
    }
    files = {f"conf/{name}": text.encode() for name, text in conf.items()}
    files[f"users/{username}"] = password.encode()  # MailtlsJamesMain creates the user from it
    environment = {
        "MAILTLS_JAVA_OPTS": " ".join(java_opts),
        "MAILTLS_DOMAIN": DOMAIN,
    }
    reenable = security_reenable(cells)
    if reenable:
        environment["MAILTLS_REENABLE"] = " ".join(reenable)
    maildirs = {cell.id: str(port) for cell, port in zip(cells, ports, strict=True)}
    return RenderedConfig(files=files, environment=environment, maildirs=maildirs, missing_ciphers=missing)


# Every configuration file is built as an element tree and serialised by ElementTree, never by string
# formatting: a value (a policy name, a path, a secret) can then only ever be text or an attribute value,
# escaped as XML requires, and cannot close a comment or an element and add configuration of its own.


#: Writes a server entry's ``<tls>`` block into the entry.
_TlsWriter = Callable[[ET.Element], None]


def _el(parent: ET.Element, tag: str, text: object = None, **attrs: str) -> ET.Element:
    """A child element ``tag`` of ``parent`` with ``text`` (escaped on output) and attributes."""
    child = ET.SubElement(parent, tag, attrs)
    if text is not None:
        child.text = str(text)
    return child


def _bool(value: bool) -> str:
    return str(value).lower()


def _comment_text(text: str) -> str:
    """``text`` made safe inside ``<!-- -->``: ElementTree writes comments verbatim, and XML forbids ``--``."""
    while "--" in text:
        text = text.replace("--", "- -")
    return f" {text} "


def _serialise(root: ET.Element, comment: str | None = None) -> str:
    ET.indent(root, space="  ")
    head = '<?xml version="1.0"?>\n'
    if comment is not None:
        head += ET.tostring(ET.Comment(_comment_text(comment)), encoding="unicode") + "\n"
    return head + ET.tostring(root, encoding="unicode") + "\n"


def _wrap(root: str, entries: Sequence[ET.Element[Any]]) -> str:
    top = ET.Element(root)
    for entry in entries:
        top.append(entry)
    return _serialise(top, "Rendered by pytest-mailtls: one entry per cell.")


def _tls_block(
    parent: ET.Element, cell: Cell, keystores: Mapping[CertProfile, str], truststore: str | None, secret: str
) -> None:
    if cell.policy is None or cell.cert is None:
        _el(parent, "tls", socketTLS="false", startTLS="false")
        return
    implicit = cell.mode is Mode.IMPLICIT
    plan = cipher_plan(cell.policy)
    tls = _el(parent, "tls", socketTLS=_bool(implicit), startTLS=_bool(not implicit))
    _el(tls, "keystore", f"file://{keystores[cell.cert]}")
    # James opens the truststore with the keystore's type: both are JKS.
    _el(tls, "keystoreType", "JKS")
    _el(tls, "secret", secret)
    protocols = _el(tls, "supportedProtocols")
    for version in cell.policy.versions:
        _el(protocols, "protocol", version)
    suites = _el(tls, "supportedCipherSuites")
    for suite in plan.suites:
        _el(suites, "cipherSuite", suite)
    if cell.auth.client_cert:
        assert truststore is not None
        client_auth = _el(tls, "clientAuth")
        _el(client_auth, "truststore", f"file://{truststore}")
        _el(client_auth, "truststoreSecret", secret)


def _common(kind: str, cell: Cell, bind: str, port: int, tls: _TlsWriter) -> tuple[ET.Element[Any], ET.Element]:
    """(the comment naming the cell, the server entry with the settings every protocol shares)."""
    comment = ET.Comment(_comment_text(cell.id))
    entry = ET.Element(kind, enabled="true")
    # Netty names each server's threads after its jmxName: that is how log lines find their cell.
    _el(entry, "jmxName", f"{kind}-{port}")
    _el(entry, "bind", bind)
    _el(entry, "connectionBacklog", 64)
    # No 2 s drain per server on shutdown (about a hundred servers would take minutes to stop).
    _el(entry, "gracefulShutdown", "false")
    _el(entry, "helloName", HOSTNAME, autodetect="false")
    tls(entry)
    _el(entry, "connectionLimit", 0)
    _el(entry, "connectionLimitPerIP", 0)
    # Threads are created per server: keep each server small, there are about a hundred.
    _el(entry, "bossWorkerCount", 1)
    _el(entry, "ioWorkerCount", 1)
    _el(entry, "maxExecutorCount", 4)
    _el(entry, "connectiontimeout", 120)
    return comment, entry


def _requires_tls_login(cell: Cell) -> bool:
    """Logins refused before TLS: STARTTLS required, or an auth policy that allows AUTH only inside TLS."""
    return cell.tls and (cell.mode is Mode.STARTTLS_REQUIRED or cell.auth.tls_only)


def _handler(chain: ET.Element, name: str) -> ET.Element:
    return _el(chain, "handler", **{"class": name})


def _smtp_entry(cell: Cell, bind: str, port: int, tls: _TlsWriter) -> list[ET.Element[Any]]:
    auth = cell.auth
    comment, entry = _common("smtpserver", cell, bind, port, tls)
    auth_el = _el(entry, "auth")
    _el(auth_el, "announce", "always" if auth.mechanisms else "never")
    _el(auth_el, "requireSSL", _bool(_requires_tls_login(cell)))
    _el(auth_el, "plainAuthEnabled", _bool(bool(auth.mechanisms)))
    if not auth.required:
        # Anyone may send to anyone on this port; the pipeline still drops everything that is not local.
        _el(entry, "authorizedAddresses", "0.0.0.0/0")
    _el(entry, "verifyIdentity", "false")
    _el(entry, "maxmessagesize", 0)
    _el(entry, "addressBracketsEnforcement", "true")
    _el(entry, "smtpGreeting", f"{HOSTNAME} ESMTP pytest-mailtls (Apache James)")
    chain = _el(entry, "handlerchain", enableJmx="false")  # see _pop3_entry
    # James' <requireSSL> only changes what EHLO advertises: its AUTH command still logs the user in (235) in
    # clear, even on a STARTTLS-required port (issue 9). These handlers answer AUTH before James does; an MX
    # port refuses AUTH with Postfix's 503 everywhere.
    if not auth.mechanisms:
        _handler(chain, f"{_EXT}.NoAuthHandler")
    elif _requires_tls_login(cell):
        _handler(chain, f"{_EXT}.RequireTlsAuthHandler")
    if cell.mode is Mode.STARTTLS_REQUIRED:
        _handler(chain, f"{_EXT}.RequireTlsHook")
    if auth.required:
        _handler(chain, f"{_EXT}.RequireAuthHook")
    _el(_handler(chain, f"{_EXT}.MaildirCaptureHook"), "directory", MAIL_ROOT)
    _handler(chain, "org.apache.james.smtpserver.CoreCmdHandlerLoader")
    return [comment, entry]


def _imap_entry(cell: Cell, bind: str, port: int, tls: _TlsWriter) -> list[ET.Element[Any]]:
    comment, entry = _common("imapserver", cell, bind, port, tls)
    _el(entry, "enableIdle", "true")
    _el(entry, "idleTimeInterval", 120)
    _el(entry, "idleTimeIntervalUnit", "SECONDS")
    auth_el = _el(entry, "auth")
    # requireSSL: LOGIN and AUTHENTICATE refused (LOGINDISABLED announced) until STARTTLS.
    _el(auth_el, "requireSSL", _bool(_requires_tls_login(cell)))
    _el(auth_el, "plainAuthEnabled", "true")
    return [comment, entry]


def _pop3_entry(cell: Cell, bind: str, port: int, tls: _TlsWriter) -> list[ET.Element[Any]]:
    comment, entry = _common("pop3server", cell, bind, port, tls)
    # No JMX statistics handlers (James adds them to every chain unless told): they only count command
    # results for MBeans nobody reads here, and cost each of a hundred servers their loading and registration.
    chain = _el(entry, "handlerchain", enableJmx="false")
    if _requires_tls_login(cell):
        _handler(chain, f"{_EXT}.RequireTlsLoginHandler")
    _handler(chain, "org.apache.james.pop3server.core.CoreCmdHandlerLoader")
    return [comment, entry]


def _with_texts(template: str, texts: Mapping[str, str]) -> str:
    """``template`` (a fixed file) with the text of each element at path ``key`` set to ``texts[key]``."""
    root = ET.fromstring(template, parser=ET.XMLParser(target=ET.TreeBuilder(insert_comments=True)))
    for path, text in texts.items():
        node = root
        for tag in path.split("/"):  # made when missing, so a trimmed template still gets the value
            child = node.find(tag)
            node = child if child is not None else ET.SubElement(node, tag)
        node.text = text
    head, _, _ = template.partition(f"<{root.tag}")
    return head + ET.tostring(root, encoding="unicode") + "\n"


_MAILETCONTAINER = """\
<?xml version="1.0"?>
<!-- Rendered by pytest-mailtls. Every message was already captured by the SMTP hook; here mail for local
     users is delivered (for IMAP/POP3) and everything else is dropped: nothing is ever relayed. -->
<mailetcontainer enableJmx="false">
  <context>
    <postmaster/>
  </context>
  <spooler>
    <threads>2</threads>
    <errorRepository>memory://var/mail/error/</errorRepository>
  </spooler>
  <processors>
    <processor state="root" enableJmx="false">
      <mailet match="All" class="ToProcessor">
        <processor>transport</processor>
      </mailet>
    </processor>
    <!-- James refuses to start without a transport processor that removes Bcc. -->
    <processor state="transport" enableJmx="false">
      <mailet match="All" class="RemoveMimeHeader">
        <name>bcc</name>
        <onMailetException>ignore</onMailetException>
      </mailet>
      <mailet match="RecipientIsLocal" class="LocalDelivery"/>
      <mailet match="All" class="Null"/>
    </processor>
    <processor state="error" enableJmx="false">
      <mailet match="All" class="ToRepository">
        <repositoryPath>memory://var/mail/error/</repositoryPath>
      </mailet>
    </processor>
  </processors>
</mailetcontainer>
"""

_MAILREPOSITORYSTORE = """\
<?xml version="1.0"?>
<mailrepositorystore>
  <defaultProtocol>memory</defaultProtocol>
  <mailrepositories>
    <mailrepository class="org.apache.james.mailrepository.memory.MemoryMailRepository">
      <protocols>
        <protocol>memory</protocol>
      </protocols>
    </mailrepository>
  </mailrepositories>
</mailrepositorystore>
"""

_DOMAINLIST = """\
<?xml version="1.0"?>
<domainlist>
  <autodetect>false</autodetect>
  <autodetectIP>false</autodetectIP>
  <defaultDomain/>
</domainlist>
"""

_USERSREPOSITORY = """\
<?xml version="1.0"?>
<usersrepository name="LocalUsers">
  <enableVirtualHosting/>
</usersrepository>
"""

# Test servers ask no DNS server: the only one named is a refusing resolver on the loopback.
_DNSSERVICE = """\
<?xml version="1.0"?>
<dnsservice>
  <servers>
    <server>127.0.0.1</server>
  </servers>
  <autodiscover>false</autodiscover>
  <authoritative>false</authoritative>
  <maxcachesize>50000</maxcachesize>
  <singleIPperMX>true</singleIPperMX>
</dnsservice>
"""

_LOGBACK = """\
<?xml version="1.0" encoding="UTF-8"?>
<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%d{HH:mm:ss.SSS} %-5level [%thread] %logger{36} %X - %msg%n%rEx{6}</pattern>
    </encoder>
  </appender>
  <root level="WARN">
    <appender-ref ref="CONSOLE"/>
  </root>
  <logger name="org.apache.james" level="INFO"/>
  <logger name="org.apache.james.protocols.netty.BasicChannelInboundHandler" level="DEBUG"/>
  <!-- Each server's settings, said again at start by every one of about a hundred servers: 800 lines that
       made each read of the log cost the engine about 7 ms of CPU. Problems are warnings and errors. -->
  <logger name="org.apache.james.protocols.lib.netty.AbstractConfigurableAsyncServer" level="WARN"/>
  <logger name="org.apache.james.protocols.lib.SslConfig" level="WARN"/>
  <logger name="org.apache.james.smtpserver.netty.SMTPServer" level="WARN"/>
</configuration>
"""


# --------------------------------------------------------------------------- CDS training (pure)

#: Ports of the image build's training run. The build runs with host networking, so they are odd ones.
TRAINING_PORTS = (47391, 47392, 47393, 47394, 47395)
TRAINING_SECRET = "training"
TRAINING_USER = "trainer@mailtls.test"


def training_cells() -> list[Cell]:
    """A few cells that make James load what a real start loads: every protocol, both TLS modes, the
    extension hooks, client authentication and the java.security override."""
    intermediate = TLSPolicy("intermediate", ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    default = AuthPolicy("default")
    return [
        Cell("james", SERVICES["submission"], Mode.STARTTLS_REQUIRED, intermediate, CertProfile.VALID, default),
        Cell("james", SERVICES["imaps"], Mode.IMPLICIT, TLSPolicy("modern", "TLSv1.3"), CertProfile.VALID, default),
        Cell("james", SERVICES["pop3"], Mode.STARTTLS, TLSPolicy("tls10-only", "TLSv1", "TLSv1"), CertProfile.VALID),
        Cell(
            "james",
            SERVICES["smtps"],
            Mode.IMPLICIT,
            TLSPolicy("tls12-only", "TLSv1.2", "TLSv1.2"),
            CertProfile.VALID,
            AuthPolicy("mtls", client_cert=True),
        ),
        Cell("james", SERVICES["smtp"], Mode.PLAIN, None, None, AuthPolicy("open", (), required=False)),
    ]


def training_files() -> dict[str, bytes]:
    """The files under ``containers/james/training/`` (see ``train.sh``): the rendered configuration
    and the entrypoint's environment, as shell-quoted ``KEY=value`` lines."""
    config = render(
        training_cells(),
        ports=TRAINING_PORTS,
        keystores={CertProfile.VALID: f"{TLS_ROOT}/valid.jks"},
        truststore=f"{TLS_ROOT}/client-ca.jks",
        secret=TRAINING_SECRET,
        username=TRAINING_USER,
        password=TRAINING_SECRET,
        bind_address="127.0.0.1",  # the build shares the host's network: listen on its loopback only
    )
    files = dict(config.files)
    files["environment"] = "".join(f"{k}={shlex.quote(v)}\n" for k, v in sorted(config.environment.items())).encode()
    return files


def write_training_files(folder: str | Path) -> None:
    """Rewrite ``folder`` (``containers/james/training``) from :func:`training_files`."""
    root = Path(folder)
    if root.exists():
        shutil.rmtree(root)
    for rel, data in training_files().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


# --------------------------------------------------------------------------- logs


# Each server's Netty threads are named after its jmxName (``smtpserver-10003-io-0``), which holds the port.
_THREAD = re.compile(r"^\S+ +[A-Z]+ +\[(?:smtp|imap|pop3)server-(\d+)-")
# Stack traces (root cause first): frames, "Wrapped by:" lines and bare exception lines.
_CONTINUATION = re.compile(r"^(\s|Caused by:|Wrapped by:|[a-z][\w.$]*(Exception|Error)\b)")


def cell_log_lines(log: str, port: int) -> list[str]:
    """The lines of ``log`` written by the threads of the server on container port ``port``, with the stack
    traces that follow them."""
    out: list[str] = []
    mine = False
    for line in log.splitlines():
        m = _THREAD.match(line)
        if m:
            mine = m.group(1) == str(port)
        elif not _CONTINUATION.match(line):
            mine = False
        if mine:
            out.append(line)
    return out


# --------------------------------------------------------------------------- the image's build context

_MIRROR_OF_CENTRAL = re.compile(r"^(\*|central)$")


def host_ca_bundle() -> Path | None:
    """The CA bundle this host's OpenSSL trusts (``SSL_CERT_FILE`` or OpenSSL's default), if there is one."""
    candidates = [
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def host_maven_mirror(settings_files: Sequence[Path] | None = None) -> str | None:
    """The URL of the mirror of Maven Central named in the host's Maven settings (user's first, then global).

    Only an enabled ``<mirror>`` whose ``mirrorOf`` covers ``central`` (``*`` or ``central`` in its list)
    counts; Maven's own ``external:http:*`` blocker does not.
    """
    if settings_files is None:
        maven_home = os.environ.get("MAVEN_HOME") or os.environ.get("M2_HOME") or "/usr/share/maven"
        settings_files = [Path.home() / ".m2" / "settings.xml", Path(maven_home) / "conf" / "settings.xml"]
    for path in settings_files:
        try:
            root = ET.parse(path).getroot()
        except (OSError, ET.ParseError):
            continue
        for mirror in root.iter():
            if not mirror.tag.endswith("mirror") or mirror.tag.endswith("mirrors"):
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in mirror}
            covers = any(_MIRROR_OF_CENTRAL.match(part.strip()) for part in fields.get("mirrorOf", "").split(","))
            if covers and fields.get("url") and fields.get("blocked", "false").lower() != "true":
                return fields["url"]
    return None


def prepare_build_context(recipe: Path, target: Path) -> Path:
    """Copy the image recipe ``recipe`` (``containers/james``) to ``target/james`` and add what Maven needs to
    reach Maven Central as this host does: its CA bundle (``host-ca.pem``) and its Maven mirror
    (``maven-mirror.url``). Neither is ever committed; both enter the image tag's content hash. Returns the
    folder to pass to ``runtime.ensure_image(..., containers_dir=)``."""
    folder = target / "james"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(
        recipe, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "host-ca.pem", "maven-mirror.url")
    )
    bundle = host_ca_bundle()
    if bundle is not None:
        shutil.copyfile(bundle, folder / "host-ca.pem")
    mirror = host_maven_mirror()
    if mirror is not None:
        (folder / "maven-mirror.url").write_text(mirror + "\n")
    return target


# --------------------------------------------------------------------------- the backend


class JamesServer(ContainerServer[int]):
    """One James JVM (one container) serving many cells.

    Its log is James' own log plus the entrypoint's ``MAILTLS:`` lines; a cell's lines are those of the
    threads of its server (named after its container port), with the stack traces that follow them.
    """

    title = "James"

    def __init__(
        self, container: Container, endpoints: list[Endpoint], ports: Mapping[str, int], workdir: Path
    ) -> None:
        super().__init__(container, endpoints, workdir, ports)

    def log_lines(self, log: str, key: int) -> list[str]:
        """The lines of the threads of the server on container port ``key``."""
        return cell_log_lines(log, key)


@functools.cache
def _log_rules() -> tuple[Rule, ...]:
    """Apache James's log vocabulary for the diagnosis: what its lines about a failed connection mean."""
    from ..diagnose import CERT_CLASSES, CHAIN_CLASSES, DATE_CLASSES, reply_code, rule

    return (
        rule(
            r"Client requested protocol \S+ is not enabled|No appropriate protocol|\bprotocol_version\b",
            "protocol-version-mismatch",
        ),
        rule(r"no cipher suites in common|No negotiable cipher suite|\binsufficient_security\b", "no-shared-cipher"),
        rule(r"Empty client certificate chain|\bcertificate_required\b", "client-certificate-required", weight=5),
        rule(r"Received fatal alert: certificate_expired", *DATE_CLASSES),
        rule(r"Received fatal alert: unknown_ca", *CHAIN_CLASSES),
        rule(r"Received fatal alert: (?:certificate_unknown|bad_certificate)", *CERT_CLASSES),
        rule(r"Unsupported or unrecognized SSL message|plaintext connection\?", "wrong-tls-mode"),
        # The reply code as a code: "sessionId=0c535408" and ":53574" are not a 535.
        rule(
            r"AUTH(?:ENTICATE)? failed|Authentication failed|Bad credentials|" + reply_code("535"),
            "auth-failed",
            weight=5,
        ),
        rule(
            r"Must issue a STARTTLS command first|\bLOGINDISABLED\b|\bPRIVACYREQUIRED\b", "starttls-required", weight=5
        ),
    )


class JamesBackend(ContainerBackend):
    """Real Apache James (memory app, OpenJDK 17) in Docker, one JVM for all James cells."""

    name = "james"
    needs_docker = True
    title = "Apache James"
    services = ("smtp", "submission", "smtps", "imap", "imaps", "pop3", "pop3s")
    # One read-write folder: configuration, keystores (made in plan(), no PEM copies), mail and James's status.
    etc_path, mail_path, mail_uid, pem_keys, one_root = ROOT, MAIL_ROOT, 0, False, True
    # The JVM is the slowest server of a grid to start (its start doubles when Postfix, Dovecot and Courier
    # start beside it): twice the engine's default CPU weight while they compete.
    cpu_shares = 2048
    remedies = {
        "versions": "<supportedProtocols><protocol>TLSv1.2</protocol><protocol>TLSv1.3</protocol>",
        "chain": "<certificates> (or the keystore entry) with the full chain",
        "tls": '<tls startTLS="true"> with a keystore',
    }

    @classmethod
    def log_rules(cls) -> tuple[Rule, ...]:
        return _log_rules()

    def cell_log_lines(self, log: str, key: Any) -> list[str]:
        return cell_log_lines(log, key)

    def image(self, *, progress: Progress = no_progress) -> str:
        """Build from a copy of the recipe that carries the host's CA bundle and Maven mirror, so Maven in
        the build reaches Maven Central as this host does (e.g. behind a TLS-inspecting proxy)."""
        from .. import runtime

        # Registered like every temp dir of a run: an interrupted start may still be copying into it when the
        # process ends, and the reaper (next run, or `mailtls reap`) then removes what the copy left.
        tmp = runtime.register_dir(tempfile.mkdtemp(prefix="mailtls-james-context-"), remove_at_exit=True)
        try:
            context = prepare_build_context(runtime.containers_root() / "james", tmp)
            return runtime.ensure_image("james", progress=progress, containers_dir=context)
        finally:
            runtime.release_dir(tmp, remove=True)

    def unsupported(self, cell: Cell) -> str | None:
        """Why James cannot serve ``cell``, or ``None``."""
        return unsupported_reason(cell)

    def missing_ciphers(self, cell: Cell) -> tuple[str, ...]:
        """OpenSSL names of ciphers ``cell``'s policy asks for that the JVM cannot offer."""
        return cipher_plan(cell.policy).missing if cell.policy is not None else ()

    def plan(self, given: PlanInput) -> Plan:
        """Keystores (JKS, 0600) made here from the session PKI, the rendered configuration, and a readiness
        that waits for the users first (``/mailtls/status``), then for a verified handshake on each port."""
        cells, options, root = given.cells, given.options, given.files_dir
        (root / "tls").mkdir(parents=True, exist_ok=True)
        secret = secrets.token_hex(16)
        keystores = _write_keystores(cells, options.pki, root / "tls", secret)
        truststore = None
        if any(c.auth.client_cert for c in cells):
            write_private(
                root / "tls" / "client-ca.jks", jks_truststore(options.pki.client_ca_file.read_bytes(), secret)
            )
            truststore = f"{TLS_ROOT}/client-ca.jks"
        config = render(
            cells,
            ports=given.ports,
            keystores=keystores,
            truststore=truststore,
            secret=secret,
            username=options.username,
            password=options.password,
        )
        reported: set[str] = set()
        for cell in cells:
            gaps = config.missing_ciphers.get(cell.id)
            if gaps and cell.policy is not None and cell.policy.name not in reported:
                reported.add(cell.policy.name)
                shown = ", ".join(gaps[:6]) + (", ..." if len(gaps) > 6 else "")
                options.progress(
                    f"james: policy {cell.policy.name}: the JVM cannot offer {len(gaps)} of its ciphers ({shown}); "
                    "each endpoint lists them in extra['jvm_missing_ciphers']"
                )
        # Endpoints declare the SASL mechanisms James really advertises, so the manifest, verify and the
        # oracle see the truth; the cell ids (and the matrix's auth policy names) stay as they are.
        notes = {c.id: offered_auth(c)[1] for c in cells}

        def ready(container: Container, endpoints: list[Endpoint], started: float) -> None:
            from ..readiness import wait_ready

            deadline = started + options.ready_timeout
            alive = exited(container, "James")
            # Not earlier: checking the cells while James still starts (its servers listen from their bind on)
            # measured slower on a loaded machine (docs/speed.md); the handshakes then compete with the start
            # for the cores and for the JIT compiler.
            status = root / "status"
            _wait_provisioned(status, container.logs, alive, deadline, refresh=lambda: container.pull(status))
            wait_ready(endpoints, timeout=max(1.0, deadline - time.monotonic()), logs=container.logs, alive=alive)

        def extra(cell: Cell, port: int) -> dict[str, object]:
            missing = config.missing_ciphers.get(cell.id)
            out: dict[str, object] = {"jvm_missing_ciphers": list(missing)} if missing else {}
            if notes.get(cell.id):
                out["auth_note"] = notes[cell.id]
            return out

        return Plan(
            files=config.files,
            maildirs=list(config.maildirs.values()),
            mailbox=lambda cell: config.maildirs[cell.id],
            cell_keys={c.id: p for c, p in zip(cells, given.ports, strict=True)},
            extra=extra,
            environment=config.environment,
            ready=ready,
            served=[offered_auth(c)[0] for c in cells],
        )

    def serve(self, container: Container, endpoints: list[Endpoint], plan: Plan, given: PlanInput) -> JamesServer:
        return JamesServer(container, endpoints, plan.cell_keys, given.files_dir)


#: SASL mechanisms James 3.8 advertises per protocol (SMTP: all it is given). IMAP has AUTHENTICATE PLAIN and
#: the LOGIN command but no AUTHENTICATE LOGIN; POP3 has USER/PASS and no SASL AUTH at all.
_ADVERTISED = {"imap": ("PLAIN",), "pop3": ()}


def offered_auth(cell: Cell) -> tuple[Cell, str | None]:
    """``cell`` with the mechanisms James really advertises for its protocol, and a note when they differ."""
    allowed = _ADVERTISED.get(str(cell.protocol))
    if allowed is None:
        return cell, None
    mechanisms = tuple(m for m in cell.auth.mechanisms if m in allowed)
    if mechanisms == cell.auth.mechanisms:
        return cell, None
    dropped = ", ".join(m for m in cell.auth.mechanisms if m not in mechanisms)
    login = "the LOGIN command" if cell.protocol == "imap" else "USER/PASS"
    note = f"James {cell.protocol.upper()} does not advertise SASL {dropped}; clients log in with {login}"
    return replace(cell, auth=replace(cell.auth, mechanisms=mechanisms)), note


def _write_keystores(cells: Sequence[Cell], pki: SessionPKI, folder: Path, secret: str) -> dict[CertProfile, str]:
    """One JKS keystore per certificate profile in use (``<profile>.keystore.jks``); returns their container paths."""
    out: dict[CertProfile, str] = {}
    for profile in dict.fromkeys(c.cert for c in cells if c.cert is not None):
        files = pki.server_files(profile)
        data = jks_keystore(files.key_file.read_bytes(), files.cert_file.read_bytes(), secret)
        write_private(folder / f"{profile}.keystore.jks", data)  # a private key: the host user only (0600)
        out[profile] = f"{TLS_ROOT}/{profile}.keystore.jks"
    return out


#: How often the start looks for the status file, and asks the engine whether the container still runs.
_STATUS_POLL, _ALIVE_POLL = 0.02, 0.25


def _wait_provisioned(
    status: Path,
    logs: Callable[[], str],
    alive: Callable[[], str | None],
    deadline: float,
    *,
    refresh: Callable[[], object] = lambda: None,
) -> None:
    """Wait until ``status`` (``/mailtls/status``, which MailtlsJamesMain writes once James is up) says the
    users exist; raise ``ServerStartError`` with the log once it reports a failure, the container is gone, or
    ``deadline`` (monotonic) passed. A file, not the log: reading a hundred servers' log costs the engine and
    this process about 10 ms of CPU each time, a ``stat`` nothing. A cancelled start (the thread's
    ``readiness.cancel_scope``) ends the wait within one poll with ``StartCancelled``. ``refresh`` runs before
    each read (copy mode: it fetches the file from the container)."""
    from ..readiness import current_cancel
    from ..runtime import StartCancelled

    cancel = current_cancel()
    asked = 0.0
    while True:
        if cancel is not None and cancel.is_set():
            raise StartCancelled("start of James cancelled while it was starting")
        refresh()
        try:
            text = status.read_text(encoding="utf-8", errors="replace").strip()
        except FileNotFoundError:
            text = ""
        if text.startswith("provisioned"):
            return
        if text:
            raise ServerStartError(f"James did not start: MAILTLS: {text}", logs())
        now = time.monotonic()
        if now - asked >= _ALIVE_POLL:
            asked = now
            gone = alive()
            if gone:
                raise ServerStartError(f"James did not start: {gone}", logs())
        if now >= deadline:
            raise ServerStartError(
                "James did not finish starting (no 'MAILTLS: provisioned' line) before the deadline; "
                "raise it with --mailtls-ready-timeout on a slow machine",
                logs(),
            )
        time.sleep(_STATUS_POLL)
