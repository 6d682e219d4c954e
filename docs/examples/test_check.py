import sys
from pathlib import Path

import pytest

from pytest_mailtls import command_client

MAILER = Path(__file__).with_name("mailer.py")
# Any program, as a command line: exit status 0 means the session worked (placeholders: mailtls certify --help).
mailer = command_client(
    f"{sys.executable} {MAILER} {{server_hostname}} {{port}} {{mode}} {{ca_file}} {{user}} {{password}} "
    "{client_cert} {client_key}",
    name="mailer", family="python", protocols=("smtp",),
)


@pytest.mark.mailtls(protocol="smtp", policy="intermediate")  # every certificate, mode and auth rule
def test_my_client(mailtls_check):  # also runs once per cell
    mailtls_check(mailer)  # must succeed where it should, and refuse what it must
    mailtls_check("curl")  # or a built-in client: python, swaks, jakarta-mail, ...
