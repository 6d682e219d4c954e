"""``openssl s_client`` (``verify error:num=N:``, its STARTTLS words); OpenSSL's reasons too.

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
    from ...diagnose import rule

    return (
        rule(r"Didn't find STARTTLS in server response", "starttls-not-offered", weight=6),
        rule(r"verify error:num=10:", "certificate-expired", weight=5),
        rule(r"verify error:num=9:", "certificate-not-yet-valid", weight=5),
        rule(r"verify error:num=62:", "hostname-mismatch", weight=5),
        rule(r"verify error:num=(?:18|19):", "untrusted-certificate", weight=5),
        rule(r"verify error:num=(?:66|67|68):", "weak-key-or-signature", weight=5),
    )


FAMILY = ClientFamily(
    name="openssl",
    title="openssl s_client",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "drop the version pins (-tls1, -no_tls1_3 ...) or pass -tls1_2 / -tls1_3",
        "ciphers": 'pass -cipher "{openssl}"',
        "trust": "pass -CAfile {ca}",
        "hostname": "pass -verify_hostname with a name the certificate carries",
        "client-cert": "pass -cert client.pem -key client-key.pem",
        "starttls": "pass -starttls {proto}",
        "implicit-tls": "drop -starttls",
        "plaintext-first": "pass -starttls {proto}",
        "verify-on": "pass -verify_return_error",
        "hostname-on": "pass -verify_hostname NAME",
    },
)
