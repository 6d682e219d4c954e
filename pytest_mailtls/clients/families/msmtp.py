"""msmtp: GnuTLS underneath on Debian, so it reads the GnuTLS table.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from . import ClientFamily
from .gnutls import FAMILY as GNUTLS

FAMILY = ClientFamily(
    name="msmtp",
    title="msmtp (GnuTLS)",
    rules=GNUTLS.rules,
    openssl_reasons=False,
    knobs={
        "versions": "set tls_priorities to allow {want} (e.g. NORMAL)",
        "ciphers": "add the suite to tls_priorities",
        "trust": "set tls_trust_file {ca}",
        "hostname": "set host (or tls_host_override) to a name the certificate carries",
        "client-cert": "set tls_cert_file and tls_key_file",
        "starttls": "set tls on and tls_starttls on",
        "implicit-tls": "set tls_starttls off",
        "plaintext-first": "set tls_starttls on",
        "verify-on": "set tls_certcheck on",
        "hostname-on": "keep tls_certcheck on",
        "weak-on": "(GnuTLS: tls_priorities with %PROFILE_MEDIUM)",
    },
)
