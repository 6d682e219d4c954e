"""A plain script: which TLS versions does each Dovecot IMAP cell accept? (No test framework at all.)

    python docs/examples/script_testcontainers.py
"""

from __future__ import annotations

import imaplib
import ssl

from pytest_mailtls.testcontainers import DovecotContainer

VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

with DovecotContainer(service="imaps", cert="valid", auth="default", policy=["modern", "tls12-only"]) as dovecot:
    for cell in dovecot.endpoints:
        accepted = []
        for name, version in VERSIONS.items():
            context = ssl.create_default_context(cafile=dovecot.ca_file)
            context.minimum_version = context.maximum_version = version
            try:
                imaplib.IMAP4_SSL(cell.host, cell.port, ssl_context=context, timeout=10).logout()
                accepted.append(name)
            except (ssl.SSLError, OSError):
                pass
        print(f"{cell.id}: {' '.join(accepted) or 'nothing'}")
