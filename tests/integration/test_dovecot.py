"""Every Dovecot cell of the default matrix, served by ONE real Dovecot container.

Each test talks to the container through its published 127.0.0.1 port, as a client would, and checks both
sides of each rule: what the cell must accept works, what it must refuse fails with the matching error,
and refusals of protocol versions and ciphers are the server's (its log for that cell says so). A failing
test shows the server's log lines for its cell.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import imaplib
import poplib
import smtplib
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pytest_mailtls import runtime
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.dovecot import MECHANISMS, DovecotBackend, DovecotServer, mint_jwt
from pytest_mailtls.connect import ProtocolError, open_client, plain_exchange
from pytest_mailtls.errors import ServerStartError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, VERSIONS, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

from .cellchecks import (
    CERT_ERRORS,
    break_dovecot_render,
    check_certificate,
    find,
    handshake,
    ids,
    needs_engine,
    serve,
    server_side,
)

pytestmark = [
    pytest.mark.integration,
    # Legacy protocol versions are the point of several cells; Python warns about naming them.
    pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"),
]

MATRIX_CELLS = load_matrix().cells(servers=["dovecot"])
INTERMEDIATE = next(c.policy for c in MATRIX_CELLS if c.policy is not None and c.policy.name == "intermediate")
SASL_ALL = AuthPolicy("sasl-all", MECHANISMS)
CLEARTEXT = AuthPolicy("cleartext-auth", tls_only=False)
# Cells beyond the default matrix, in the same container: every SASL mechanism (the default grid declares
# PLAIN and LOGIN only, so there they must be refused), a STARTTLS port that takes passwords before TLS,
# and TLS 1.3 restricted to one suite.
EXTRA_CELLS = [
    Cell("dovecot", SERVICES["imaps"], Mode.IMPLICIT, INTERMEDIATE, CertProfile.VALID, SASL_ALL),
    Cell("dovecot", SERVICES["pop3s"], Mode.IMPLICIT, INTERMEDIATE, CertProfile.VALID, SASL_ALL),
    Cell("dovecot", SERVICES["imap"], Mode.STARTTLS, INTERMEDIATE, CertProfile.VALID, SASL_ALL),
    Cell("dovecot", SERVICES["pop3"], Mode.STARTTLS, INTERMEDIATE, CertProfile.VALID, CLEARTEXT),
    Cell(
        "dovecot",
        SERVICES["imaps"],
        Mode.IMPLICIT,
        TLSPolicy("tls13-chacha", "TLSv1.3", "TLSv1.3", ciphersuites="TLS_CHACHA20_POLY1305_SHA256"),
        CertProfile.VALID,
    ),
]
CELLS = [*MATRIX_CELLS, *EXTRA_CELLS]
TLS_CELLS = [c for c in CELLS if c.tls]
STARTTLS_CELLS = [c for c in CELLS if c.mode in (Mode.STARTTLS, Mode.STARTTLS_REQUIRED)]

# A client that offers every cipher OpenSSL has, so that only the server's version rules decide.
EVERY_CIPHER = "ALL:eNULL:@SECLEVEL=0"  # eNULL: ALL leaves NULL encryption out
LOGIN_ERRORS = (imaplib.IMAP4.error, poplib.error_proto)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("dovecot-pki"))


@pytest.fixture(scope="module")
def server(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    yield from serve(
        lambda: DovecotBackend().start(CELLS, StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("dovecot")))
    )


@pytest.fixture
def endpoint(server: DovecotServer, request: pytest.FixtureRequest) -> Endpoint:
    """The endpoint serving the cell the test is parametrized with (indirectly, by cell)."""
    return find(server, request.param.id)


@contextlib.contextmanager
def session(endpoint: Endpoint, **options: Any) -> Iterator[Any]:
    """An imaplib/poplib client for the cell (``open_client`` options), closed however the block ends."""
    client = open_client(endpoint, **options)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.shutdown() if endpoint.protocol == "imap" else client.close()


_host_sockets = pytest.mark.skipif(
    runtime.copies_files(),
    reason="copy mode (a remote engine or MAILTLS_COPY_FILES=1): Dovecot's sockets are on the engine, not here",
)


def wait_for_log(server: DovecotServer, cell_id: str, predicate: Callable[[list[str]], bool]) -> list[str]:
    """The cell's log lines once ``predicate`` holds (Dovecot's log process writes a moment later)."""
    deadline = time.monotonic() + 5.0
    while True:
        lines = server.cell_logs(cell_id)
        if predicate(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def working_context(endpoint: Endpoint, *, client_cert: bool | None = None) -> ssl.SSLContext:
    """A client that completes a handshake with the cell: any version, every cipher, verifying only
    certificates that are meant to verify; the session client certificate on mTLS cells."""
    ctx = endpoint.client_context(verify=endpoint.cert is not None and endpoint.cert.verifies, client_cert=client_cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers(EVERY_CIPHER)
    return ctx


def login(endpoint: Endpoint, *, password: str | None = None, context: ssl.SSLContext | None = None) -> str:
    """Log in as the test user and touch the mailbox; return the server's reply. Raises on refusal."""
    secret = password if password is not None else endpoint.password
    with session(endpoint, context=context if context is not None else working_context(endpoint)) as client:
        if endpoint.protocol == "imap":
            _, data = client.login(endpoint.username, secret)
            assert client.select("INBOX")[0] == "OK"
            client.logout()
            return data[0].decode()
        client.user(endpoint.username)
        reply = client.pass_(secret).decode()
        client.stat()
        client.quit()
        return reply


def sasl(endpoint: Endpoint, mechanism: str, initial: Callable[[bytes], bytes]) -> None:
    """Authenticate with ``mechanism`` after TLS (IMAP AUTHENTICATE / POP3 AUTH); raise when refused."""
    with session(endpoint, context=working_context(endpoint)) as client:
        if endpoint.protocol == "imap":
            client.authenticate(mechanism, initial)
            client.logout()
            return
        if mechanism == "CRAM-MD5":
            challenge = client._shortcmd("AUTH CRAM-MD5")[2:]
            reply = client._shortcmd(base64.b64encode(initial(base64.b64decode(challenge))).decode())
        else:
            reply = client._shortcmd(f"AUTH {mechanism} " + base64.b64encode(initial(b"")).decode())
        assert reply.startswith(b"+OK"), reply
        client.quit()


def mechanism_response(endpoint: Endpoint, mechanism: str, token: str) -> Callable[[bytes], bytes]:
    user, password = endpoint.username, endpoint.password
    if mechanism == "PLAIN":
        return lambda _: f"\0{user}\0{password}".encode()
    if mechanism == "CRAM-MD5":
        return lambda challenge: f"{user} {hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()}".encode()
    if mechanism == "XOAUTH2":
        return lambda _: f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    if mechanism == "OAUTHBEARER":
        return lambda _: f"n,a={user},\x01auth=Bearer {token}\x01\x01".encode()
    raise ValueError(mechanism)


# --------------------------------------------------------------------------- protocol versions


@pytest.mark.parametrize("endpoint", TLS_CELLS, ids=ids(TLS_CELLS), indirect=True)
def test_each_cell_speaks_exactly_its_versions(server: DovecotServer, endpoint: Endpoint) -> None:
    """Every version TLSv1..TLSv1.3, one at a time: accepted iff the cell's policy has it, refused by the
    server (its log says the handshake, SSL_accept(), failed) otherwise. Cells with different policies
    share one container, so this proves the per-cell settings are really in force."""
    assert endpoint.cert is not None
    before = _handshake_failures(server.cell_logs(endpoint.id))
    refused = []
    with server_side(server, endpoint):
        for version in VERSIONS:
            ctx = endpoint.client_context(version, ciphers=EVERY_CIPHER, verify=endpoint.cert.verifies)
            if endpoint.cell.accepts_version(version):
                result = handshake(endpoint, ctx)
                assert result.version == version
            else:
                with pytest.raises((ssl.SSLError, ConnectionResetError)):
                    handshake(endpoint, ctx)
                refused.append(version)
        assert refused == [v for v in VERSIONS if not endpoint.cell.accepts_version(v)]
        lines = wait_for_log(server, endpoint.id, lambda ls: _handshake_failures(ls) >= before + len(refused))
        assert _handshake_failures(lines) - before == len(refused)


def _handshake_failures(lines: list[str]) -> int:
    # "SSL_accept() failed: ...unsupported protocol", or "SSL_accept() syscall failed" when the client
    # hung up on the server's alert first: both are the server refusing the handshake.
    return sum("SSL_accept()" in line for line in lines)


# --------------------------------------------------------------------------- certificates

FAULTY = [c for c in TLS_CELLS if c.cert is not None and not c.cert.fault.verifies_by_default]


@pytest.mark.parametrize("endpoint", FAULTY, ids=ids(FAULTY), indirect=True)
def test_certificate_faults_fail_verification_with_the_right_error(endpoint: Endpoint) -> None:
    assert endpoint.cert is not None
    verifying = endpoint.client_context()  # OpenSSL's level 2: weak keys and SHA-1 count as faults
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        handshake(endpoint, verifying)
    assert any(e in str(info.value.verify_message) for e in CERT_ERRORS[endpoint.cert]), info.value
    # Twin: the same server completes the handshake with a client that does not verify.
    assert handshake(endpoint, endpoint.client_context(verify=False)).version in ("TLSv1.2", "TLSv1.3")


CERT_CELLS = [c for c in TLS_CELLS if c.cert is not None and c.policy is not None]


@pytest.mark.parametrize("endpoint", CERT_CELLS, ids=ids(CERT_CELLS), indirect=True)
def test_certificate_profiles_both_ways(server: DovecotServer, endpoint: Endpoint) -> None:
    """Every profile both ways: the default client's verdict, no verification, and the fault's own check
    (a CRL-loading or strict-name client refused where OpenSSL's defaults go on)."""
    check_certificate(server, endpoint)


def test_ecdsa_cell_presents_an_ecdsa_key_and_valid_cell_an_rsa_key(server: DovecotServer) -> None:
    def key_of(cell_id: str) -> object:
        endpoint = find(server, cell_id)
        der = handshake(endpoint, endpoint.client_context()).peer_cert
        assert der is not None
        return x509.load_der_x509_certificate(der).public_key()

    assert isinstance(key_of("dovecot-imaps-implicit-intermediate-ecdsa-p256"), ec.EllipticCurvePublicKey)
    assert isinstance(key_of("dovecot-imaps-implicit-intermediate-valid"), rsa.RSAPublicKey)


# --------------------------------------------------------------------------- ciphers

NAMED_CIPHERS = [
    c for c in TLS_CELLS if c.policy is not None and c.policy.ciphers and not c.policy.ciphers.startswith("ALL")
]


@pytest.mark.parametrize("endpoint", NAMED_CIPHERS, ids=ids(NAMED_CIPHERS), indirect=True)
def test_cells_with_a_cipher_list_take_only_those_ciphers(server: DovecotServer, endpoint: Endpoint) -> None:
    """TLS 1.2 with one cipher at a time: a listed one is negotiated, an unlisted one is refused."""
    assert endpoint.policy is not None and endpoint.policy.ciphers and endpoint.cert is not None
    ecdsa = endpoint.cert.fault.key_type == "ecdsa"  # an ECDSA key (P-256 or P-384) signs with ECDSA suites only
    listed = [c for c in endpoint.policy.ciphers.split(":") if ("ECDSA" in c) == ecdsa]
    unlisted = "ECDHE-ECDSA-AES128-SHA" if ecdsa else "AES128-GCM-SHA256"
    assert unlisted not in endpoint.policy.ciphers.split(":")
    before = _handshake_failures(server.cell_logs(endpoint.id))
    with server_side(server, endpoint):
        for cipher in listed:
            ctx = endpoint.client_context("TLSv1.2", ciphers=cipher, verify=endpoint.cert.verifies)
            assert handshake(endpoint, ctx).cipher == cipher
        ctx = endpoint.client_context("TLSv1.2", ciphers=unlisted, verify=endpoint.cert.verifies)
        with pytest.raises(ssl.SSLError):
            handshake(endpoint, ctx)
        # The client offered one cipher only, so the refusal can only be the server's.
        lines = wait_for_log(server, endpoint.id, lambda ls: _handshake_failures(ls) > before)
        assert _handshake_failures(lines) == before + 1


def test_single_cipher_cell_refuses_a_default_python_client(server: DovecotServer) -> None:
    single = find(server, "dovecot-imaps-implicit-tls12-single-cipher-valid")
    with pytest.raises(ssl.SSLError):
        handshake(single, single.client_context())
    # Twin: the default client is fine with a cell whose cipher list it shares.
    tls12 = find(server, "dovecot-imaps-implicit-tls12-only-valid")
    assert handshake(tls12, tls12.client_context()).version == "TLSv1.2"


def test_tls13_suites_are_per_cell(server: DovecotServer) -> None:
    chacha = find(server, "dovecot-imaps-implicit-tls13-chacha-valid")
    modern = find(server, "dovecot-imaps-implicit-modern-valid")
    # Python offers AES-256-GCM first; only the restricted cell answers with ChaCha20.
    assert handshake(chacha, chacha.client_context()).cipher == "TLS_CHACHA20_POLY1305_SHA256"
    assert handshake(modern, modern.client_context()).cipher == "TLS_AES_256_GCM_SHA384"


# --------------------------------------------------------------------------- TLS modes

PLAINTEXT_CELLS = [c for c in CELLS if c.mode is not Mode.IMPLICIT]


@pytest.mark.parametrize("endpoint", PLAINTEXT_CELLS, ids=ids(PLAINTEXT_CELLS), indirect=True)
def test_starttls_is_offered_exactly_where_the_mode_says(endpoint: Endpoint) -> None:
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
        greeting = plain_exchange(sock, endpoint.protocol)
    assert endpoint.id in greeting.banner  # each cell greets with its own id
    assert greeting.starttls == endpoint.mode.tls
    if not endpoint.mode.tls:
        with (
            pytest.raises(ProtocolError, match="refused"),
            socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock,
        ):
            plain_exchange(sock, endpoint.protocol, starttls=True)


IMPLICIT_CELLS = [c for c in CELLS if c.mode is Mode.IMPLICIT]


@pytest.mark.parametrize("endpoint", IMPLICIT_CELLS, ids=ids(IMPLICIT_CELLS), indirect=True)
def test_implicit_cells_speak_no_plaintext(endpoint: Endpoint) -> None:
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
        sock.sendall(b"a1 CAPABILITY\r\n" if endpoint.protocol == "imap" else b"CAPA\r\n")
        reply = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(4096):
                reply += chunk
    assert b"OK" not in reply  # a TLS alert or nothing, never a greeting


# --------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("endpoint", CELLS, ids=ids(CELLS), indirect=True)
def test_the_test_user_logs_in_on_every_cell(server: DovecotServer, endpoint: Endpoint) -> None:
    with server_side(server, endpoint):
        assert "Logged in" in login(endpoint)


def test_a_wrong_password_is_refused_on_every_cell(server: DovecotServer) -> None:
    """The negative twin of the login test, on every cell at once (Dovecot answers a failure on a 0.5 s
    tick, so they run in parallel)."""

    def attempt(endpoint: Endpoint) -> str | None:
        try:
            reply = login(endpoint, password=endpoint.password + "-wrong")
        except LOGIN_ERRORS as exc:
            text = str(exc)
            return None if "AUTHENTICATIONFAILED" in text or "[AUTH]" in text else f"refused oddly: {text}"
        return f"accepted: {reply}"

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = dict(zip(ids(CELLS), pool.map(attempt, server.endpoints), strict=True))
    assert {k: v for k, v in results.items() if v} == {}


TLS_ONLY_STARTTLS = [c for c in STARTTLS_CELLS if c.auth.tls_only or c.mode is Mode.STARTTLS_REQUIRED]


@pytest.mark.parametrize("endpoint", TLS_ONLY_STARTTLS, ids=ids(TLS_ONLY_STARTTLS), indirect=True)
def test_no_authentication_before_starttls(server: DovecotServer, endpoint: Endpoint) -> None:
    """IMAP LOGIN/AUTHENTICATE and POP3 USER/AUTH are refused before STARTTLS; the same client succeeds
    after it (the twin). Pre-TLS capabilities announce no mechanism."""
    with session(endpoint, starttls=False) as client:
        if endpoint.protocol == "imap":
            assert "LOGINDISABLED" in client.capabilities
            assert not any(c.startswith("AUTH=") for c in client.capabilities)
            with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
                client.login(endpoint.username, endpoint.password)
            with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
                client.authenticate("PLAIN", mechanism_response(endpoint, "PLAIN", ""))
            client.starttls(ssl_context=working_context(endpoint))
            assert client.login(endpoint.username, endpoint.password)[0] == "OK"
            client.logout()
        else:
            assert "USER" not in client.capa()
            with pytest.raises(poplib.error_proto, match="Plaintext authentication disallowed"):
                client.user(endpoint.username)
            with pytest.raises(poplib.error_proto):
                client._shortcmd("AUTH PLAIN " + base64.b64encode(f"\0{endpoint.username}\0x".encode()).decode())
            client.stls(context=working_context(endpoint))
            client.user(endpoint.username)
            assert client.pass_(endpoint.password).startswith(b"+OK")
            client.quit()


CLEARTEXT_CELLS = [c for c in CELLS if not c.auth.tls_only and c.mode is not Mode.STARTTLS_REQUIRED]


@pytest.mark.parametrize("endpoint", CLEARTEXT_CELLS, ids=ids(CLEARTEXT_CELLS), indirect=True)
def test_cleartext_auth_cells_take_passwords_without_tls(endpoint: Endpoint) -> None:
    with session(endpoint, starttls=False) as client:
        if endpoint.protocol == "imap":
            assert "AUTH=PLAIN" in client.capabilities and "LOGINDISABLED" not in client.capabilities
            assert client.login(endpoint.username, endpoint.password)[0] == "OK"
            client.logout()
        else:
            assert "USER" in client.capa()
            client.user(endpoint.username)
            assert client.pass_(endpoint.password).startswith(b"+OK")
            client.quit()


MECHANISM_CELLS = [
    *EXTRA_CELLS[:2],
    *(
        c
        for c in MATRIX_CELLS
        if c.id in ("dovecot-imaps-implicit-modern-valid", "dovecot-pop3s-implicit-legacy-valid")
    ),
]


@pytest.mark.parametrize("endpoint", MECHANISM_CELLS, ids=ids(MECHANISM_CELLS), indirect=True)
def test_each_sasl_mechanism_works_exactly_where_declared(server: DovecotServer, endpoint: Endpoint) -> None:
    """PLAIN, CRAM-MD5, XOAUTH2 and OAUTHBEARER (token minted by the server object, checked by Dovecot
    locally): accepted on cells that declare them, refused on cells that do not."""
    token = server.mint_oauth_token()
    with server_side(server, endpoint):
        for mechanism in ("PLAIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"):
            respond = mechanism_response(endpoint, mechanism, token)
            if mechanism in endpoint.auth.mechanisms:
                sasl(endpoint, mechanism, respond)
            else:
                with pytest.raises((*LOGIN_ERRORS, AssertionError)):
                    sasl(endpoint, mechanism, respond)


@pytest.mark.parametrize("endpoint", EXTRA_CELLS[:2], ids=ids(EXTRA_CELLS[:2]), indirect=True)
def test_bad_oauth_tokens_are_refused(server: DovecotServer, endpoint: Endpoint) -> None:
    good = server.mint_oauth_token()
    sasl(endpoint, "XOAUTH2", mechanism_response(endpoint, "XOAUTH2", good))
    bad_tokens = {
        "other user": server.mint_oauth_token("someone-else@mailtls.test"),
        "expired": server.mint_oauth_token(lifetime=-120),
        "foreign key": mint_jwt(b"not the server's key, 32 bytes long", endpoint.username),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
    }
    for what, token in bad_tokens.items():
        with pytest.raises((*LOGIN_ERRORS, AssertionError)):
            sasl(endpoint, "XOAUTH2", mechanism_response(endpoint, "XOAUTH2", token))
            pytest.fail(f"a token with {what} was accepted")


def test_cram_md5_is_refused_before_tls_on_a_tls_only_starttls_cell(server: DovecotServer) -> None:
    endpoint = find(server, "dovecot-imap-starttls-intermediate-valid-sasl-all")
    client = open_client(endpoint, starttls=False)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login_cram_md5(endpoint.username, endpoint.password)
    finally:
        client.shutdown()
    client = open_client(endpoint)  # twin: after STARTTLS
    assert client.login_cram_md5(endpoint.username, endpoint.password)[0] == "OK"
    client.logout()


MTLS_CELLS = [c for c in CELLS if c.auth.client_cert]


@pytest.mark.parametrize("endpoint", MTLS_CELLS, ids=ids(MTLS_CELLS), indirect=True)
def test_mutual_tls_wants_a_certificate_from_the_session_ca(
    server: DovecotServer, pki: SessionPKI, endpoint: Endpoint
) -> None:
    """The session client certificate logs in; none, or one from a foreign CA, is refused at login
    (Dovecot asks for the certificate in the handshake but judges it at authentication)."""
    with server_side(server, endpoint):
        assert "Logged in" in login(endpoint)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            login(endpoint, context=working_context(endpoint, client_cert=False))
        foreign = pki.foreign_client_files()
        ctx = working_context(endpoint, client_cert=False)
        ctx.load_cert_chain(foreign.cert_file, foreign.key_file)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            login(endpoint, context=ctx)
    # Twin: the same certificate-less client logs in on the cell without mTLS next door.
    plain_twin = find(server, endpoint.id.removesuffix("-mtls"))
    assert "Logged in" in login(plain_twin, context=working_context(plain_twin, client_cert=False))


# --------------------------------------------------------------------------- mailboxes


def _message(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "sender@mailtls.test"
    msg["To"] = "tester@mailtls.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@mailtls.test>"
    msg.set_content(f"body of {subject}\n")
    return msg


def _imap(server: DovecotServer) -> imaplib.IMAP4:
    endpoint = find(server, "dovecot-imaps-implicit-intermediate-valid")
    client = open_client(endpoint)
    client.login(endpoint.username, endpoint.password)
    return client


def _uid_of(client: imaplib.IMAP4, subject: str) -> int:
    status, data = client.uid("SEARCH", "HEADER", "SUBJECT", f'"{subject}"')
    assert status == "OK" and data[0], f"no message with subject {subject!r}"
    return int(data[0].split()[-1])


def test_delivered_mail_is_read_flagged_and_expunged_over_imap(server: DovecotServer) -> None:
    subject = f"imap-{uuid.uuid4().hex[:8]}"
    server.deliver(_message(subject), to="anyone@mailtls.test")
    endpoint = find(server, "dovecot-imaps-implicit-intermediate-valid")
    assert subject in [m["Subject"] for m in endpoint.messages()]
    client = _imap(server)
    try:
        assert client.select("INBOX")[0] == "OK"
        uid = _uid_of(client, subject)
        _, data = client.uid("FETCH", str(uid), "(BODY.PEEK[HEADER.FIELDS (DELIVERED-TO SUBJECT)])")
        assert b"Delivered-To: anyone@mailtls.test" in data[0][1]
        before = server.mailbox_state()
        assert [m.uid for m in before.by_subject(subject)] == [uid]
        assert before.by_subject(subject)[0].flags == frozenset()
        client.uid("STORE", str(uid), "+FLAGS", r"(\Seen \Flagged $Important)")
        flagged = server.mailbox_state().by_subject(subject)
        assert flagged[0].flags == frozenset({"\\Seen", "\\Flagged", "$Important"})
        client.uid("STORE", str(uid), "+FLAGS", r"(\Deleted)")
        assert "\\Deleted" in server.mailbox_state().by_subject(subject)[0].flags
        client.expunge()
    finally:
        client.logout()
    after = server.mailbox_state()
    assert after.by_subject(subject) == []
    assert uid in after.expunged_since(before)
    assert subject not in [m["Subject"] for m in endpoint.messages()]


def test_folders_made_on_either_side_are_seen_on_the_other(server: DovecotServer) -> None:
    subject = f"folder-{uuid.uuid4().hex[:8]}"
    server.deliver(_message(subject), folder="Archive.2024")
    server.deliver(_message(subject + "-draft"), folder="Entwürfe")
    client = _imap(server)
    try:
        _, listing = client.list()
        names = {line.decode().rsplit(" ", 1)[-1].strip('"') for line in listing if isinstance(line, bytes)}
        assert {"Archive.2024", "Entw&APw-rfe"} <= names
        assert client.select('"Archive.2024"')[0] == "OK"
        _uid_of(client, subject)
        assert client.create('"Projekte.Entw&APw-rfe"')[0] == "OK"
    finally:
        client.logout()
    state = server.mailbox_state("Archive.2024")
    assert [m.subject for m in state.messages] == [subject]
    assert {"INBOX", "Archive.2024", "Entwürfe", "Projekte.Entwürfe"} <= set(state.folders)
    assert [m.subject for m in server.mailbox_state("Entwürfe").messages] == [subject + "-draft"]


def test_pop3_reads_and_deletes_delivered_mail(server: DovecotServer) -> None:
    subject = f"pop3-{uuid.uuid4().hex[:8]}"
    server.deliver(_message(subject))
    endpoint = find(server, "dovecot-pop3s-implicit-intermediate-valid")
    client = open_client(endpoint)
    client.user(endpoint.username)
    client.pass_(endpoint.password)
    count, _ = client.stat()
    found = None
    for number in range(1, count + 1):
        _, lines, _ = client.retr(number)
        if f"Subject: {subject}".encode() in lines:
            found = number
            assert f"body of {subject}".encode() in lines
    assert found is not None, f"POP3 did not list {subject}"
    client.dele(found)
    client.quit()
    assert server.mailbox_state().by_subject(subject) == []


@_host_sockets
def test_lmtp_socket_delivers_any_recipient_to_the_test_user(server: DovecotServer) -> None:
    """The hand-off a Postfix container will use: LMTP on <workdir>/sockets/lmtp, every address of any
    domain lands in the test user's INBOX, readable by the host user."""
    subject = f"lmtp-{uuid.uuid4().hex[:8]}"
    with smtplib.LMTP(str(server.lmtp_socket)) as lmtp:
        refused = lmtp.sendmail("sender@elsewhere.test", ["whoever@mailtls.test"], _message(subject).as_bytes())
    assert refused == {}
    stored = server.mailbox_state().by_subject(subject)
    assert len(stored) == 1 and stored[0].message().get_content().strip() == f"body of {subject}"
    # The same message is readable over IMAP, like any delivered one.
    client = _imap(server)
    try:
        client.select("INBOX", readonly=True)
        _uid_of(client, subject)
    finally:
        client.logout()


@_host_sockets
def test_auth_socket_answers_the_dovecot_sasl_protocol(server: DovecotServer) -> None:
    """Postfix's smtpd_sasl_type = dovecot speaks this to the auth socket: the handshake lists mechanisms."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(server.auth_socket))
        sock.sendall(b"VERSION\t1\t2\nCPID\t4242\n")
        reply = b""
        while b"DONE\n" not in reply:
            chunk = sock.recv(4096)
            assert chunk, f"auth socket closed after {reply!r}"
            reply += chunk
    mechanisms = {line.split("\t")[1] for line in reply.decode().splitlines() if line.startswith("MECH\t")}
    assert {"PLAIN", "LOGIN"} <= mechanisms


# --------------------------------------------------------------------------- logs and failures


def test_cell_logs_hold_that_cells_sessions_only(server: DovecotServer) -> None:
    one = find(server, "dovecot-pop3s-implicit-modern-valid")
    other = find(server, "dovecot-imaps-implicit-modern-valid")
    login(one)
    login(other)
    lines = wait_for_log(server, one.id, lambda ls: any("pop3(" in line for line in ls))
    own = [line for line in lines if f" {one.id}: " in line]
    sessions = {part.split(">")[0] for line in own for part in line.split("session=<")[1:]}
    last_login = next(line for line in reversed(own) if "Login: " in line).split("session=<")[1].split(">")[0]
    # The mail process's lines of that login are there, found by session id...
    assert any(f"<{last_login}>" in line and "pop3(" in line for line in lines)
    # ...and nothing else: every line is the cell's own or one of its sessions'.
    strays = [line for line in lines if line not in own and not any(f"<{s}>" in line for s in sessions)]
    assert strays == []
    # The neighbour's log holds none of it, though it logged in at the same time.
    assert not any(f"<{s}>" in line for s in sessions for line in server.cell_logs(other.id))
    assert any("imap(" in line for line in server.cell_logs(other.id))


def test_a_failed_start_leaves_nothing_behind(
    pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_engine()
    break_dovecot_render(monkeypatch)
    before = {c.id for c in runtime.running_containers()}
    with pytest.raises(ServerStartError) as info:
        DovecotBackend().start(
            MATRIX_CELLS[:2], StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("broken"), ready_timeout=20)
        )
    assert "no_such_setting" in info.value.log
    assert {c.id for c in runtime.running_containers()} == before
