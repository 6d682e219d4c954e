"""Rust clients: rustls' Error Display (old: Debug names such as "UnknownIssuer"; 0.23: sentences such as
"certificate expired:") and lettre. native-tls on Linux is OpenSSL: the family reads OpenSSL's reasons too.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import ClientFamily

if TYPE_CHECKING:
    from ...diagnose import Rule

_VERSION = {"TLSv1": "Tlsv10", "TLSv1.1": "Tlsv11", "TLSv1.2": "Tlsv12", "TLSv1.3": "Tlsv13"}


def _version_words(versions: Sequence[str]) -> Mapping[str, str]:
    lo = versions[0]
    modern = [v for v in versions if v in ("TLSv1.2", "TLSv1.3")] or ["TLSv1.2"]
    return {
        "rust_versions": ", ".join(f"&rustls::version::TLS1{v[-1]}" for v in reversed(modern)),
        # native-tls has no TLS 1.3 minimum: TLSv1.2 is the closest it can say.
        "rust_min": f"native_tls::Protocol::{_VERSION[lo] if lo != 'TLSv1.3' else 'Tlsv12'}",
    }


@functools.cache
def _rules() -> tuple[Rule, ...]:
    from ...diagnose import CERT_CLASSES, CHAIN_CLASSES, HANDSHAKE_CLASSES, HANGUP_CLASSES, rule

    return (
        rule(r"invalid peer certificate: (?:UnknownIssuer|UnknownCA)\b", *CHAIN_CLASSES),
        rule(
            r"invalid peer certificate: (?:NotValidForName\w*|certificate not valid for name)",
            "hostname-mismatch",
            weight=5,
        ),
        rule(r"invalid peer certificate: (?:Expired\w*|certificate expired)", "certificate-expired", weight=5),
        rule(
            r"invalid peer certificate: (?:NotValidYet\w*|certificate not valid yet)",
            "certificate-not-yet-valid",
            weight=5,
        ),
        rule(
            r"invalid peer certificate: (?:BadSignature|UnsupportedSignatureAlgorithm)\w*",
            "weak-key-or-signature",
            weight=5,
        ),
        rule(r"invalid peer certificate", *CERT_CLASSES),
        rule(
            r"received fatal alert: (?:ProtocolVersion\b|.*\bprotocol[ _]version)",
            "protocol-version-mismatch",
            weight=5,
        ),
        rule(r"received fatal alert: (?:HandshakeFailure\b|.*\bhandshake[ _]failure)", *HANDSHAKE_CLASSES),
        rule(
            r"received fatal alert: (?:CertificateRequired\b|.*\bcertificate[ _]required)",
            "client-certificate-required",
            weight=5,
        ),
        rule(
            r"received fatal alert: (?:BadCertificate|UnknownCA|CertificateUnknown)\b",
            "client-certificate-required",
            weight=1,
        ),
        rule(r"peer is incompatible: \w*(?:Tls12|Tls13|Version)\w*", "protocol-version-mismatch", weight=5),
        rule(r"peer is incompatible: No(?:CipherSuites|KxGroups)InCommon", "no-shared-cipher", weight=5),
        rule(r"peer is incompatible", "protocol-version-mismatch", "no-shared-cipher"),
        rule(r"corrupt message of type InvalidContentType|\bInvalidContentType\b", "wrong-tls-mode"),
        rule(r"peer sent no certificates", "client-certificate-required", weight=5),
        rule(r"Connection error: .*(?:reset|closed|eof)", *HANGUP_CLASSES, hint=True),
    )


FAMILY = ClientFamily(
    name="rust",
    title="Rust (rustls, native-tls, lettre)",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "offer {want}: rustls ClientConfig::builder_with_protocol_versions(&[{rust_versions}]) (rustls "
        "speaks only TLSv1.2 and TLSv1.3); native-tls "
        "TlsConnector::builder().min_protocol_version(Some({rust_min}))",
        "ciphers": "enable {jsse} in the rustls CryptoProvider's cipher_suites",
        "trust": "add {ca} to the rustls RootCertStore (native-tls: TlsConnector::builder().add_root_certificate); "
        "never a verifier that accepts everything",
        "hostname": "pass a ServerName the certificate carries",
        "client-cert": "call with_client_auth_cert(chain, key) on the rustls ClientConfig builder (native-tls: "
        "Identity::from_pkcs8, which takes the PKCS#8 key {{client_key}})",
        "starttls": "use a STARTTLS transport that requires TLS (lettre: SmtpTransport::starttls_relay, Tls::Required)",
        "implicit-tls": "use implicit TLS (lettre: SmtpTransport::relay, Tls::Wrapper)",
        "plaintext-first": "use STARTTLS (lettre: SmtpTransport::starttls_relay, Tls::Required)",
        "verify-on": "drop danger_accept_invalid_certs / dangerous() verifiers and add the CA to the root store",
        "hostname-on": "drop danger_accept_invalid_hostnames and connect with the certificate's name",
    },
    version_words=_version_words,
)
