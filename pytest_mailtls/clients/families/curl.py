"""curl (exit codes and messages); OpenSSL underneath.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from . import ClientFamily

if TYPE_CHECKING:
    from ...diagnose import Rule

_VERSION = {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}


def _version_words(versions: Sequence[str]) -> Mapping[str, str]:
    return {"lo": _VERSION[versions[0]], "hi": _VERSION[versions[-1]]}


@functools.cache
def _rules() -> tuple[Rule, ...]:
    from ...diagnose import CERT_CLASSES, rule

    return (
        rule(r"STARTTLS not supported|STARTTLS denied|curl: \(64\)", "starttls-not-offered", weight=5),
        rule(
            r"no alternative certificate subject name matches|does not match target host name",
            "hostname-mismatch",
            weight=5,
        ),
        rule(r"curl: \(51\)", "hostname-mismatch"),
        rule(r"curl: \(67\)|Login denied", "auth-failed", weight=5),
        rule(r"curl: \(60\)|SSL certificate problem", *CERT_CLASSES),
        rule(
            r"curl: \(58\)|unable to set private key file|could not load PEM client certificate",
            "client-certificate-required",
        ),
        rule(r"curl: \(59\)|failed setting cipher list", "no-shared-cipher"),
        rule(
            r"curl: \(35\)",
            "protocol-version-mismatch",
            "no-shared-cipher",
            "wrong-tls-mode",
            "client-certificate-required",
        ),
        rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
        rule(r"Authentication required|Relay access denied|\b530[ -]5\.7\.0\b", "auth-failed", "starttls-required"),
    )


FAMILY = ClientFamily(
    name="curl",
    title="curl",
    rules=_rules,
    openssl_reasons=True,
    knobs={
        "versions": "pass --tlsv{lo} (the minimum) and --tls-max {hi}",
        "ciphers": 'pass --ciphers "{openssl}"',
        "trust": "pass --cacert {ca}",
        "hostname": "use a URL whose host the certificate names (with --resolve NAME:PORT:IP)",
        "client-cert": "pass --cert client.pem --key client-key.pem",
        "starttls": "pass --ssl-reqd with a {proto}:// URL",
        "implicit-tls": "use a {proto}s:// URL",
        "plaintext-first": "use a {proto}:// URL with --ssl-reqd",
        "verify-on": "drop --insecure and pass --cacert",
        "hostname-on": "drop --insecure",
    },
    version_words=_version_words,
)
