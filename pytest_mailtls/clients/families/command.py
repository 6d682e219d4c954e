"""The generic family: a client nobody named reads every family's own table, in registry order.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from . import ClientFamily, client_families

if TYPE_CHECKING:
    from ...diagnose import Rule


@functools.cache
def _rules() -> tuple[Rule, ...]:
    """Every other family's own rules, each once (msmtp and gnutls share theirs)."""
    return tuple(dict.fromkeys(rule for family in client_families() if not family.generic for rule in family.rules()))


FAMILY = ClientFamily(
    name="command",
    title="any program: reads every family's table",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "configure the client to offer {want}",
        "ciphers": "enable {openssl} in the client",
        "trust": "make the client trust {ca}",
        "hostname": "connect with a name the certificate carries",
        "client-cert": "configure the client certificate and key",
        "starttls": "enable STARTTLS in the client",
        "implicit-tls": "speak TLS from the first byte",
        "plaintext-first": "open in plaintext and send STARTTLS",
        "verify-on": "turn certificate verification on",
        "hostname-on": "turn host name verification on",
        "weak-on": "(OpenSSL: security level 2, no @SECLEVEL=0 in the cipher string)",
    },
    generic=True,
)
