"""Every Postfix cell of the default matrix, served by ONE real Postfix container.

Each test talks to the container through its published 127.0.0.1 port, like a
client would, and checks both sides of each rule: what the cell must accept
works, what it must refuse fails with the matching error. A failing test shows
the server's log lines for its cell.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_mailtls import capture
from pytest_mailtls.backends import postfix as postfix_backend
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.postfix import PostfixBackend, PostfixServer
from pytest_mailtls.connect import ProtocolError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, VERSIONS, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

from .cellchecks import (
    cells_param,
    check_certificate,
    check_cipher_list,
    check_protocol_version,
    check_starttls_required,
    check_tls_mode,
    connect,
    context,
    find,
    foreign_context,
    handshake,
    message,
    needs_engine,
    send_from_two_cells,
    serve,
    served,
    server_side,
    smtp_session,
    start_fails,
    subjects,
    tagged,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    # Legacy protocol versions are the point of several cells; Python warns about naming them.
    pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"),
]

MATRIX_CELLS = load_matrix().cells(servers=["postfix"])
# Two cells beyond the default matrix, in the same container: TLS 1.3 suites and CRAM-MD5.
CHACHA_ONLY = Cell(
    "postfix",
    SERVICES["smtps"],
    Mode.IMPLICIT,
    TLSPolicy("tls13-chacha", "TLSv1.3", "TLSv1.3", ciphersuites="TLS_CHACHA20_POLY1305_SHA256"),
    CertProfile.VALID,
)
CRAM_ONLY = Cell(
    "postfix",
    SERVICES["submission"],
    Mode.STARTTLS,
    TLSPolicy("intermediate"),
    CertProfile.VALID,
    AuthPolicy("cram", ("CRAM-MD5",)),
)
CELLS = [*MATRIX_CELLS, CHACHA_ONLY, CRAM_ONLY]
TLS_CELLS = [c for c in CELLS if c.tls]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("postfix-pki"))


@pytest.fixture(scope="module")
def server(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixServer]:
    yield from serve(
        lambda: PostfixBackend().start(CELLS, StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("postfix")))
    )


@pytest.fixture
def endpoint(server: PostfixServer, request: pytest.FixtureRequest) -> Endpoint:
    """The endpoint serving the cell the test is parametrized with (indirectly, by cell)."""
    return find(server, request.param.id)


# --------------------------------------------------------------------------- helpers


def advertised(client: smtplib.SMTP) -> set[str]:
    return set(client.esmtp_features.get("auth", "").upper().split())


def refused(endpoint: Endpoint, ctx: ssl.SSLContext) -> str | None:
    """Try a session (handshake, EHLO, NOOP); return how the server refused it, or None if it did not."""
    try:
        client = connect(endpoint, ctx=ctx)
    except (ssl.SSLError, smtplib.SMTPServerDisconnected, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except smtplib.SMTPResponseException as exc:
        return f"{exc.smtp_code} {exc.smtp_error!r}"
    try:
        code, text = client.noop()
    except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    return f"{code} {text!r}" if code >= 400 else None


# --------------------------------------------------------------------------- protocol versions


@pytest.mark.parametrize("version", VERSIONS)
@cells_param(TLS_CELLS)
def test_protocol_version(server: PostfixServer, endpoint: Endpoint, version: str) -> None:
    """A handshake pinned to ``version`` completes exactly where the cell's policy accepts it."""
    check_protocol_version(server, endpoint, version)


# --------------------------------------------------------------------------- certificates


@cells_param(TLS_CELLS)
def test_certificate(server: PostfixServer, endpoint: Endpoint) -> None:
    """A verifying client accepts valid certificates and names each fault; without verification all connect."""
    check_certificate(server, endpoint)


# --------------------------------------------------------------------------- TLS mode


@cells_param(CELLS)
def test_wrong_mode_fails(server: PostfixServer, endpoint: Endpoint) -> None:
    """Implicit TLS against a STARTTLS/plain port and plaintext against an implicit port both fail;
    the cell's own mode works."""
    check_tls_mode(server, endpoint, _plain_port)


def _plain_port(endpoint: Endpoint, ctx: ssl.SSLContext) -> None:
    with pytest.raises(ProtocolError, match="STARTTLS is not offered"):
        handshake(endpoint, ctx)
    client = connect(endpoint)
    assert client.docmd("STARTTLS")[0] == 502
    assert client.noop()[0] == 250
    client.quit()


@cells_param([c for c in CELLS if c.mode is Mode.STARTTLS_REQUIRED])
def test_starttls_required_refuses_plaintext_mail(server: PostfixServer, endpoint: Endpoint) -> None:
    """MAIL before STARTTLS gets 530; after STARTTLS (and AUTH) the same MAIL is accepted."""
    check_starttls_required(server, endpoint)


# --------------------------------------------------------------------------- AUTH


@cells_param(CELLS)
def test_auth_advertised(server: PostfixServer, endpoint: Endpoint) -> None:
    """AUTH lists exactly the cell's mechanisms, and before TLS only where the policy allows cleartext."""
    auth = endpoint.auth
    mechanisms = set(auth.mechanisms)
    with server_side(server, endpoint):
        if endpoint.mode is not Mode.IMPLICIT:
            client = connect(endpoint, starttls=False)
            assert advertised(client) == (set() if auth.tls_only else mechanisms)
            client.quit()
        if endpoint.cell.tls:
            client = connect(endpoint)
            assert advertised(client) == mechanisms
            client.quit()


@cells_param([c for c in CELLS if c.auth.mechanisms])
def test_auth_mechanisms(server: PostfixServer, endpoint: Endpoint) -> None:
    """Every offered mechanism takes the test user's password; a wrong password gets 535."""
    with server_side(server, endpoint):
        for mechanism in endpoint.auth.mechanisms:
            client = connect(endpoint)
            client.user, client.password = endpoint.username, endpoint.password
            method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
            code, _ = client.auth(mechanism, method)
            assert code == 235, mechanism
            client.quit()
        client = connect(endpoint)
        with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
            client.login(endpoint.username, endpoint.password + "-wrong")
        assert caught.value.smtp_code == 535
        client.quit()


# --------------------------------------------------------------------------- sending and capture


@cells_param(CELLS)
def test_send_and_capture(server: PostfixServer, endpoint: Endpoint) -> None:
    """Where auth is required MAIL gets 530 until AUTH; every accepted message lands in the cell's own
    Maildir, for any recipient, with the original recipient kept."""
    tag = f"capture {uuid.uuid4().hex}"
    recipient = f"someone-{uuid.uuid4().hex[:8]}@example.org"
    with server_side(server, endpoint):
        client = smtp_session(endpoint)
        assert client.send_message(message(endpoint, recipient, tag)) == {}
        client.quit()
        wait_for(lambda: tag in subjects(endpoint), what=f"{tag!r} in {endpoint.mailbox}")
        received = next(m for m in endpoint.messages() if m["Subject"] == tag)
        assert received["X-Original-To"] == recipient
        files = [p for p in Path(endpoint.mailbox or "").joinpath("new").iterdir() if p.is_file()]
        assert files and all(p.stat().st_uid in (5000, os.getuid()) for p in files)


def test_mail_is_attributed_to_the_cell_that_received_it(server: PostfixServer) -> None:
    """Two cells take mail at the same time; each Maildir holds exactly its own messages."""
    first = find(server, "postfix-smtp-plain-open")
    second = find(server, "postfix-submission-starttls-intermediate-valid")
    run, sent = send_from_two_cells(first, second)
    assert not tagged(first, run) & sent[second.id]
    assert not tagged(second, run) & sent[first.id]
    unattributed = Path(first.mailbox or "").parent / "unattributed"
    assert not [s for s in capture.read_maildir(unattributed) if str(s["Subject"]).startswith(run)]


def test_sixty_concurrent_connections_on_one_port(server: PostfixServer) -> None:
    """60 clients from the same address hold sessions at once (no anvil limit, no tarpit) and each sends."""
    endpoint = find(server, "postfix-smtp-starttls-intermediate-valid-open")
    n = 60
    run = uuid.uuid4().hex[:8]
    barrier = threading.Barrier(n, timeout=60)
    greetings: list[int] = []
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            smtp = smtplib.SMTP(timeout=30)
            smtp._host = endpoint.server_hostname  # type: ignore[attr-defined]
            code, _ = smtp.connect(endpoint.host, endpoint.port)
            greetings.append(code)
            barrier.wait()  # every session is open at this point
            smtp.starttls(context=context(endpoint))
            smtp.send_message(message(endpoint, f"burst-{i}@example.org", f"{run} {i}"))
            smtp.quit()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    with server_side(server, endpoint):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert not errors, errors[:3]
        assert greetings == [220] * n
        wait_for(lambda: sum(s.startswith(run) for s in subjects(endpoint)) == n, what=f"{n} deliveries")


# --------------------------------------------------------------------------- mutual TLS


@cells_param([c for c in CELLS if c.auth.client_cert])
def test_client_certificate_required(server: PostfixServer, endpoint: Endpoint, pki: SessionPKI) -> None:
    """No certificate or a foreign one: refused with the reason in the server log; the session's one: served."""
    with server_side(server, endpoint):
        assert refused(endpoint, context(endpoint)) is None
        bare = context(endpoint, client_cert=False)
        assert refused(endpoint, bare) is not None
        assert refused(endpoint, foreign_context(endpoint, pki)) is not None

        def logged(words: str) -> Callable[[], bool]:
            return lambda: any(words in line for line in server.cell_logs(endpoint.id))

        wait_for(logged("No client certificate presented"), timeout=5, what="the no-certificate log line")
        wait_for(logged("Client certificate not trusted"), timeout=5, what="the untrusted-certificate log line")


# --------------------------------------------------------------------------- ciphers


@cells_param([c for c in TLS_CELLS if c.policy and c.policy.ciphers and "ALL" not in c.policy.ciphers])
def test_cipher_list(server: PostfixServer, endpoint: Endpoint) -> None:
    """A cipher of the policy's list is negotiated; one outside it is refused; Python's default list works
    exactly when it shares a cipher with the policy (the single-cipher cell refuses it)."""
    check_cipher_list(server, endpoint, "AES128-SHA:AES256-SHA")


def test_tls13_suites_per_listener(server: PostfixServer) -> None:
    """The cell whose policy names one TLS 1.3 suite negotiates it; a default TLS 1.3 cell picks another."""
    by_id = {e.id: e for e in server.endpoints}
    chacha, modern = by_id[CHACHA_ONLY.id], by_id["postfix-smtps-implicit-modern-valid"]
    with server_side(server, chacha):
        assert handshake(chacha, context(chacha, "TLSv1.3")).cipher == "TLS_CHACHA20_POLY1305_SHA256"
        assert handshake(modern, context(modern, "TLSv1.3")).cipher != "TLS_CHACHA20_POLY1305_SHA256"


# --------------------------------------------------------------------------- logs and failures


def test_cell_logs_hold_only_that_cell(server: PostfixServer) -> None:
    """cell_logs() returns the cell's own smtpd lines and the delivery of its mail, not other cells' lines."""
    by_id = {e.id: e for e in server.endpoints}
    endpoint, other = by_id["postfix-smtp-plain-open"], by_id["postfix-smtps-implicit-modern-valid"]
    tag = f"logs {uuid.uuid4().hex}"
    client = connect(endpoint)
    client.send_message(message(endpoint, "logged@example.org", tag))
    client.quit()
    wait_for(lambda: tag in subjects(endpoint), what="the delivery")
    wait_for(
        lambda: any("status=sent" in line for line in server.cell_logs(endpoint.id)), timeout=5, what="delivery log"
    )
    lines = server.cell_logs(endpoint.id)
    assert any(f"postfix/{endpoint.id}/smtpd[" in line for line in lines)
    assert not any(f"postfix/{other.id}/" in line for line in lines)
    assert "daemon started" in server.logs()
    with pytest.raises(KeyError):
        server.cell_logs("postfix-no-such-cell")


def test_failed_start_raises_with_log_and_leaves_no_container(
    pki: SessionPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that dies on start (here: a main.cf Postfix rejects) fails fast with ServerStartError
    carrying the container log, and the container is gone."""
    needs_engine()
    monkeypatch.setattr(postfix_backend, "_main_cf", lambda **_: "this line is no parameter\n")
    error = start_fails(
        lambda: PostfixBackend().start([CRAM_ONLY], StartOptions(pki=pki, workdir=tmp_path, ready_timeout=30)),
        within=20,
        what="container",
    )
    assert "fatal: /etc/postfix/main.cf, line 1" in error.log


def test_bare_user_name_and_awkward_password(pki: SessionPKI, tmp_path: Path) -> None:
    """A user name without a domain and a password with ':', spaces and quotes log in with every mechanism;
    the same password under user@domain (another SASL realm) does not."""
    needs_engine()
    every = Cell(
        "postfix",
        SERVICES["submission"],
        Mode.STARTTLS,
        TLSPolicy("intermediate"),
        CertProfile.VALID,
        AuthPolicy("all-mechanisms", ("PLAIN", "LOGIN", "CRAM-MD5")),
    )
    password = "p:ss w0rd 'quoted' $HOME"
    options = StartOptions(pki=pki, workdir=tmp_path, username="tester", password=password)
    with served(lambda: PostfixBackend().start([every], options)) as running:
        endpoint = running.endpoints[0]
        with server_side(running, endpoint):
            for mechanism in ("PLAIN", "LOGIN", "CRAM-MD5"):
                client = connect(endpoint)
                client.user, client.password = "tester", password
                code, _ = client.auth(mechanism, getattr(client, "auth_" + mechanism.lower().replace("-", "_")))
                assert code == 235, mechanism
                client.quit()
            client = connect(endpoint)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("tester@mailtls.test", password)
            client.close()
