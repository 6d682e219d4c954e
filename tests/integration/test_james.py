"""Every James cell of the default matrix, served by ONE real Apache James JVM in one container.

Each test talks to the container through its published 127.0.0.1 port, like a client would, and checks
both sides of each rule: what the cell must accept works, what it must refuse fails with the matching
error. A failing test shows James' log lines for its cell (the threads of that cell's server).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import imaplib
import poplib
import smtplib
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_mailtls.backends import james as james_backend
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.james import JamesBackend, JamesServer, cipher_plan, unsupported_reason
from pytest_mailtls.connect import ProtocolError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, VERSIONS, AuthPolicy, Cell, CertProfile, Mode, Protocol, TLSPolicy

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
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    # Legacy protocol versions are the point of several cells; Python warns about naming them.
    pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning"),
]

#: Every default James cell it serves (NULL encryption stays disabled in the JVM: not served).
CELLS = [c for c in load_matrix().cells(servers=["james"]) if not unsupported_reason(c)]
TLS_CELLS = [c for c in CELLS if c.tls]
SMTP_CELLS = [c for c in CELLS if c.protocol is Protocol.SMTP]

LOGIN_ERRORS = (smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto)
SESSION_ERRORS = (ssl.SSLError, OSError, EOFError, ProtocolError, *LOGIN_ERRORS)
RSS_BUDGET_KB = 600 * 1024


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("james-pki"))


@pytest.fixture(scope="module")
def server(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JamesServer]:
    yield from serve(
        lambda: JamesBackend().start(
            CELLS, StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("james"), ready_timeout=180)
        )
    )


@pytest.fixture
def endpoint(server: JamesServer, request: pytest.FixtureRequest) -> Endpoint:
    """The endpoint serving the cell the test is parametrized with (indirectly, by cell)."""
    return find(server, request.param.id)


# --------------------------------------------------------------------------- helpers


def close(client: Any) -> None:
    with contextlib.suppress(*SESSION_ERRORS):
        if isinstance(client, smtplib.SMTP):
            client.close()
        elif isinstance(client, imaplib.IMAP4):
            client.shutdown()
        else:
            client.close()


def login(endpoint: Endpoint, client: Any, *, password: str | None = None, mechanism: str | None = None) -> None:
    """Log in the test user the way the protocol does; raises one of LOGIN_ERRORS when refused."""
    secret = endpoint.password if password is None else password
    if isinstance(client, smtplib.SMTP):
        if mechanism is None:
            client.login(endpoint.username, secret)
            return
        client.user, client.password = endpoint.username, secret
        code, text = client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()))
        if code != 235:
            raise smtplib.SMTPAuthenticationError(code, text)
    elif isinstance(client, imaplib.IMAP4):
        if mechanism == "PLAIN":
            client.authenticate("PLAIN", lambda _: f"\0{endpoint.username}\0{secret}".encode())
        else:
            client.login(endpoint.username, secret)
    else:
        client.user(endpoint.username)
        client.pass_(secret)


def noop(client: Any) -> None:
    """One harmless command: surfaces a refusal that TLS 1.3 only shows after the handshake."""
    if isinstance(client, smtplib.SMTP):
        code, text = client.noop()
        if code >= 400:
            raise smtplib.SMTPResponseException(code, text)
    elif isinstance(client, imaplib.IMAP4):
        client.noop()
    else:
        client.capa()  # valid before and after login (NOOP is not, before it)


def refused(endpoint: Endpoint, ctx: ssl.SSLContext) -> str | None:
    """Try a session (handshake and one command); return how it was refused, or None if it was not."""
    try:
        client = connect(endpoint, ctx=ctx)
    except SESSION_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    try:
        noop(client)
    except SESSION_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        close(client)
    return None


def cleartext_login_allowed(cell: Cell) -> bool:
    """The policy's rule: before TLS a login is taken on plain ports, and on STARTTLS ports only when the
    auth policy allows cleartext; never where STARTTLS is required."""
    return cell.mode is Mode.PLAIN or (cell.mode is Mode.STARTTLS and not cell.auth.tls_only)


# --------------------------------------------------------------------------- protocol versions


@pytest.mark.parametrize("version", VERSIONS)
@cells_param(TLS_CELLS)
def test_protocol_version(server: JamesServer, endpoint: Endpoint, version: str) -> None:
    """A handshake pinned to ``version`` completes exactly where the cell's policy accepts it (TLSv1/1.1 on
    JDK 17 only through the java.security override, which must not open them anywhere else)."""
    check_protocol_version(server, endpoint, version)


# --------------------------------------------------------------------------- certificates


@cells_param(TLS_CELLS)
def test_certificate(server: JamesServer, endpoint: Endpoint) -> None:
    """A verifying client accepts valid certificates and names each fault; without verification all connect."""
    check_certificate(server, endpoint)


# --------------------------------------------------------------------------- TLS mode


@cells_param(CELLS)
def test_tls_mode(server: JamesServer, endpoint: Endpoint) -> None:
    """The cell's own mode works; implicit TLS on a plaintext port and plaintext on an implicit port fail;
    plain ports do not offer STARTTLS, STARTTLS ports do."""
    check_tls_mode(server, endpoint, _plain_port)


def _plain_port(endpoint: Endpoint, ctx: ssl.SSLContext) -> None:
    with pytest.raises(ProtocolError):
        handshake(endpoint, ctx)
    client = connect(endpoint)
    noop(client)  # the plaintext session still works
    close(client)


# --------------------------------------------------------------------------- logins


@cells_param([c for c in CELLS if c.auth.mechanisms and c.mode is not Mode.IMPLICIT])
def test_login_before_tls(server: JamesServer, endpoint: Endpoint) -> None:
    """Before TLS a login works exactly where the policy allows cleartext; where it does not, SMTP hides AUTH,
    IMAP announces LOGINDISABLED and POP3 answers -ERR."""
    with server_side(server, endpoint):
        client = connect(endpoint, starttls=False)
        try:
            if cleartext_login_allowed(endpoint.cell):
                login(endpoint, client)
            else:
                if isinstance(client, smtplib.SMTP):
                    assert "auth" not in client.esmtp_features
                if isinstance(client, imaplib.IMAP4):
                    assert "LOGINDISABLED" in client.capabilities
                with pytest.raises(LOGIN_ERRORS):
                    login(endpoint, client)
        finally:
            close(client)


@cells_param([c for c in SMTP_CELLS if c.mode is not Mode.IMPLICIT])
def test_smtp_auth_sent_in_clear_anyway(server: JamesServer, endpoint: Endpoint) -> None:
    """AUTH PLAIN sent before STARTTLS whether or not EHLO advertised it (smtplib would not send it): 235 only
    where the policy allows cleartext AUTH; 530 "STARTTLS first" where AUTH is for TLS only or STARTTLS is
    required (James' own AuthCmdHandler answered 235 there: issue 9); 503 on a port without AUTH."""
    credentials = base64.b64encode(f"\0{endpoint.username}\0{endpoint.password}".encode()).decode()
    with server_side(server, endpoint):
        client = connect(endpoint, starttls=False)
        try:
            code, text = client.docmd("AUTH", f"PLAIN {credentials}")
        finally:
            close(client)
    answer = f"{code} {text.decode()}"
    if not endpoint.auth.mechanisms:
        assert code == 503, answer
    elif cleartext_login_allowed(endpoint.cell):
        assert code == 235, answer
    else:
        assert code == 530 and "STARTTLS" in answer, answer


@cells_param([c for c in CELLS if c.auth.mechanisms])
def test_login(server: JamesServer, endpoint: Endpoint) -> None:
    """Inside the cell's session every way to log in takes the test user's password, and a wrong one fails:
    SMTP AUTH with each mechanism of the policy, IMAP LOGIN and AUTHENTICATE PLAIN, POP3 USER/PASS."""
    ways: list[str | None]
    if endpoint.protocol == "smtp":
        ways = list(endpoint.auth.mechanisms)
    elif endpoint.protocol == "imap":
        ways = [None, "PLAIN"]
    else:
        ways = [None]
    with server_side(server, endpoint):
        for way in ways:
            client = connect(endpoint)
            try:
                if isinstance(client, smtplib.SMTP):
                    assert set(client.esmtp_features["auth"].upper().split()) == set(endpoint.auth.mechanisms)
                login(endpoint, client, mechanism=way)
                noop(client)
            finally:
                close(client)
            client = connect(endpoint)
            try:
                with pytest.raises(LOGIN_ERRORS):
                    login(endpoint, client, password=endpoint.password + "-wrong", mechanism=way)
            finally:
                close(client)


@cells_param([c for c in SMTP_CELLS if not c.auth.mechanisms])
def test_no_auth_offered(server: JamesServer, endpoint: Endpoint) -> None:
    """A port without mechanisms (an MX) never offers AUTH, before or after TLS."""
    with server_side(server, endpoint):
        for starttls in (False, True) if endpoint.cell.tls else (False,):
            client = connect(endpoint, starttls=starttls)
            assert "auth" not in client.esmtp_features
            with pytest.raises(smtplib.SMTPNotSupportedError):
                login(endpoint, client)
            # smtplib will not send AUTH that EHLO did not offer: send it anyway, the port must refuse it.
            code, _ = client.docmd("AUTH", "PLAIN AHRlc3QAdGVzdA==")
            assert code == 503
            close(client)


@cells_param([c for c in SMTP_CELLS if c.mode is Mode.STARTTLS_REQUIRED])
def test_starttls_required_refuses_plaintext_mail(server: JamesServer, endpoint: Endpoint) -> None:
    """MAIL before STARTTLS gets 530; after STARTTLS and AUTH the same MAIL is accepted."""
    check_starttls_required(server, endpoint)


# --------------------------------------------------------------------------- sending and capture


@cells_param(SMTP_CELLS)
def test_send_and_capture(server: JamesServer, endpoint: Endpoint) -> None:
    """Where auth is required MAIL gets 530 until AUTH; every accepted message, to a remote or a local
    recipient, lands in the cell's own Maildir and nowhere else, and nothing is relayed."""
    tag = f"capture {uuid.uuid4().hex}"
    remote = f"someone-{uuid.uuid4().hex[:8]}@example.org"
    with server_side(server, endpoint):
        client = smtp_session(endpoint)
        assert client.send_message(message(endpoint, remote, tag)) == {}
        assert client.send_message(message(endpoint, endpoint.address, tag + " local")) == {}
        close(client)
        wait_for(lambda: {tag, tag + " local"} <= set(subjects(endpoint)), what=f"{tag!r} in {endpoint.mailbox}")
        received = next(m for m in endpoint.messages() if m["Subject"] == tag)
        assert received["To"] == remote
        assert "mail.mailtls.test" in str(received["Received"])
        others = [e for e in server.endpoints if e.id != endpoint.id and e.mailbox]
        assert not [e.id for e in others if tag in subjects(e)]
        files = list(Path(endpoint.mailbox or "").joinpath("new").iterdir())
        assert files and all(p.stat().st_mode & 0o444 == 0o444 for p in files)  # the host user reads them


def test_mail_is_attributed_to_the_cell_that_received_it(server: JamesServer) -> None:
    """Two cells take mail at the same time; each Maildir holds exactly its own messages."""
    send_from_two_cells(
        find(server, "james-smtp-plain-open"), find(server, "james-submission-starttls-intermediate-valid")
    )


def test_local_mail_reaches_imap_and_pop3(server: JamesServer) -> None:
    """Mail for the test user is delivered to its mailbox: IMAP finds it by subject, POP3 counts it."""
    by_id = {e.id: e for e in server.endpoints}
    mx = by_id["james-smtp-plain-open"]
    imap, pop3 = by_id["james-imaps-implicit-modern-valid"], by_id["james-pop3s-implicit-modern-valid"]
    tag = f"local {uuid.uuid4().hex}"
    box = connect(pop3)
    login(pop3, box)
    before = box.stat()[0]
    close(box)
    client = connect(mx)
    client.send_message(message(mx, mx.address, tag))
    client.quit()

    def in_imap() -> bool:
        client = connect(imap)
        try:
            login(imap, client)
            client.select("INBOX", readonly=True)
            _, found = client.search(None, "SUBJECT", f'"{tag}"')
            return bool(found and found[0].split())
        finally:
            close(client)

    wait_for(in_imap, what=f"{tag!r} in the test user's INBOX")
    box = connect(pop3)
    login(pop3, box)
    count = box.stat()[0]
    assert count > before
    headers = [b"\n".join(box.top(n, 0)[1]) for n in range(1, count + 1)]
    assert sum(f"Subject: {tag}".encode() in h for h in headers) == 1
    close(box)


# --------------------------------------------------------------------------- mutual TLS


@cells_param([c for c in CELLS if c.auth.client_cert])
def test_client_certificate_required(server: JamesServer, endpoint: Endpoint, pki: SessionPKI) -> None:
    """No certificate or a foreign one is refused (in the handshake, or with TLS 1.3 at the first command);
    the session's certificate is served, at both TLS versions of the policy."""
    with server_side(server, endpoint):
        for version in ("TLSv1.2", "TLSv1.3"):
            assert refused(endpoint, context(endpoint, version)) is None
            assert refused(endpoint, context(endpoint, version, client_cert=False)) is not None
            assert refused(endpoint, foreign_context(endpoint, pki, version)) is not None


# --------------------------------------------------------------------------- ciphers


@cells_param([c for c in TLS_CELLS if c.policy and c.policy.ciphers and "ALL" not in c.policy.ciphers])
def test_cipher_list(server: JamesServer, endpoint: Endpoint) -> None:
    """A cipher of the policy's list is negotiated; one outside it is refused; Python's default list works
    exactly when it shares a cipher with the policy (the single-cipher cell refuses it)."""
    check_cipher_list(server, endpoint, "AES128-SHA:ECDHE-RSA-AES128-SHA")


@cells_param([c for c in TLS_CELLS if c.policy and c.policy.name == "legacy"])
def test_ciphers_the_jvm_cannot_offer_are_reported_truthfully(server: JamesServer, endpoint: Endpoint) -> None:
    """The legacy policy names ciphers JSSE lacks: the endpoint lists them, and a client offering only one of
    them is refused, while one offering a listed cipher the JVM has gets it, even at TLSv1."""
    missing = endpoint.extra.get("jvm_missing_ciphers", [])
    assert "DHE-RSA-CAMELLIA128-SHA" in missing and "ECDHE-ARIA128-GCM-SHA256" in missing
    with server_side(server, endpoint):
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            handshake(endpoint, context(endpoint, "TLSv1.2", ciphers="DHE-RSA-CAMELLIA128-SHA"))
        assert handshake(endpoint, context(endpoint, "TLSv1", ciphers="AES128-SHA")).cipher == "AES128-SHA"
        assert handshake(endpoint, context(endpoint, "TLSv1.2", ciphers="DHE-RSA-AES128-SHA")).version == "TLSv1.2"


def test_default_suites_are_listed_not_widened(server: JamesServer) -> None:
    """A policy without a cipher list gets JDK 17's defaults; the JVM-wide override that re-enables static RSA
    for other cells must not add static RSA there (nor to TLSv1-only cells)."""
    by_id = {e.id: e for e in server.endpoints}
    for cell_id in ("james-imaps-implicit-tls12-only-valid", "james-smtps-implicit-tls10-only-valid"):
        endpoint = by_id[cell_id]
        version = endpoint.cell.policy.min_version if endpoint.cell.policy else "TLSv1.2"
        with server_side(server, endpoint), pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            handshake(endpoint, context(endpoint, version, ciphers="AES128-SHA:AES256-GCM-SHA384"))
    assert cipher_plan(TLSPolicy("x", "TLSv1.2", "TLSv1.2")).static_rsa is False


# --------------------------------------------------------------------------- logs, memory, failures


def test_cell_logs_hold_only_that_cell(server: JamesServer) -> None:
    """cell_logs() returns the lines of the cell's own server threads, not other cells' lines."""
    by_id = {e.id: e for e in server.endpoints}
    endpoint, other = by_id["james-smtp-plain-open"], by_id["james-smtps-implicit-modern-valid"]
    client = connect(endpoint)
    client.noop()
    client.quit()
    port = str(endpoint.extra["container_port"])
    wait_for(lambda: bool(server.cell_logs(endpoint.id)), timeout=5, what="a log line of the cell")
    lines = server.cell_logs(endpoint.id)
    assert any(f"smtpserver-{port}-" in line for line in lines)
    assert not any(f"-{other.extra['container_port']}-" in line for line in lines)
    assert "JAMES server started" in server.logs()
    with pytest.raises(KeyError):
        server.cell_logs("james-no-such-cell")


def test_refusals_are_logged_for_the_refusing_cell(server: JamesServer, pki: SessionPKI) -> None:
    """Each kind of TLS refusal leaves JSSE's reason in the refusing cell's log (the words diagnose reads),
    and not in the log of a cell that refused nothing."""
    by_id = {e.id: e for e in server.endpoints}
    quiet = by_id["james-pop3-starttls-intermediate-valid"]
    quiet_before = len(server.cell_logs(quiet.id))
    mtls = by_id["james-imaps-implicit-intermediate-valid-mtls"]
    foreign = foreign_context(mtls, pki, "TLSv1.2")
    cases = [
        (by_id["james-smtps-implicit-modern-valid"], None, "Client requested protocol TLSv1.2 is not enabled"),
        (by_id["james-submission-starttls-tls12-single-cipher-valid"], None, "no cipher suites in common"),
        (mtls, context(mtls, "TLSv1.2", client_cert=False), "Empty client certificate chain"),
        (mtls, foreign, "PKIX path building failed"),
    ]
    for endpoint, ctx, words in cases:
        if ctx is None:
            ciphers = "ECDHE-RSA-AES128-GCM-SHA256" if "single-cipher" in endpoint.id else None
            ctx = context(endpoint, "TLSv1.2", ciphers=ciphers)

        def count(endpoint: Endpoint = endpoint, words: str = words) -> int:
            return sum(words in line for line in server.cell_logs(endpoint.id))

        before = count()
        with server_side(server, endpoint):
            with pytest.raises(ssl.SSLError):
                handshake(endpoint, ctx)

            def grew(count: Callable[[], int] = count, before: int = before) -> bool:
                return count() > before

            wait_for(grew, timeout=5, what=f"{words!r} in the log of {endpoint.id}")
    assert len(server.cell_logs(quiet.id)) == quiet_before


def test_resident_memory_within_budget(server: JamesServer) -> None:
    """The JVM serving every cell stays under 600 MB resident after the suite's traffic."""
    code, output = server.container.exec(["grep", "VmRSS", "/proc/1/status"])
    assert code == 0, output
    rss_kb = int(str(output).split()[1])
    assert 50 * 1024 < rss_kb < RSS_BUDGET_KB, output


def test_jvm_gets_the_bigger_cpu_weight(server: JamesServer) -> None:
    """The slowest server of a grid to start runs with twice the engine's default CPU weight."""
    from pytest_mailtls import runtime

    attrs = runtime.docker_client().api.inspect_container(server.container.id)
    assert attrs["HostConfig"]["CpuShares"] == JamesBackend.cpu_shares == 2048


def test_failed_start_raises_with_log_and_leaves_no_container(
    pki: SessionPKI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A James that refuses its configuration (here: no transport processor) fails fast with ServerStartError
    carrying the log, and the container is gone."""
    needs_engine()
    monkeypatch.setattr(james_backend, "_MAILETCONTAINER", "<mailetcontainer><processors/></mailetcontainer>")
    cell = Cell("james", SERVICES["smtp"], Mode.PLAIN, None, None, AuthPolicy("open", (), required=False))
    error = start_fails(
        lambda: JamesBackend().start([cell], StartOptions(pki=pki, workdir=tmp_path, ready_timeout=120)),
        within=60,
        what="JVM",
    )
    assert "Fatal error while starting James" in error.log


def test_bare_user_name_and_awkward_password(pki: SessionPKI, tmp_path: Path) -> None:
    """A user name without a domain and a password with ':', spaces and quotes log in over SMTP (PLAIN and
    LOGIN), IMAP and POP3; the same password under user@domain does not."""
    needs_engine()
    intermediate = next(c.policy for c in CELLS if c.policy is not None and c.policy.name == "intermediate")
    cells = [
        Cell("james", SERVICES[name], Mode.IMPLICIT, intermediate, CertProfile.VALID, AuthPolicy("default"))
        for name in ("smtps", "imaps", "pop3s")
    ]
    password = "p:ss w0rd 'quoted' \"$HOME\""
    options = StartOptions(pki=pki, workdir=tmp_path, username="tester", password=password)
    with served(lambda: JamesBackend().start(cells, options)) as running:
        for endpoint in running.endpoints:
            with server_side(running, endpoint):
                for way in ("PLAIN", "LOGIN") if endpoint.protocol == "smtp" else (None,):
                    client = connect(endpoint)
                    login(endpoint, client, mechanism=way)
                    close(client)
                client = connect(endpoint)
                with pytest.raises(LOGIN_ERRORS):
                    login(dataclasses.replace(endpoint, username="tester@mailtls.test"), client)
                close(client)
