"""Java mail clients: Angus/Jakarta Mail and javax.mail on JSSE (JDK 17).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from . import ClientFamily

if TYPE_CHECKING:
    from ...diagnose import Rule

# JDK 17's default client suites for TLS <= 1.2 (SunJSSE, after jdk.tls.disabledAlgorithms), in JSSE names.
JDK17_DEFAULT_SUITES: tuple[str, ...] = (
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_DHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_DHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
)


def _java_security() -> Path | None:
    """The ``java.security`` of the JVM the Java clients run: ``$JAVA_HOME``'s, else that of ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if not home:
        found = shutil.which("java")
        if found is None:
            return None
        home = str(Path(os.path.realpath(found)).parents[1])
    path = Path(home) / "conf" / "security" / "java.security"
    return path if path.is_file() else None


def _disabled_suite_patterns(text: str) -> list[str]:
    """The suite-name entries (``TLS_RSA_*``, ``TLS_..._SHA``) of ``jdk.tls.disabledAlgorithms`` in ``text``."""
    joined = re.sub(r"\\\n\s*", "", text)  # properties continue lines with a trailing backslash
    match = re.search(r"^jdk\.tls\.disabledAlgorithms\s*=(.*)$", joined, re.MULTILINE)
    if match is None:
        return []
    entries = [e.strip() for e in match.group(1).split(",")]
    return [e for e in entries if e.startswith(("TLS_", "SSL_"))]


def runtime_default_suites(suites: tuple[str, ...] = JDK17_DEFAULT_SUITES, text: str | None = None) -> tuple[str, ...]:
    """``suites`` minus those the local JVM's ``jdk.tls.disabledAlgorithms`` names (JDK 17 updates since 2025
    add ``TLS_RSA_*``: no static-RSA suite is offered, whatever the client asks). ``text``: a ``java.security``
    to read instead of the local JVM's."""
    if text is None:
        path = _java_security()
        if path is None:
            return suites
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return suites
    patterns = _disabled_suite_patterns(text)
    return tuple(s for s in suites if not any(fnmatch.fnmatchcase(s, p) for p in patterns))


@functools.cache
def _rules() -> tuple[Rule, ...]:
    from ...diagnose import CERT_CLASSES, CHAIN_CLASSES, HANDSHAKE_CLASSES, HANGUP_CLASSES, rule

    return (
        rule(r"No appropriate protocol", "protocol-version-mismatch", weight=5),
        rule(
            r"Received fatal alert: protocol_version|is not accepted by client preferences", "protocol-version-mismatch"
        ),
        rule(
            r"Client requested protocol \S+ is not enabled|The server selected protocol version",
            "protocol-version-mismatch",
        ),
        rule(r"Received fatal alert: illegal_parameter", "protocol-version-mismatch", "no-shared-cipher"),
        rule(r"Received fatal alert: handshake_failure", *HANDSHAKE_CLASSES),
        rule(
            r"No negotiable cipher suite|no cipher suites in common|Received fatal alert: insufficient_security",
            "no-shared-cipher",
        ),
        rule(r"Unsupported or unrecognized SSL message|plaintext connection\?", "wrong-tls-mode", weight=5),
        rule(r"\bNotAfter:|CertificateExpiredException", "certificate-expired", weight=5),
        rule(r"\bNotBefore:|CertificateNotYetValidException", "certificate-not-yet-valid", weight=5),
        rule(
            r"No subject alternative (?:DNS )?names? matching|No name matching|Server is not trusted:",
            "hostname-mismatch",
            weight=5,
        ),
        rule(r"Can't verify identity of server|HostnameVerifier", "hostname-mismatch", weight=5),
        # The server's DH group is under the jdk.tls.disabledAlgorithms floor ("DH keySize < 1024" in JDK 17).
        rule(
            r"DH ServerKeyExchange does not comply|DH key(?:Size| size)? .*(?:too small|does not comply)",
            "weak-dh",
            weight=6,
        ),
        rule(
            r"Algorithm constraints check failed|keysize limits|key size too small|disabled algorithm",
            "weak-key-or-signature",
            weight=5,
        ),
        rule(
            r"Certificate has been revoked|CertificateRevokedException|revocation status",
            "certificate-revoked",
            weight=5,
        ),
        rule(r"Extended key usage does not permit|KeyUsage does not allow", "wrong-key-usage", weight=5),
        rule(r"name constraints? check failed|NameConstraints", "name-constraint-violation", weight=5),
        rule(r"PKIX path building failed|unable to find valid certification path", *CHAIN_CLASSES),
        rule(r"PKIX path validation failed|signature check failed", *CERT_CLASSES),
        rule(
            r"Received fatal alert: certificate_required|Empty client certificate chain",
            "client-certificate-required",
            weight=5,
        ),
        rule(
            r"Received fatal alert: (?:bad_certificate|unknown_ca|certificate_unknown)",
            "client-certificate-required",
            weight=1,
        ),
        rule(
            r"Remote host terminated the handshake|Connection reset by peer|SSLHandshakeException: .*\bEOF\b",
            *HANGUP_CLASSES,
            hint=True,
        ),
        rule(r"AuthenticationFailedException", "auth-failed", weight=5),
        rule(r"\[AUTHENTICATIONFAILED\]|-ERR \[AUTH\]", "auth-failed"),
        rule(
            r"STARTTLS is required but|STARTTLS required but not supported|STLS required but not supported",
            "starttls-not-offered",
            weight=5,
        ),
        rule(
            r"Must issue a STARTTLS command first|PRIVACYREQUIRED|Plaintext authentication disallowed",
            "starttls-required",
            weight=5,
        ),
        rule(r"\b530[ -]5\.7\.0\b|Authentication required|Relay access denied", "auth-failed", "starttls-required"),
    )


FAMILY = ClientFamily(
    name="java",
    title="Java (Angus Mail, javax.mail on JSSE)",
    rules=_rules,
    openssl_reasons=False,
    knobs={
        "versions": 'set mail.{proto}.ssl.protocols="{want}"',
        "ciphers": 'set mail.{proto}.ssl.ciphersuites="{jsse}"',
        "trust": "give the client a truststore holding the CA (javax.net.ssl.trustStore, or an SSLSocketFactory in "
        "mail.{proto}.ssl.socketFactory); never mail.{proto}.ssl.trust=*",
        "hostname": "connect with the name the certificate carries; keep mail.{proto}.ssl.checkserveridentity=true",
        "client-cert": "give the client a keystore with its certificate (javax.net.ssl.keyStore, or a KeyManager in "
        "the SSLSocketFactory set as mail.{proto}.ssl.socketFactory)",
        "starttls": "set mail.{proto}.starttls.enable=true and mail.{proto}.starttls.required=true",
        "implicit-tls": "set mail.{proto}.ssl.enable=true",
        "plaintext-first": "set mail.{proto}.ssl.enable=false and use STARTTLS",
        "verify-on": "remove mail.<proto>.ssl.trust=* and use a truststore with the CA",
        "hostname-on": "set mail.<proto>.ssl.checkserveridentity=true",
        "weak-on": '(java.security: jdk.certpath.disabledAlgorithms += "RSA keySize < 2048, SHA1")',
        "disabled-by": "JDK 17 jdk.tls.disabledAlgorithms",
        "only-tls1": "javax.mail 1.4.x enables only TLSv1 when mail.{proto}.ssl.protocols is unset: set it, or upgrade "
        "to Jakarta/Angus Mail 2",
        "offered-none": "javax.mail 1.4.x enables only TLSv1 when mail.{proto}.ssl.protocols is unset, and JDK 17 "
        "disables TLSv1: set the property, or upgrade to Jakarta/Angus Mail 2",
        "runtime-disabled": "javax.mail 1.4.5 enabled only TLSv1 when ssl.protocols was unset: upgrade to "
        "Jakarta/Angus Mail 2",
        "smtp-auth": "mail.smtp.auth=true",
    },
    default_suites=runtime_default_suites(),
)
