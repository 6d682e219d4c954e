import pytest

from mailer import send_report


@pytest.mark.mailtls(protocol="smtp", cert="valid", policy=["modern", "intermediate"], auth="default")
def test_uses_tls13_and_never_sends_the_password_in_clear(mailtls_server):
    tls = "implicit" if mailtls_server.mode == "implicit" else "starttls"
    send_report(mailtls_server.server_hostname, mailtls_server.port, tls=tls, cafile=mailtls_server.ca_file,
                user=mailtls_server.username, password=mailtls_server.password)
    session = mailtls_server.last_session()  # this test's last connection to the cell (docs/wire.md)
    assert session.tls_version == "TLSv1.3" and session.offered_versions == ["TLSv1.2", "TLSv1.3"]
    assert session.sni == mailtls_server.server_hostname
    assert not session.credentials_in_clear
