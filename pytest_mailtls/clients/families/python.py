"""Python's ssl module and its mail libraries (smtplib, imaplib, poplib); OpenSSL underneath.

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
        rule(
            r"STARTTLS extension not supported by server|TLS not supported by server", "starttls-not-offered", weight=5
        ),
        rule(r"STLS not supported by server|STARTTLS is not offered", "starttls-not-offered", weight=5),
        rule(r"answered with TLS where plaintext was expected", "wrong-tls-mode", weight=5),
        rule(r"SMTPAuthenticationError|AUTHENTICATIONFAILED|\[AUTH\] Authentication failed", "auth-failed", weight=5),
        # .NET's SslStream says "Authentication failed because ..." / ", see inner exception" for TLS failures.
        rule(
            r"authentication failed(?!,? (?:see inner|because))|Invalid credentials|\bLOGIN failed",
            "auth-failed",
        ),
        rule(r"Must issue a STARTTLS command first|PRIVACYREQUIRED|LOGINDISABLED", "starttls-required", weight=5),
        rule(
            r"Plaintext authentication disallowed|must use STARTTLS|encryption required", "starttls-required", weight=5
        ),
        rule(r"SMTP AUTH extension not supported by server", "starttls-required", "auth-failed"),
        rule(r"Authentication required|Relay access denied|\b530[ -]5\.7\.0\b", "auth-failed", "starttls-required"),
        rule(r"SSLCertVerificationError", *CERT_CLASSES),
    )


FAMILY = ClientFamily(
    name="python",
    title="Python (ssl, smtplib, imaplib, poplib)",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "set context.minimum_version / context.maximum_version (ssl.TLSVersion) so that {want} is offered",
        "ciphers": 'call context.set_ciphers("{openssl}")',
        "trust": 'use ssl.create_default_context(cafile="{ca}")',
        "hostname": "connect with server_hostname set to a name the certificate carries; keep check_hostname=True",
        "client-cert": 'call context.load_cert_chain("client.pem", "client-key.pem")',
        "starttls": "call starttls(context=...) before logging in (smtplib.SMTP.starttls, IMAP4.starttls, POP3.stls)",
        "implicit-tls": "use SMTP_SSL / IMAP4_SSL / POP3_SSL",
        "plaintext-first": "use SMTP / IMAP4 / POP3 and then STARTTLS",
        "verify-on": "use ssl.create_default_context(cafile=...) (CERT_REQUIRED)",
        "hostname-on": "keep context.check_hostname = True",
    },
    default_ciphers="",  # the ssl module's own default list (PROTOCOL_TLS_CLIENT)
)
