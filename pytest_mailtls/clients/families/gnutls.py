"""GnuTLS clients (gnutls-cli, programs on libgnutls).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import ClientFamily

if TYPE_CHECKING:
    from ...diagnose import Rule

_VERSION = {"TLSv1": "+VERS-TLS1.0", "TLSv1.1": "+VERS-TLS1.1", "TLSv1.2": "+VERS-TLS1.2", "TLSv1.3": "+VERS-TLS1.3"}


def _version_words(versions: Sequence[str]) -> Mapping[str, str]:
    return {"gnutls": ":".join(_VERSION[v] for v in versions)}


@functools.cache
def _rules() -> tuple[Rule, ...]:
    from ...diagnose import CHAIN_CLASSES, HANDSHAKE_CLASSES, HANGUP_CLASSES, rule

    return (
        rule(
            r"uses expired certificate|certificate has expired(?! or is not yet valid)", "certificate-expired", weight=5
        ),
        rule(r"uses not yet valid certificate|not yet activated", "certificate-not-yet-valid", weight=5),
        rule(r"name in the certificate does not match|owner does not match", "hostname-mismatch", weight=5),
        rule(r"certificate issuer is unknown|signer not found", *CHAIN_CLASSES),
        rule(r"\bis self-signed\b|\bself signed\b", "untrusted-certificate"),
        rule(r"Diffie-Hellman prime sent by the server is not acceptable", "weak-dh", weight=6),
        rule(r"uses insecure algorithm|insecure algorithm|key size is too small", "weak-key-or-signature", weight=5),
        rule(
            r"\bunsupported version\b|illegal or unsupported version|version is not supported|Error in protocol version",
            "protocol-version-mismatch",
        ),
        rule(r"Could not negotiate a supported cipher suite|No supported cipher suites", "no-shared-cipher"),
        rule(r"An unexpected TLS packet was received|unexpected TLS packet", "wrong-tls-mode", weight=1),
        rule(r"non-properly terminated|The TLS connection was non-properly terminated", *HANGUP_CLASSES, hint=True),
        rule(r"A TLS fatal alert has been received|Received alert \[40\]", *HANDSHAKE_CLASSES),
        rule(r"does not support TLS via the STARTTLS command", "starttls-not-offered", weight=5),
        rule(r"authentication failed(?!,? (?:see inner|because))", "auth-failed", weight=5),
        rule(
            r"Must issue a STARTTLS command first|cannot use a secure authentication method",
            "starttls-required",
            weight=5,
        ),
        rule(r"server does not support authentication", "starttls-required", "auth-failed"),
    )


FAMILY = ClientFamily(
    name="gnutls",
    title="GnuTLS (gnutls-cli)",
    rules=_rules,
    openssl_reasons=False,
    knobs={
        "versions": "allow {want} in the priority string (NORMAL:-VERS-ALL:{gnutls})",
        "ciphers": "add the suite to the priority string",
        "trust": "load {ca} with gnutls_certificate_set_x509_trust_file (gnutls-cli --x509cafile)",
        "hostname": "verify against a name the certificate carries (gnutls_session_set_verify_cert, gnutls-cli HOST)",
        "client-cert": "load the certificate and key (gnutls-cli --x509certfile client.pem --x509keyfile "
        "client-key.pem)",
        "starttls": "pass --starttls-proto={proto}",
        "implicit-tls": "drop --starttls-proto",
        "plaintext-first": "pass --starttls-proto={proto}",
        "verify-on": "keep certificate verification on (gnutls_session_set_verify_cert)",
        "hostname-on": "pass the host name to gnutls_session_set_verify_cert",
    },
    version_words=_version_words,
)
