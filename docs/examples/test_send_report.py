import ssl

import pytest

from mailer import send_report  # the client code under test (docs/examples/mailer.py)


def send(cell):
    tls = "implicit" if cell.mode == "implicit" else "starttls"
    send_report(cell.server_hostname, cell.port, tls=tls, cafile=cell.ca_file, user=cell.username,
                password=cell.password)


# auth="default": the cells that want a password after TLS (not "open" MX ports, not mTLS ones)
@pytest.mark.mailtls(protocol="smtp", cert="valid", policy=["modern", "intermediate", "tls12-only"], auth="default")
def test_sends_on_every_modern_server(mailtls_server):  # runs once per matching cell
    send(mailtls_server)
    [message] = mailtls_server.messages(count=1)  # waits until delivered (servers queue first)
    assert message["Subject"] == "weekly report"


@pytest.mark.mailtls(protocol="smtp", cert=["expired", "wrong-host", "untrusted-ca"])
def test_refuses_bad_certificates(mailtls_server):
    with pytest.raises(ssl.SSLCertVerificationError):
        send(mailtls_server)
    assert mailtls_server.messages() == []
