"""swaks (Net::SSLeay: OpenSSL's reasons too).

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
    from ...diagnose import CERT_CLASSES, rule

    return (
        rule(r"Host did not advertise STARTTLS|STARTTLS not advertised", "starttls-not-offered", weight=5),
        rule(r"Could not authenticate|<\*\* +535\b|<~\* +535\b", "auth-failed", weight=5),
        rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
        rule(r"Host did not advertise authentication", "starttls-required", "auth-failed"),
        rule(
            r"TLS startup failed",
            *CERT_CLASSES,
            "protocol-version-mismatch",
            "no-shared-cipher",
            "client-certificate-required",
            hint=True,
        ),
    )


FAMILY = ClientFamily(
    name="swaks",
    title="swaks",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "pass --tls-protocol to allow {want}",
        "ciphers": 'pass --tls-cipher "{openssl}"',
        "trust": "pass --tls-verify --tls-ca-path {ca}",
        "hostname": "connect with a name the certificate carries",
        "client-cert": "pass --tls-cert client.pem --tls-key client-key.pem",
        "starttls": "pass --tls",
        "implicit-tls": "pass --tls-on-connect",
        "plaintext-first": "pass --tls instead of --tls-on-connect",
        "verify-on": "pass --tls-verify",
        "hostname-on": "use a swaks with --tls-verify-host (20240103+)",
    },
)
