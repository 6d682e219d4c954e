""".NET SslStream / SChannel (System.Net.Security resources) and MailKit; OpenSSL's reasons on Linux.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import ClientFamily

if TYPE_CHECKING:
    from ...diagnose import Rule

_VERSION = {"TLSv1": "Tls", "TLSv1.1": "Tls11", "TLSv1.2": "Tls12", "TLSv1.3": "Tls13"}


def _version_words(versions: Sequence[str]) -> Mapping[str, str]:
    return {"dotnet": " | ".join(f"SslProtocols.{_VERSION[v]}" for v in versions)}


@functools.cache
def _rules() -> tuple[Rule, ...]:
    from ...diagnose import CERT_CLASSES, CHAIN_CLASSES, DATE_CLASSES, HANDSHAKE_CLASSES, HANGUP_CLASSES, rule

    return (
        rule(r"RemoteCertificateNameMismatch", "hostname-mismatch", weight=5),
        rule(r"\bNotTimeValid\b", *DATE_CLASSES),
        rule(r"\bUntrustedRoot\b", "untrusted-certificate", weight=5),
        rule(r"\bPartialChain\b", *CHAIN_CLASSES),
        rule(r"\bNotSignatureValid\b|\bHasWeakSignature\b", "weak-key-or-signature"),
        # Chain errors are everything but the name.
        rule(
            r"RemoteCertificateChainErrors|remote certificate is invalid because of errors in the certificate chain",
            *(c for c in CERT_CLASSES if c != "hostname-mismatch"),
        ),
        rule(
            r"The remote certificate is invalid according to the validation procedure|"
            r"rejected by the provided RemoteCertificateValidationCallback",
            *CERT_CLASSES,
        ),
        rule(r"do not possess a common algorithm", "protocol-version-mismatch", "no-shared-cipher"),
        rule(r"remote party sent a TLS alert: '?ProtocolVersion", "protocol-version-mismatch", weight=5),
        rule(r"remote party sent a TLS alert: '?HandshakeFailure", *HANDSHAKE_CLASSES),
        rule(r"remote party sent a TLS alert: '?CertificateRequired", "client-certificate-required", weight=5),
        rule(
            r"remote party sent a TLS alert: '?(?:BadCertificate|UnknownCA|CertificateUnknown)",
            "client-certificate-required",
            weight=1,
        ),
        rule(
            r"unexpected packet format|Cannot determine the frame size or a corrupted frame was received",
            "wrong-tls-mode",
            weight=5,
        ),
        rule(
            r"remote party has closed the transport stream|unexpected EOF or 0 bytes from the transport stream",
            *HANGUP_CLASSES,
            hint=True,
        ),
    )


FAMILY = ClientFamily(
    name="dotnet",
    title=".NET (SslStream, MailKit)",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "set SslProtocols = {dotnet} (SslClientAuthenticationOptions.EnabledSslProtocols; MailKit: "
        "client.SslProtocols), or leave it to the OS default (SslProtocols.None)",
        "ciphers": "allow {jsse} (CipherSuitesPolicy on Linux and macOS; the system's suite list on Windows)",
        "trust": "trust {ca} (X509ChainPolicy.CustomTrustStore with TrustMode = CustomRootTrust, or the system store); "
        "never a RemoteCertificateValidationCallback that returns true",
        "hostname": "set TargetHost to a name the certificate carries (MailKit: connect with that host name)",
        "client-cert": 'add X509Certificate2.CreateFromPemFile("client.pem", "client-key.pem") to ClientCertificates',
        "starttls": "connect with SecureSocketOptions.StartTls (not StartTlsWhenAvailable, not None)",
        "implicit-tls": "connect with SecureSocketOptions.SslOnConnect",
        "plaintext-first": "connect with SecureSocketOptions.StartTls",
        "verify-on": "remove the ServerCertificateValidationCallback that returns true (MailKit: "
        "client.CheckCertificateRevocation and a proper callback)",
        "hostname-on": "do not ignore SslPolicyErrors.RemoteCertificateNameMismatch in the validation callback",
    },
    version_words=_version_words,
)
