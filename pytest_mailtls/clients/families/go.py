"""Go crypto/tls, crypto/x509 and net/smtp (texts from the Go sources: x509/verify.go, tls/alert.go, smtp/auth.go).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import ClientFamily

if TYPE_CHECKING:
    from ...diagnose import Rule

_VERSION = {"TLSv1": "VersionTLS10", "TLSv1.1": "VersionTLS11", "TLSv1.2": "VersionTLS12", "TLSv1.3": "VersionTLS13"}


def _version_words(versions: Sequence[str]) -> Mapping[str, str]:
    return {"go_lo": f"tls.{_VERSION[versions[0]]}", "go_hi": f"tls.{_VERSION[versions[-1]]}"}


@functools.cache
def _rules() -> tuple[Rule, ...]:
    from ...diagnose import CHAIN_CLASSES, DATE_CLASSES, HANDSHAKE_CLASSES, rule

    return (
        # CertificateInvalidError{Reason: Expired} reads the same for both dates; the detail says which.
        rule(
            r"certificate has expired or is not yet valid: current time \S+ is after", "certificate-expired", weight=5
        ),
        rule(
            r"certificate has expired or is not yet valid: current time \S+ is before",
            "certificate-not-yet-valid",
            weight=5,
        ),
        rule(r"certificate has expired or is not yet valid", *DATE_CLASSES),
        # Go says "unknown authority" both for a foreign CA and for a missing intermediate: never a host name.
        rule(r"x509: certificate signed by unknown authority", *CHAIN_CLASSES),
        rule(
            r"x509: certificate is valid for .+, not \S+|x509: certificate is not valid for any names|"
            r"x509: cannot validate certificate for \S+ because it doesn't contain any IP SANs|"
            r"x509: certificate relies on legacy Common Name field",
            "hostname-mismatch",
            weight=5,
        ),
        rule(
            r"insecure algorithm (?:SHA1|MD5|MD2)-\w+|cannot verify signature: insecure algorithm|"
            r"(?<!remote error: )tls: unsupported certificate|tls: server's certificate contains an unsupported type",
            "weak-key-or-signature",
            weight=5,
        ),
        rule(
            r"remote error: tls: protocol version not supported|tls: server selected unsupported protocol version|"
            r"tls: no supported versions satisfy MinVersion and MaxVersion|tls: client offered only unsupported "
            r"versions",
            "protocol-version-mismatch",
            weight=5,
        ),
        rule(r"remote error: tls: handshake failure", *HANDSHAKE_CLASSES),
        rule(
            r"remote error: tls: insufficient security level|tls: no cipher suite supported by both client and server",
            "no-shared-cipher",
        ),
        rule(
            r"tls: first record does not look like a TLS handshake|tls: oversized record received|"
            r"server gave HTTP response",
            "wrong-tls-mode",
            weight=5,
        ),
        rule(r"remote error: tls: certificate required", "client-certificate-required", weight=5),
        rule(
            r"remote error: tls: (?:bad certificate|unknown certificate authority|unsupported certificate)",
            "client-certificate-required",
            weight=1,
        ),
        # smtp.PlainAuth refuses to send the password over a connection without TLS.
        rule(r"\bunencrypted connection\b", "starttls-required", "starttls-not-offered"),
        rule(r"smtp: server doesn't support AUTH", "starttls-required", "auth-failed"),
    )


FAMILY = ClientFamily(
    name="go",
    title="Go (crypto/tls, crypto/x509, net/smtp)",
    rules=_rules,
    openssl_reasons=False,
    knobs={
        "versions": "set tls.Config{{MinVersion: {go_lo}, MaxVersion: {go_hi}}}",
        "ciphers": "add tls.{jsse} to tls.Config.CipherSuites (Go leaves static-RSA key exchange out of its defaults)",
        "trust": "add {ca} to an x509.CertPool set as tls.Config{{RootCAs: pool}}; never InsecureSkipVerify",
        "hostname": "set tls.Config{{ServerName: ...}} to a name the certificate carries",
        "client-cert": 'set tls.Config{{Certificates: ...}} from tls.LoadX509KeyPair("client.pem", "client-key.pem")',
        "starttls": 'call (*smtp.Client).StartTLS before Auth, and fail when Extension("STARTTLS") is false',
        "implicit-tls": "dial with tls.Dial and hand the connection to smtp.NewClient",
        "plaintext-first": "smtp.Dial, then StartTLS",
        "verify-on": "drop InsecureSkipVerify and set tls.Config{{RootCAs: pool}}",
        "hostname-on": "set tls.Config{{ServerName: ...}} and drop InsecureSkipVerify",
    },
    version_words=_version_words,
)
