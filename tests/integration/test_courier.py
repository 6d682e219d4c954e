"""Every Courier cell of the default matrix, served by ONE real Courier IMAP/POP3 container.

Each test talks to the container through its published port, as a client would, and checks both sides of each
rule: what the cell must accept works, what it must refuse fails with the matching error. Cells with different
policies share one container (one couriertcpd per cell), so every per-cell result proves the cell's own
environment is in force. A failing test shows the server's log lines for its cell.
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import socket
import ssl
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from pytest_mailtls import capture
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.courier import CourierBackend, CourierServer, gnutls_priority, unsupported_reason
from pytest_mailtls.connect import ProtocolError, open_client, plain_exchange
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, VERSIONS, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy
from pytest_mailtls.verify import probe_endpoint

from .cellchecks import (
    VERSION_FAILURES,
    check_certificate,
    check_protocol_version,
    check_tls_mode,
    cipher_table,
    context,
    find,
    foreign_context,
    handshake,
    ids,
    serve,
    server_side,
)

pytestmark = [
    pytest.mark.integration,
    # Legacy protocol versions are the point of several cells; Python warns about naming them.
    pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"),
]

ALL_CELLS = load_matrix().cells(servers=["courier"])
CELLS = [c for c in ALL_CELLS if not unsupported_reason(c)]
TLS_CELLS = [c for c in CELLS if c.tls]
STARTTLS_CELLS = [c for c in CELLS if c.mode in (Mode.STARTTLS, Mode.STARTTLS_REQUIRED)]
LOGIN_ERRORS = (imaplib.IMAP4.error, poplib.error_proto)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("courier-pki"))


@pytest.fixture(scope="module")
def server(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CourierServer]:
    yield from serve(
        lambda: CourierBackend().start(CELLS, StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("courier")))
    )


@pytest.fixture
def endpoint(server: CourierServer, request: pytest.FixtureRequest) -> Endpoint:
    return find(server, request.param.id)


@contextlib.contextmanager
def session(endpoint: Endpoint, **options: Any) -> Iterator[Any]:
    client = open_client(endpoint, **options)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.shutdown() if endpoint.protocol == "imap" else client.close()


def working_context(endpoint: Endpoint, *, client_cert: bool | None = None) -> ssl.SSLContext | None:
    return context(endpoint, verify=endpoint.cert.verifies, client_cert=client_cert) if endpoint.cell.tls else None


def login(endpoint: Endpoint, *, password: str | None = None, ctx: ssl.SSLContext | None = None) -> int:
    """Log in as the test user and count INBOX's messages. Raises on refusal."""
    secret = password if password is not None else endpoint.password
    with session(endpoint, context=ctx if ctx is not None else working_context(endpoint)) as client:
        if endpoint.protocol == "imap":
            assert client.login(endpoint.username, secret)[0] == "OK"
            status, data = client.select("INBOX")
            assert status == "OK"
            client.logout()
            return int(data[0])
        client.user(endpoint.username)
        assert client.pass_(secret).startswith(b"+OK")
        count, _ = client.stat()
        client.quit()
        return int(count)


# --------------------------------------------------------------------------- what is served


def test_the_whole_default_grid_of_courier_is_served() -> None:
    """No Courier cell of the default matrix is left out but the small-DH ones (GnuTLS follows RFC 7919: a client
    naming FFDHE groups gets ffdhe2048); cells Courier cannot serve say why."""
    left_out = {c.id: unsupported_reason(c) or "" for c in ALL_CELLS if c not in CELLS}
    assert len(CELLS) > 50 and left_out and all(c.policy is not None and c.policy.small_dh for c in ALL_CELLS
                                                if c.id in left_out)  # fmt: skip
    assert all("RFC 7919" in why for why in left_out.values())
    smtp = Cell("courier", SERVICES["submission"], Mode.STARTTLS, CELLS[0].policy, CertProfile.VALID)
    assert "IMAP and POP3" in (unsupported_reason(smtp) or "")
    # A TLS 1.2 list whose parts GnuTLS would recombine into suites the list leaves out.
    mixed = TLSPolicy("mixed", "TLSv1.2", "TLSv1.2", ciphers="ECDHE-RSA-AES128-GCM-SHA256:AES256-SHA")
    cell = Cell("courier", SERVICES["imaps"], Mode.IMPLICIT, mixed, CertProfile.VALID)
    assert "would also allow" in (unsupported_reason(cell) or "")
    with pytest.raises(ValueError, match="would also allow"):
        gnutls_priority(mixed)
    oauth = Cell("courier", SERVICES["imaps"], Mode.IMPLICIT, mixed, CertProfile.VALID, AuthPolicy("o", ("XOAUTH2",)))
    assert "XOAUTH2" in (unsupported_reason(oauth) or "")


# --------------------------------------------------------------------------- versions, certificates, ciphers


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("endpoint", TLS_CELLS, ids=ids(TLS_CELLS), indirect=True)
def test_each_cell_speaks_exactly_its_versions(server: CourierServer, endpoint: Endpoint, version: str) -> None:
    """A handshake pinned to ``version`` completes exactly where the cell's policy accepts it. Elsewhere it fails
    without a certificate error: with the protocol_version alert where GnuTLS sends one, else with the bare
    close couriertls answers a ClientHello it has no version or suite for (it sends close_notify, no alert)."""
    if endpoint.cell.accepts_version(version):
        check_protocol_version(server, endpoint, version)
        return
    with server_side(server, endpoint):
        with pytest.raises(ssl.SSLError) as caught:
            handshake(endpoint, context(endpoint, version, ciphers="DEFAULT"))
        assert not isinstance(caught.value, ssl.SSLCertVerificationError)
        assert caught.value.reason in VERSION_FAILURES or isinstance(
            caught.value, ssl.SSLEOFError | ssl.SSLZeroReturnError
        )


@pytest.mark.parametrize("endpoint", TLS_CELLS, ids=ids(TLS_CELLS), indirect=True)
def test_certificates_verify_or_fail_with_their_fault(server: CourierServer, endpoint: Endpoint) -> None:
    check_certificate(server, endpoint)


NAMED_CIPHERS = [
    c for c in TLS_CELLS if c.policy is not None and c.policy.ciphers and not c.policy.ciphers.startswith("ALL")
]


@pytest.mark.parametrize("endpoint", NAMED_CIPHERS, ids=ids(NAMED_CIPHERS), indirect=True)
def test_cells_with_a_cipher_list_take_only_those_ciphers(server: CourierServer, endpoint: Endpoint) -> None:
    """TLS 1.2 with one cipher at a time: each listed one (for the cell's key type) is negotiated, an unlisted
    one is refused (couriertls closes the connection, no handshake_failure alert), Python's default list works
    exactly when it shares a cipher with the policy."""
    policy, cert = endpoint.policy, endpoint.cert
    assert policy is not None and policy.ciphers is not None and cert is not None
    auth = "auth-ecdsa" if cert.key_type == "ecdsa" else "auth-rsa"
    allowed = cipher_table(policy.ciphers)
    listed = [c["name"] for c in allowed if c["auth"] == auth]
    outsider = "ECDHE-ECDSA-AES128-SHA" if auth == "auth-ecdsa" else "AES128-GCM-SHA256"
    assert listed and outsider not in {c["name"] for c in allowed}
    with server_side(server, endpoint):
        for cipher in listed:
            assert handshake(endpoint, context(endpoint, "TLSv1.2", ciphers=cipher)).cipher == cipher
        with pytest.raises(ssl.SSLError) as caught:
            handshake(endpoint, context(endpoint, "TLSv1.2", ciphers=outsider))
        assert not isinstance(caught.value, ssl.SSLCertVerificationError)
        default = endpoint.client_context("TLSv1.2", verify=cert.verifies)
        shared = {c["name"] for c in default.get_ciphers()} & {c["name"] for c in allowed}
        if shared:
            assert handshake(endpoint, default).cipher in shared
        else:
            with pytest.raises(ssl.SSLError):
                handshake(endpoint, default)


def test_tls13_suites_are_per_cell(server: CourierServer) -> None:
    """The probe offers one TLS 1.3 suite per handshake: the restricted cell takes AES-256-GCM only, the cell
    with GnuTLS's default list next door takes ChaCha20 too."""
    restricted = probe_endpoint(find(server, "courier-imaps-implicit-tls13-aes256-valid"))
    modern = probe_endpoint(find(server, "courier-imaps-implicit-modern-valid"))
    assert restricted.ciphers("TLSv1.3") == ["TLS_AES_256_GCM_SHA384"]
    assert "TLS_CHACHA20_POLY1305_SHA256" in modern.ciphers("TLSv1.3")


# --------------------------------------------------------------------------- modes


def _plain_port(endpoint: Endpoint, ctx: ssl.SSLContext) -> None:
    greeting = plain_exchange_on(endpoint)
    assert not greeting.starttls


def plain_exchange_on(endpoint: Endpoint) -> Any:
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
        return plain_exchange(sock, endpoint.protocol)


@pytest.mark.parametrize("endpoint", CELLS, ids=ids(CELLS), indirect=True)
def test_each_cell_speaks_its_tls_mode(server: CourierServer, endpoint: Endpoint) -> None:
    check_tls_mode(server, endpoint, _plain_port)
    if endpoint.mode is not Mode.IMPLICIT:
        assert plain_exchange_on(endpoint).starttls == endpoint.mode.tls


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("endpoint", CELLS, ids=ids(CELLS), indirect=True)
def test_the_test_user_logs_in_on_every_cell(server: CourierServer, endpoint: Endpoint) -> None:
    with server_side(server, endpoint):
        assert login(endpoint) >= 0


def test_a_wrong_password_is_refused_on_every_cell(server: CourierServer) -> None:
    def attempt(endpoint: Endpoint) -> str | None:
        try:
            login(endpoint, password=endpoint.password + "-wrong")
        except LOGIN_ERRORS:
            return None
        return "accepted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(zip(ids(CELLS), pool.map(attempt, server.endpoints), strict=True))
    assert {k: v for k, v in results.items() if v} == {}


TLS_ONLY_STARTTLS = [c for c in STARTTLS_CELLS if c.auth.tls_only or c.mode is Mode.STARTTLS_REQUIRED]


@pytest.mark.parametrize("endpoint", TLS_ONLY_STARTTLS, ids=ids(TLS_ONLY_STARTTLS), indirect=True)
def test_no_login_before_starttls(server: CourierServer, endpoint: Endpoint) -> None:
    """LOGIN and USER/PASS are refused before STARTTLS (LOGINDISABLED, no AUTH=); the same client logs in after."""
    with server_side(server, endpoint), session(endpoint, starttls=False) as client:
        if endpoint.protocol == "imap":
            assert "LOGINDISABLED" in client.capabilities
            assert not any(c.startswith("AUTH=") for c in client.capabilities)
            with pytest.raises(imaplib.IMAP4.error):
                client.login(endpoint.username, endpoint.password)
            client.starttls(ssl_context=working_context(endpoint))
            assert client.login(endpoint.username, endpoint.password)[0] == "OK"
            client.logout()
        else:
            with pytest.raises(poplib.error_proto):
                client.user(endpoint.username)
                client.pass_(endpoint.password)
            client.stls(context=working_context(endpoint))
            client.user(endpoint.username)
            assert client.pass_(endpoint.password).startswith(b"+OK")
            client.quit()


CLEARTEXT_CELLS = [c for c in CELLS if not c.auth.tls_only]


@pytest.mark.parametrize("endpoint", CLEARTEXT_CELLS, ids=ids(CLEARTEXT_CELLS), indirect=True)
def test_cleartext_auth_cells_take_passwords_without_tls(endpoint: Endpoint) -> None:
    with session(endpoint, starttls=False) as client:
        if endpoint.protocol == "imap":
            assert {"AUTH=PLAIN", "AUTH=LOGIN"} <= set(client.capabilities)
            assert "LOGINDISABLED" not in client.capabilities
            assert client.login(endpoint.username, endpoint.password)[0] == "OK"
            client.logout()
        else:
            assert "SASL" in client.capa()
            client.user(endpoint.username)
            assert client.pass_(endpoint.password).startswith(b"+OK")
            client.quit()


MTLS_CELLS = [c for c in CELLS if c.auth.client_cert]


@pytest.mark.parametrize("endpoint", MTLS_CELLS, ids=ids(MTLS_CELLS), indirect=True)
def test_mutual_tls_wants_a_certificate_from_the_session_ca(
    server: CourierServer, pki: SessionPKI, endpoint: Endpoint
) -> None:
    """The session client certificate completes the handshake; none, or one from a foreign CA, is refused in
    it (TLS_VERIFYPEER=REQUIREPEER); the same certificate-less client is fine on the cell without mTLS."""
    with server_side(server, endpoint):
        assert handshake(endpoint, context(endpoint)).version
        for ctx in (context(endpoint, client_cert=False), foreign_context(endpoint, pki)):
            # Refused in the handshake, or (TLS 1.3: the client's certificate is judged after the client's
            # Finished) by closing the connection before the first exchange.
            with pytest.raises((ssl.SSLError, ConnectionError, ProtocolError)):
                handshake(endpoint, ctx)
    twin = find(server, endpoint.id.removesuffix("-mtls"))
    assert handshake(twin, context(twin, client_cert=False)).version


# --------------------------------------------------------------------------- mailbox and logs


def test_mail_in_the_maildir_is_read_over_imap_and_pop3(server: CourierServer) -> None:
    imap = find(server, "courier-imaps-implicit-intermediate-valid")
    pop3 = find(server, "courier-pop3s-implicit-intermediate-valid")
    before = login(imap)
    assert imap.mailbox is not None and imap.mailbox == pop3.mailbox
    msg = EmailMessage()
    msg["From"] = "sender@mailtls.test"
    msg["To"] = imap.username
    msg["Subject"] = subject = f"courier {uuid.uuid4().hex}"
    msg.set_content("hello\n")
    capture.ensure_maildir(imap.mailbox)
    written = Path(imap.mailbox) / "new" / f"{uuid.uuid4().hex}.mailtls"
    written.write_bytes(msg.as_bytes())
    server.container.push(written)  # copy mode (a remote engine): the live Maildir is in the container
    assert login(imap) == before + 1
    assert login(pop3) == before + 1
    assert subject in [str(m["Subject"]) for m in imap.messages()]


def test_log_lines_belong_to_their_cell(server: CourierServer) -> None:
    one = find(server, "courier-imaps-implicit-modern-valid")
    other = find(server, "courier-pop3s-implicit-modern-valid")
    login(one)
    lines = server.cell_logs(one.id)
    assert any("LOGIN" in line and one.username in line for line in lines), lines
    assert all(line.startswith(f"{one.id}: ") for line in lines)
    assert not any(line in lines for line in server.cell_logs(other.id))
