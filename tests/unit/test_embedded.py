"""The embedded backend, checked with real clients over loopback: smtplib and raw TLS handshakes.

Every positive case has its negative twin: a version a cell serves next to one
it refuses, the right password next to a wrong one, the session client
certificate next to none and a foreign one.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.embedded import EmbeddedBackend, EmbeddedServer
from pytest_mailtls.connect import open_client, tls_handshake
from pytest_mailtls.errors import ServerStartError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

CELLS = [
    "embedded-submission-starttls-intermediate-valid",
    "embedded-submission-starttls-required-intermediate-valid",
    "embedded-submission-starttls-tls10-only-valid",
    "embedded-submission-starttls-tls11-only-valid",
    "embedded-submission-starttls-tls12-only-valid",
    "embedded-smtps-implicit-tls10-only-valid",
    "embedded-smtps-implicit-tls11-only-valid",
    "embedded-smtps-implicit-intermediate-valid",
    "embedded-submission-plain-cleartext-auth",
    "embedded-smtp-plain-open",
    "embedded-smtp-starttls-intermediate-valid-open",
    "embedded-submission-starttls-required-intermediate-valid-mtls",
    "embedded-smtps-implicit-intermediate-valid-mtls",
    "embedded-smtps-implicit-intermediate-weak-rsa-1024",
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    by_id = {c.id: c for c in load_matrix().cells(servers=["embedded"])}
    cells = [by_id[i] for i in CELLS]
    with EmbeddedBackend().start(cells, StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("embedded"))) as srv:
        assert isinstance(srv, EmbeddedServer)
        yield srv


def ep(server: EmbeddedServer, cell_id: str) -> Endpoint:
    return next(e for e in server.endpoints if e.id == cell_id)


@pytest.fixture(autouse=True)
def _empty_mailboxes(server: EmbeddedServer) -> None:
    for endpoint in server.endpoints:
        endpoint.clear()


def handshake(endpoint: Endpoint, context: ssl.SSLContext) -> str:
    result = tls_handshake(
        endpoint.host,
        endpoint.port,
        protocol="smtp",
        implicit=endpoint.mode is Mode.IMPLICIT,
        context=context,
        server_hostname=endpoint.server_hostname,
    )
    return result.version


def wait_for_log(server: EmbeddedServer, cell_id: str, *words: str, timeout: float = 5.0) -> str:
    """The first log line of the cell holding every word (the server logs on its own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in server.cell_logs(cell_id):
            if all(w in line for w in words):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {words} in:\n" + "\n".join(server.cell_logs(cell_id)))
        time.sleep(0.02)


# --- the served endpoints -----------------------------------------------------------------------


def test_every_cell_gets_its_own_loopback_port_and_maildir(server: EmbeddedServer, pki: SessionPKI) -> None:
    ports = [e.port for e in server.endpoints]
    assert len(set(ports)) == len(CELLS) and all(p > 0 for p in ports)
    for endpoint in server.endpoints:
        assert endpoint.host == "127.0.0.1"
        assert endpoint.server_hostname == pki.server_hostname and endpoint.ca_file == str(pki.ca_file)
        assert endpoint.mailbox and Path(endpoint.mailbox, "new").is_dir()
        assert (endpoint.client_cert_file is not None) == endpoint.cell.auth.client_cert
    assert len({e.mailbox for e in server.endpoints}) == len(CELLS)


def test_mail_is_captured_per_cell_with_every_envelope_recipient(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-submission-starttls-intermediate-valid")
    other = ep(server, "embedded-smtps-implicit-intermediate-valid")
    with open_client(endpoint) as smtp:
        smtp.login(endpoint.username, endpoint.password)
        smtp.sendmail(endpoint.address, ["one@mailtls.test", "two@example.org"], b"Subject: hello\r\n\r\nbody\r\n")
    (message,) = endpoint.messages()
    assert message["Subject"] == "hello"
    assert message.get_all("X-Original-To") == ["one@mailtls.test", "two@example.org"]
    assert message["Return-Path"] == f"<{endpoint.address}>"
    assert "TLSv1.3" in message["Received"] and "ESMTPSA" in message["Received"]
    assert other.messages() == []  # another cell's Maildir stays empty
    assert "message accepted" in wait_for_log(server, endpoint.id, "message accepted", "two@example.org")


def test_wrong_password_is_refused_and_nothing_captured(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-submission-starttls-intermediate-valid")
    with open_client(endpoint) as smtp, pytest.raises(smtplib.SMTPAuthenticationError) as err:
        smtp.login(endpoint.username, "not-the-password")
    assert err.value.smtp_code == 535
    assert endpoint.messages() == []
    line = wait_for_log(server, endpoint.id, "AUTH", "failed")
    assert "not-the-password" not in "\n".join(server.cell_logs(endpoint.id))
    assert endpoint.username in line


def test_mail_before_auth_is_refused_where_auth_is_required(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-submission-starttls-intermediate-valid")
    with open_client(endpoint) as smtp:
        code, text = smtp.mail(endpoint.address)
    assert code == 530 and b"Authentication required" in text
    wait_for_log(server, endpoint.id, "refused MAIL", "530")


def test_open_mx_takes_mail_without_auth(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-smtp-starttls-intermediate-valid-open")
    with open_client(endpoint) as smtp:
        assert not smtp.has_extn("auth")
        smtp.sendmail("someone@example.org", ["catch@mailtls.test"], b"Subject: mx\r\n\r\nx\r\n")
    assert [m["Subject"] for m in endpoint.messages()] == ["mx"]


def test_auth_is_hidden_and_refused_before_tls_when_tls_only(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-submission-starttls-intermediate-valid")
    with open_client(endpoint, starttls=False) as smtp:
        assert not smtp.has_extn("auth")
        code, text = smtp.docmd("AUTH", "PLAIN AHRlc3RlcgB4")
    assert code == 538 and b"Encryption required" in text


def test_cleartext_auth_cell_takes_passwords_in_plaintext(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-submission-plain-cleartext-auth")
    with open_client(endpoint) as smtp:
        assert not smtp.has_extn("starttls")
        assert set(smtp.esmtp_features["auth"].split()) == {"PLAIN", "LOGIN"}
        smtp.login(endpoint.username, endpoint.password)
        smtp.sendmail(endpoint.address, ["x@mailtls.test"], b"Subject: clear\r\n\r\nx\r\n")
    assert "ESMTPA" in endpoint.messages()[0]["Received"]


def test_starttls_required_refuses_mail_in_plaintext(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-submission-starttls-required-intermediate-valid")
    with open_client(endpoint, starttls=False) as smtp:
        code, text = smtp.mail(endpoint.address)
    assert code == 530 and b"STARTTLS" in text


def test_starttls_optional_lets_plaintext_mail_through(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-smtp-starttls-intermediate-valid-open")
    with open_client(endpoint, starttls=False) as smtp:
        assert smtp.has_extn("starttls")
        code, _ = smtp.mail("someone@example.org")
    assert code == 250


# --- legacy versions really work (aiosmtpd#459) ---------------------------------------------------


@pytest.mark.parametrize(
    ("cell_id", "served", "refused"),
    [
        ("embedded-submission-starttls-tls10-only-valid", "TLSv1", ["TLSv1.1", "TLSv1.2", "TLSv1.3"]),
        ("embedded-smtps-implicit-tls10-only-valid", "TLSv1", ["TLSv1.1", "TLSv1.2"]),
        ("embedded-submission-starttls-tls11-only-valid", "TLSv1.1", ["TLSv1", "TLSv1.2", "TLSv1.3"]),
        ("embedded-smtps-implicit-tls11-only-valid", "TLSv1.1", ["TLSv1", "TLSv1.2"]),
    ],
)
def test_legacy_cells_negotiate_exactly_their_version(
    server: EmbeddedServer, cell_id: str, served: str, refused: list[str]
) -> None:
    endpoint = ep(server, cell_id)
    assert handshake(endpoint, endpoint.client_context(served)) == served
    for version in refused:
        with pytest.raises(ssl.SSLError) as err:
            handshake(endpoint, endpoint.client_context(version))
        # The server's alert (or the client refusing the older version the server answered with), as
        # against Postfix; never a bare EOF.
        assert not isinstance(err.value, ssl.SSLEOFError)
        reasons = {"TLSV1_ALERT_PROTOCOL_VERSION", "SSLV3_ALERT_HANDSHAKE_FAILURE", "UNSUPPORTED_PROTOCOL"}
        assert err.value.reason in reasons, err.value


def test_legacy_trap_without_security_level_0_is_real(pki: SessionPKI, tmp_path: Path) -> None:
    """The aiosmtpd#459 trap: a TLSv1.1 range without @SECLEVEL=0 cannot complete a handshake."""
    trap = TLSPolicy("tls11-trap", min_version="TLSv1.1", max_version="TLSv1.1", ciphers="DEFAULT:@SECLEVEL=2")
    cell = Cell("embedded", SERVICES["smtps"], Mode.IMPLICIT, trap, CertProfile.VALID)
    with pytest.raises(ServerStartError) as err:  # readiness makes a real handshake, and it fails
        EmbeddedBackend().start([cell], StartOptions(pki=pki, workdir=tmp_path, ready_timeout=1.0))
    assert "NO_SUITABLE_SIGNATURE_ALGORITHM" in str(err.value) or "no suitable signature" in err.value.log


def test_refused_handshake_is_logged_with_the_openssl_reason(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-submission-starttls-tls12-only-valid")
    with pytest.raises(ssl.SSLError):
        handshake(endpoint, endpoint.client_context("TLSv1.1"))
    line = wait_for_log(server, endpoint.id, "SSL_accept error", "after STARTTLS")
    assert "unsupported protocol" in line
    assert "SSL_accept error" in server.logs()


def test_weak_certificate_is_served(server: EmbeddedServer) -> None:
    endpoint = ep(server, "embedded-smtps-implicit-intermediate-weak-rsa-1024")
    with pytest.raises(ssl.SSLCertVerificationError, match="key too weak"):
        handshake(endpoint, endpoint.client_context())
    assert handshake(endpoint, endpoint.client_context(verify=False, ciphers="DEFAULT:@SECLEVEL=0")) == "TLSv1.3"


# --- mutual TLS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell_id",
    [
        "embedded-submission-starttls-required-intermediate-valid-mtls",
        "embedded-smtps-implicit-intermediate-valid-mtls",
    ],
)
def test_mutual_tls_needs_the_session_client_certificate(server: EmbeddedServer, pki: SessionPKI, cell_id: str) -> None:
    endpoint = ep(server, cell_id)
    with open_client(endpoint) as smtp:  # presents the session client certificate
        smtp.login(endpoint.username, endpoint.password)
        smtp.sendmail(endpoint.address, ["m@mailtls.test"], b"Subject: mtls\r\n\r\nx\r\n")
    assert [m["Subject"] for m in endpoint.messages()] == ["mtls"]

    for label, context in (
        ("none", endpoint.client_context(client_cert=False)),
        ("foreign", _with_cert(endpoint.client_context(client_cert=False), pki.foreign_client_files())),
    ):
        with pytest.raises((ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError)):
            with open_client(endpoint, context=context) as smtp:
                smtp.noop()  # TLS 1.3 reports the refusal on the first read
            pytest.fail(f"client certificate {label}: accepted")
    wait_for_log(server, endpoint.id, "SSL_accept error")


def _with_cert(context: ssl.SSLContext, files: object) -> ssl.SSLContext:
    context.load_cert_chain(str(files.cert_file), str(files.key_file))  # type: ignore[attr-defined]
    return context


# --- lifecycle and scope ----------------------------------------------------------------------------


def test_stop_closes_every_port_and_is_idempotent(pki: SessionPKI, tmp_path: Path) -> None:
    cell = next(c for c in load_matrix().cells(servers=["embedded"]) if c.id == "embedded-smtp-plain-open")
    started = time.monotonic()
    srv = EmbeddedBackend().start([cell], StartOptions(pki=pki, workdir=tmp_path))
    assert time.monotonic() - started < 5.0  # milliseconds in practice; generous for a loaded CI machine
    port = srv.endpoints[0].port
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    srv.stop()
    srv.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_unsupported_says_why() -> None:
    backend = EmbeddedBackend()
    cells = {c.id: c for c in load_matrix().cells(servers=["embedded", "dovecot"])}
    assert backend.unsupported(cells["embedded-submission-starttls-intermediate-valid"]) is None
    assert "SMTP only" in (
        backend.unsupported(replace(cells["dovecot-imap-starttls-modern-valid"], server="embedded")) or ""
    )
    assert "belongs to the dovecot server" in (backend.unsupported(cells["dovecot-imap-starttls-modern-valid"]) or "")
    suites = TLSPolicy("tls13-one-suite", min_version="TLSv1.3", ciphersuites="TLS_AES_128_GCM_SHA256")
    cell = Cell("embedded", SERVICES["smtps"], Mode.IMPLICIT, suites, CertProfile.VALID)
    assert "TLS 1.3 cipher suites" in (backend.unsupported(cell) or "")
    cram = Cell("embedded", SERVICES["smtp"], Mode.PLAIN, None, None, AuthPolicy("cram", ("CRAM-MD5",), tls_only=False))
    assert "CRAM-MD5" in (backend.unsupported(cram) or "")
    with pytest.raises(ServerStartError, match=r"TLS 1\.3 cipher suites"):
        backend.start([cell], StartOptions(pki=None, workdir=Path("/nonexistent")))  # type: ignore[arg-type]
