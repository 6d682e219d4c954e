import ssl

import pytest

from mailer import send_report


def send(cell):
    tls = "implicit" if cell.mode == "implicit" else "starttls"
    send_report(cell.server_hostname, cell.port, tls=tls, cafile=cell.ca_file, user=cell.username,
                password=cell.password)


def test_refuses_servers_below_tls12(legacy_server):  # one test per cell, diagnosed like mailtls_server
    with pytest.raises(ssl.SSLError):
        send(legacy_server)


def test_sends_through_running_servers(running):
    [cell] = running.find(protocol="smtp", mode="implicit", policy="modern", cert="valid")
    cell.clear()  # what earlier runs left in its mailbox
    send(cell)
    assert [m["Subject"] for m in cell.messages(count=1)] == ["weekly report"]
