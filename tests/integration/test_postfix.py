"""Every Postfix cell of the default matrix, served by ONE real Postfix container.

Each test talks to the container through its published 127.0.0.1 port, like a
client would, and checks both sides of each rule: what the cell must accept
works, what it must refuse fails with the matching error. A failing test shows
the server's log lines for its cell.
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from pytest_mailtls import capture, runtime
from pytest_mailtls.backends import postfix as postfix_backend
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.postfix import PostfixBackend, PostfixServer
from pytest_mailtls.connect import HandshakeResult, ProtocolError, open_client, tls_handshake
from pytest_mailtls.errors import ServerStartError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import LEGACY_VERSIONS, SERVICES, VERSIONS, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

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

# What a verifying client must report for each faulty certificate (OpenSSL's words).
CERT_ERRORS = {
    CertProfile.EXPIRED: "certificate has expired",
    CertProfile.NOT_YET_VALID: "certificate is not yet valid",
    CertProfile.WRONG_HOST: "Hostname mismatch",
    CertProfile.SELF_SIGNED: "self-signed certificate",
    CertProfile.UNTRUSTED_CA: "unable to get local issuer certificate",
    CertProfile.MISSING_INTERMEDIATE: "unable to get local issuer certificate",
    CertProfile.WEAK_RSA_1024: "key too weak",
    CertProfile.SHA1_SIGNATURE: "digest algorithm too weak",
}
# How OpenSSL reports a version the server will not speak: the server's alert, the client's own refusal
# of the version the server picked, or (server max < client min) no cipher usable at the picked version.
VERSION_FAILURES = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "SSLV3_ALERT_HANDSHAKE_FAILURE"}
DELIVERY_TIMEOUT = 15.0
TLS_VERSIONS = {v: getattr(ssl.TLSVersion, v.replace(".", "_")) for v in VERSIONS}


def ids(cells: list[Cell]) -> list[str]:
    return [c.id for c in cells]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("postfix-pki"))


@pytest.fixture(scope="module")
def server(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostfixServer]:
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)
    running = PostfixBackend().start(CELLS, StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("postfix")))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def endpoint(server: PostfixServer, request: pytest.FixtureRequest) -> Endpoint:
    """The endpoint serving the cell the test is parametrized with (indirectly, by cell)."""
    cell: Cell = request.param
    return next(e for e in server.endpoints if e.id == cell.id)


@contextlib.contextmanager
def server_side(server: PostfixServer, endpoint: Endpoint) -> Iterator[None]:
    """Attach the cell's server log lines to any failure inside the block."""
    try:
        yield
    except Exception as exc:
        lines = server.cell_logs(endpoint.id)[-40:]
        exc.add_note(f"server log of {endpoint.id} ({len(lines)} last lines):\n" + "\n".join(lines))
        raise


def cells_param(cells: list[Cell]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("endpoint", cells, ids=ids(cells), indirect=True)


# --------------------------------------------------------------------------- helpers


def context(
    endpoint: Endpoint,
    version: str | None = None,
    *,
    verify: bool | None = None,
    ciphers: str | None = None,
    client_cert: bool | None = None,
) -> ssl.SSLContext:
    """A client context for ``endpoint`` as a well-configured client would build it: the policy's cipher
    list (so the single-cipher cell is reachable), the policy's version range unless ``version`` pins one,
    security level 0 where legacy versions are in play, verification where the certificate verifies."""
    policy = endpoint.policy
    assert policy is not None and endpoint.cert is not None
    if ciphers is None:
        ciphers = policy.ciphers
    if version in LEGACY_VERSIONS or (version is None and policy.legacy):
        ciphers = ciphers or "DEFAULT"
        if "@SECLEVEL" not in ciphers:
            ciphers += ":@SECLEVEL=0"
    ctx = endpoint.client_context(
        version,
        ciphers=ciphers,
        verify=endpoint.cert.verifies if verify is None else verify,
        client_cert=client_cert,
    )
    if version is None:
        ctx.minimum_version = TLS_VERSIONS[policy.min_version]
        ctx.maximum_version = TLS_VERSIONS[policy.max_version]
    return ctx


def handshake(endpoint: Endpoint, ctx: ssl.SSLContext, *, implicit: bool | None = None) -> HandshakeResult:
    return tls_handshake(
        endpoint.host,
        endpoint.port,
        protocol="smtp",
        implicit=endpoint.mode is Mode.IMPLICIT if implicit is None else implicit,
        context=ctx,
        server_hostname=endpoint.server_hostname,
        timeout=5.0,
    )


def session_context(endpoint: Endpoint) -> ssl.SSLContext | None:
    """A context a well-configured client would use to do business with the cell (no cert checks here)."""
    return context(endpoint, verify=False) if endpoint.cell.tls else None


def connect(endpoint: Endpoint, *, starttls: bool | None = None, ctx: ssl.SSLContext | None = None) -> smtplib.SMTP:
    if ctx is None:
        ctx = session_context(endpoint) or ssl.create_default_context()
    client: smtplib.SMTP = open_client(endpoint, context=ctx, starttls=starttls, timeout=10.0)
    return client


def advertised(client: smtplib.SMTP) -> set[str]:
    return set(client.esmtp_features.get("auth", "").upper().split())


def message(endpoint: Endpoint, recipient: str, tag: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = endpoint.address
    msg["To"] = recipient
    msg["Subject"] = tag
    msg.set_content(f"sent to {endpoint.id}\n")
    return msg


def wait_for(predicate: Callable[[], bool], *, timeout: float = DELIVERY_TIMEOUT, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


def subjects(endpoint: Endpoint) -> list[str]:
    return [str(m["Subject"]) for m in endpoint.messages()]


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
    with server_side(server, endpoint):
        # OpenSSL's whole default list (it has the single-cipher cell's static-RSA cipher, Python's has not):
        # a client pinned to TLSv1 must have ciphers that exist in TLSv1 to ask with.
        ctx = context(endpoint, version, ciphers="DEFAULT")
        if endpoint.cell.accepts_version(version):
            result = handshake(endpoint, ctx)
            assert result.version == version
        else:
            with pytest.raises(ssl.SSLError) as caught:
                handshake(endpoint, ctx)
            assert not isinstance(caught.value, ssl.SSLCertVerificationError)
            assert caught.value.reason in VERSION_FAILURES, caught.value


# --------------------------------------------------------------------------- certificates


@cells_param(TLS_CELLS)
def test_certificate(server: PostfixServer, endpoint: Endpoint) -> None:
    """A verifying client accepts valid certificates and names each fault; without verification all connect."""
    cert = endpoint.cert
    assert cert is not None and endpoint.policy is not None
    top = endpoint.policy.max_version
    with server_side(server, endpoint):
        verifying = context(endpoint, top, verify=True)
        if cert.verifies:
            assert handshake(endpoint, verifying).version == top
        else:
            with pytest.raises(ssl.SSLCertVerificationError, match=CERT_ERRORS[cert]):
                handshake(endpoint, verifying)
        assert handshake(endpoint, context(endpoint, top, verify=False)).version == top


# --------------------------------------------------------------------------- TLS mode


@cells_param(CELLS)
def test_wrong_mode_fails(server: PostfixServer, endpoint: Endpoint) -> None:
    """Implicit TLS against a STARTTLS/plain port and plaintext against an implicit port both fail;
    the cell's own mode works."""
    with server_side(server, endpoint):
        if endpoint.mode is Mode.IMPLICIT:
            assert handshake(endpoint, context(endpoint)).greeting.banner
            # A STARTTLS client speaks plaintext first: the server reads it as a broken ClientHello and hangs up.
            with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
                sock.sendall(b"EHLO mailtls.client\r\n")
                answer = sock.recv(64)
            assert not answer.startswith((b"220", b"250")), answer
            assert answer == b"" or answer[:1] == b"\x15", answer  # closed, or a TLS alert
            return
        ctx = context(endpoint) if endpoint.cell.tls else endpoint.client_context(verify=False)
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
            handshake(endpoint, ctx, implicit=True)
        if endpoint.mode is Mode.PLAIN:
            with pytest.raises(ProtocolError, match="STARTTLS is not offered"):
                handshake(endpoint, ctx)
            client = connect(endpoint)
            assert client.docmd("STARTTLS")[0] == 502
            assert client.noop()[0] == 250
            client.quit()
        else:
            assert handshake(endpoint, ctx).version


@cells_param([c for c in CELLS if c.mode is Mode.STARTTLS_REQUIRED])
def test_starttls_required_refuses_plaintext_mail(server: PostfixServer, endpoint: Endpoint) -> None:
    """MAIL before STARTTLS gets 530; after STARTTLS (and AUTH) the same MAIL is accepted."""
    with server_side(server, endpoint):
        client = connect(endpoint, starttls=False)
        code, text = client.mail(endpoint.address)
        assert (code, b"Must issue a STARTTLS command first" in text) == (530, True), text
        client.quit()
        client = connect(endpoint)
        client.login(endpoint.username, endpoint.password)
        assert client.mail(endpoint.address)[0] == 250
        client.quit()


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
        client = connect(endpoint)
        if endpoint.auth.required:
            code, text = client.mail(endpoint.address)
            assert (code, b"Authentication required" in text) == (530, True), text
            client.rset()
            client.login(endpoint.username, endpoint.password)
        assert client.send_message(message(endpoint, recipient, tag)) == {}
        client.quit()
        wait_for(lambda: tag in subjects(endpoint), what=f"{tag!r} in {endpoint.mailbox}")
        received = next(m for m in endpoint.messages() if m["Subject"] == tag)
        assert received["X-Original-To"] == recipient
        files = [p for p in Path(endpoint.mailbox or "").joinpath("new").iterdir() if p.is_file()]
        assert files and all(p.stat().st_uid in (5000, os.getuid()) for p in files)


def test_mail_is_attributed_to_the_cell_that_received_it(server: PostfixServer) -> None:
    """Two cells take mail at the same time; each Maildir holds exactly its own messages."""
    by_id = {e.id: e for e in server.endpoints}
    first = by_id["postfix-smtp-plain-open"]
    second = by_id["postfix-submission-starttls-intermediate-valid"]
    run = uuid.uuid4().hex[:8]
    sent: dict[str, set[str]] = {first.id: set(), second.id: set()}
    errors: list[BaseException] = []

    def send(endpoint: Endpoint, n: int) -> None:
        try:
            client = connect(endpoint)
            if endpoint.auth.required:
                client.login(endpoint.username, endpoint.password)
            tag = f"{run} {endpoint.id} {n}"
            client.send_message(message(endpoint, "shared-recipient@example.org", tag))
            client.quit()
            sent[endpoint.id].add(tag)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(ep, n)) for n in range(10) for ep in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors

    def mine(endpoint: Endpoint) -> set[str]:
        return {s for s in subjects(endpoint) if s.startswith(run)}

    wait_for(lambda: mine(first) == sent[first.id] and mine(second) == sent[second.id], what="20 deliveries")
    assert len(sent[first.id]) == len(sent[second.id]) == 10
    assert not mine(first) & sent[second.id]
    assert not mine(second) & sent[first.id]
    unattributed = Path(first.mailbox or "").parent / "unattributed"
    assert not [s for s in capture.read_maildir(unattributed) if str(s["Subject"]).startswith(run)]


def test_sixty_concurrent_connections_on_one_port(server: PostfixServer) -> None:
    """60 clients from the same address hold sessions at once (no anvil limit, no tarpit) and each sends."""
    endpoint = next(e for e in server.endpoints if e.id == "postfix-smtp-starttls-intermediate-valid-open")
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
        foreign = context(endpoint, client_cert=False)
        files = pki.foreign_client_files()
        foreign.load_cert_chain(files.cert_file, files.key_file)
        assert refused(endpoint, foreign) is not None

        def logged(words: str) -> Callable[[], bool]:
            return lambda: any(words in line for line in server.cell_logs(endpoint.id))

        wait_for(logged("No client certificate presented"), timeout=5, what="the no-certificate log line")
        wait_for(logged("Client certificate not trusted"), timeout=5, what="the untrusted-certificate log line")


# --------------------------------------------------------------------------- ciphers


def _ciphers(spec: str) -> list[dict[str, str]]:
    """The TLS <= 1.2 ciphers an OpenSSL cipher string selects (name, auth, ...)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers(spec if "@SECLEVEL" in spec else spec + ":@SECLEVEL=0")
    return [{k: str(v) for k, v in c.items()} for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


@cells_param([c for c in TLS_CELLS if c.policy and c.policy.ciphers and "ALL" not in c.policy.ciphers])
def test_cipher_list(server: PostfixServer, endpoint: Endpoint) -> None:
    """A cipher of the policy's list is negotiated; one outside it is refused; Python's default list works
    exactly when it shares a cipher with the policy (the single-cipher cell refuses it)."""
    policy = endpoint.policy
    assert policy is not None and policy.ciphers is not None and endpoint.cert is not None
    allowed = _ciphers(policy.ciphers)
    auth = "auth-ecdsa" if endpoint.cert.key_type == "ecdsa" else "auth-rsa"
    usable = next(c["name"] for c in allowed if c["auth"] == auth)
    outsider = next(c["name"] for c in _ciphers("AES128-SHA:AES256-SHA") if c["name"] not in allowed)
    with server_side(server, endpoint):
        assert handshake(endpoint, context(endpoint, "TLSv1.2", ciphers=usable)).cipher == usable
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            handshake(endpoint, context(endpoint, "TLSv1.2", ciphers=outsider))
        default = endpoint.client_context("TLSv1.2", verify=endpoint.cert.verifies)
        shared = {c["name"] for c in default.get_ciphers()} & {c["name"] for c in allowed}
        if shared:
            assert handshake(endpoint, default).cipher in shared
        else:
            with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
                handshake(endpoint, default)


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
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)
    monkeypatch.setattr(postfix_backend, "_MAIN_CF", "this line is no parameter\n")
    client = runtime.docker_client()
    label = {"label": [f"{runtime.LABEL}.session={runtime.SESSION_ID}"]}
    before = {c.id for c in client.containers.list(all=True, filters=label)}
    started = time.monotonic()
    with pytest.raises(ServerStartError) as caught:
        PostfixBackend().start([CRAM_ONLY], StartOptions(pki=pki, workdir=tmp_path, ready_timeout=30))
    assert time.monotonic() - started < 20, "a dead container must not be waited on until the deadline"
    assert "fatal: /etc/postfix/main.cf, line 1" in caught.value.log
    after = {c.id for c in client.containers.list(all=True, filters=label)}
    assert after <= before


def test_bare_user_name_and_awkward_password(pki: SessionPKI, tmp_path: Path) -> None:
    """A user name without a domain and a password with ':', spaces and quotes log in with every mechanism;
    the same password under user@domain (another SASL realm) does not."""
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)
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
    running = PostfixBackend().start([every], options)
    endpoint = running.endpoints[0]
    try:
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
    finally:
        running.stop()
