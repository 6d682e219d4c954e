"""The placeholders of a ``--command`` template (imports nothing: ``mailtls --help`` lists them).

PYTEST_DONT_REWRITE
"""

__all__ = ["PLACEHOLDERS"]

#: Placeholders a command template may use, each with what it is filled with: the one list that the
#: template check, ``mailtls certify --help`` and the docs' test (tests/docs) read.
PLACEHOLDERS: dict[str, str] = {
    "host": "the address to dial (127.0.0.1)",
    "port": "the cell's port",
    "server_hostname": "the name its certificate carries, for SNI and verification",
    "url": "smtp:// for plain and STARTTLS cells, smtps:// for implicit ones; likewise imap(s), pop3(s)",
    "ca_file": "the session CA (PEM) to trust",
    "protocol": "smtp, imap or pop3",
    "mode": "plain, starttls, starttls-required or implicit",
    "user": "the test user",
    "password": "its password",
    "address": "its mail address",
    "client_cert": "the client certificate (PEM) for mTLS cells, else empty",
    "client_key": "its key, PKCS#8 (BEGIN PRIVATE KEY), else empty",
    "client_key_pkcs1": "the same RSA key as PKCS#1 (BEGIN RSA PRIVATE KEY), else empty",
}
