"""Node's tls module (OpenSSL underneath: its reason strings are read too) and nodemailer.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from . import ClientFamily

if TYPE_CHECKING:
    from ...diagnose import Rule


@functools.cache
def _rules() -> tuple[Rule, ...]:
    from ...diagnose import CHAIN_CLASSES, HANDSHAKE_CLASSES, HANGUP_CLASSES, rule

    return (
        rule(
            r"Hostname/IP does not match certificate's altnames|ERR_TLS_CERT_ALTNAME_INVALID",
            "hostname-mismatch",
            weight=5,
        ),
        rule(r"\bCERT_HAS_EXPIRED\b", "certificate-expired", weight=5),
        rule(r"\bCERT_NOT_YET_VALID\b", "certificate-not-yet-valid", weight=5),
        rule(
            r"\bDEPTH_ZERO_SELF_SIGNED_CERT\b|\bSELF_SIGNED_CERT_IN_CHAIN\b|self[- ]signed certificate in certificate "
            r"chain",
            "untrusted-certificate",
            weight=5,
        ),
        rule(r"\bUNABLE_TO_GET_ISSUER_CERT(?:_LOCALLY)?\b|\bUNABLE_TO_VERIFY_LEAF_SIGNATURE\b", *CHAIN_CLASSES),
        rule(r"\bERR_SSL_(?:WRONG_VERSION_NUMBER|HTTP_REQUEST|PACKET_LENGTH_TOO_LONG)\b", "wrong-tls-mode", weight=5),
        rule(
            r"\bERR_SSL_(?:TLSV1_ALERT_PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE|VERSION_TOO_LOW)\b",
            "protocol-version-mismatch",
            weight=5,
        ),
        rule(
            r"\bERR_SSL_(?:NO_CIPHERS_AVAILABLE|NO_SHARED_CIPHER|SSLV3_ALERT_INSUFFICIENT_SECURITY|"
            r"TLSV1_ALERT_INSUFFICIENT_SECURITY)\b",
            "no-shared-cipher",
            weight=5,
        ),
        rule(r"\bERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE\b", *HANDSHAKE_CLASSES),
        rule(r"\bERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED\b", "client-certificate-required", weight=5),
        rule(r"\bERR_SSL_(?:EE_KEY_TOO_SMALL|CA_KEY_TOO_SMALL|CA_MD_TOO_WEAK)\b", "weak-key-or-signature", weight=5),
        rule(r"\bInvalid login\b|\bEAUTH\b", "auth-failed", weight=5),
        # A plaintext client on an implicit-TLS port waits for a greeting that never comes (the server waits too).
        rule(r"Greeting never received", "wrong-tls-mode", hint=True),
        rule(r"Unexpected socket close|\bECONNRESET\b|socket hang up", *HANGUP_CLASSES, hint=True),
    )


FAMILY = ClientFamily(
    name="node",
    title="Node (tls, nodemailer)",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "set tls: {{ minVersion: '{lo_name}', maxVersion: '{hi_name}' }} in the transport options "
        "(nodemailer passes tls to tls.connect)",
        "ciphers": "set tls: {{ ciphers: '{openssl}' }} in the transport options",
        "trust": "pass tls: {{ ca: [fs.readFileSync('ca.pem')] }} (or NODE_EXTRA_CA_CERTS=ca.pem); never "
        "rejectUnauthorized: false",
        "hostname": "connect to (or set tls: {{ servername }} to) a name the certificate carries; keep the default "
        "checkServerIdentity",
        "client-cert": "pass tls: {{ cert, key }} (PEM; the key in PKCS#8 or PKCS#1)",
        "starttls": "set requireTLS: true and drop ignoreTLS (nodemailer)",
        "implicit-tls": "set secure: true",
        "plaintext-first": "set secure: false and requireTLS: true (STARTTLS)",
        "verify-on": "drop tls: {{ rejectUnauthorized: false }} and pass ca: fs.readFileSync(CA)",
        "hostname-on": "drop checkServerIdentity overrides and set servername to the certificate's name",
    },
)
