"""What the integration test modules share: the tables of expected errors, client contexts and handshakes as a
well-configured client makes them, server fixtures' bodies, and the checks every TLS cell of a real server
goes through (protocol versions, certificates, TLS mode, cipher lists, STARTTLS-required, attribution).

A plain module, not a conftest: each test module imports what it uses and keeps its own module-scoped server.
The checks take the server to attach its log lines for the cell to any failure.
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from typing import Any, TypeVar

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.backends import dovecot as dovecot_backend
from pytest_mailtls.backends.base import RunningServer
from pytest_mailtls.connect import HandshakeResult, open_client, tls_handshake
from pytest_mailtls.errors import ServerStartError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import LEGACY_VERSIONS, VERSIONS, Cell, CertProfile, Mode
from pytest_mailtls.verify import probe_endpoint, verify_endpoint
from pytest_mailtls.wire.recorder import Recorder

S = TypeVar("S", bound=RunningServer)

# What a verifying client must report for each faulty certificate (OpenSSL's words): declared with the fault.
CERT_ERRORS = {profile: profile.fault.verify_errors for profile in CertProfile if profile.fault.verify_errors}
# How OpenSSL reports a version the server will not speak: the server's alert (JSSE's protocol_version, or
# handshake_failure when only TLSv1 is enabled and TLSv1.2 is asked), the client's own refusal of the version
# the server picked, or (server max < client min) no cipher usable at the picked version.
VERSION_FAILURES = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "SSLV3_ALERT_HANDSHAKE_FAILURE"}
DELIVERY_TIMEOUT = 15.0
TLS_VERSIONS = {v: getattr(ssl.TLSVersion, v.replace(".", "_")) for v in VERSIONS}


# --------------------------------------------------------------------------- servers and cells


def needs_engine() -> None:
    """Skip the test when no Docker engine answers."""
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)


def serve(start: Callable[[], S]) -> Iterator[S]:
    """The body of a server fixture (``yield from``): skip without an engine, ``start()``, stop at the end.

    Clients reach the cells as in a grid: through a session recorder on 127.0.0.1 (a sealed container has no
    address, only its unix sockets, see docs/wire.md)."""
    needs_engine()
    running = start()
    with tempfile.TemporaryDirectory(prefix="mailtls-sessions-") as sessions:
        recorder = Recorder(sessions)
        try:
            running.endpoints = [recorder.front(e) for e in running.endpoints]
            yield running
        finally:
            running.stop()
            recorder.stop()


#: :func:`serve` as a ``with`` block, for a server of one test.
served = contextlib.contextmanager(serve)


def ids(cells: list[Cell]) -> list[str]:
    return [c.id for c in cells]


def cells_param(cells: list[Cell]) -> pytest.MarkDecorator:
    """Parametrize the ``endpoint`` fixture (indirectly) with ``cells``, one test id per cell id."""
    return pytest.mark.parametrize("endpoint", cells, ids=ids(cells), indirect=True)


def find(server: RunningServer, cell_id: str) -> Endpoint:
    """The endpoint of ``server`` serving the cell ``cell_id``."""
    return next(e for e in server.endpoints if e.id == cell_id)


@contextlib.contextmanager
def server_side(server: RunningServer, endpoint: Endpoint) -> Iterator[None]:
    """Attach the cell's server log lines to any failure inside the block."""
    try:
        yield
    except BaseException as exc:
        lines = server.cell_logs(endpoint.id)[-40:]
        exc.add_note(f"server log of {endpoint.id} ({len(lines)} last lines):\n" + "\n".join(lines))
        raise


def break_dovecot_render(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every Dovecot configuration carry a setting Dovecot refuses (``no_such_setting``)."""
    real_render = dovecot_backend.render

    def broken_render(*args: Any, **kwargs: Any) -> dovecot_backend.RenderedConfig:
        config = real_render(*args, **kwargs)
        config.files["dovecot.conf"] += "\nno_such_setting = 1\n"
        return config

    monkeypatch.setattr(dovecot_backend, "render", broken_render)


def start_fails(start: Callable[[], object], *, within: float, what: str) -> ServerStartError:
    """Run a start that must fail: ``ServerStartError`` before ``within`` seconds (a dead ``what`` is not
    waited on until the deadline), and no container of this session left; return the error."""
    client = runtime.docker_client()
    label = {"label": [f"{runtime.LABEL}.session={runtime.SESSION_ID}"]}
    before = {c.id for c in client.containers.list(all=True, filters=label)}
    started = time.monotonic()
    with pytest.raises(ServerStartError) as caught:
        start()
    assert time.monotonic() - started < within, f"a dead {what} must not be waited on until the deadline"
    after = {c.id for c in client.containers.list(all=True, filters=label)}
    assert after <= before
    return caught.value


# --------------------------------------------------------------------------- clients


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
        # A NULL or small-DH cell: its suites at the level OpenSSL 3 offers them (a client that reaches it on purpose).
        ciphers = policy.openssl_ciphers() if policy.null_encryption or policy.small_dh else policy.ciphers
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


def foreign_context(endpoint: Endpoint, pki: SessionPKI, version: str | None = None) -> ssl.SSLContext:
    """:func:`context` presenting a client certificate from a CA the servers do not trust."""
    ctx = context(endpoint, version, client_cert=False)
    files = pki.foreign_client_files()
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx


def handshake(endpoint: Endpoint, ctx: ssl.SSLContext, *, implicit: bool | None = None) -> HandshakeResult:
    """A TLS handshake with the cell (after STARTTLS unless implicit), plus one exchange over TLS."""
    return tls_handshake(
        endpoint.host,
        endpoint.port,
        protocol=endpoint.protocol,
        implicit=endpoint.mode is Mode.IMPLICIT if implicit is None else implicit,
        context=ctx,
        server_hostname=endpoint.server_hostname,
        timeout=5.0,
    )


def connect(endpoint: Endpoint, *, starttls: bool | None = None, ctx: ssl.SSLContext | None = None) -> Any:
    """An smtplib/imaplib/poplib client for the cell, upgraded to TLS as the cell's mode says, with a context a
    well-configured client would use to do business with the cell (no certificate checks here)."""
    if ctx is None:
        ctx = context(endpoint, verify=False) if endpoint.cell.tls else ssl.create_default_context()
    return open_client(endpoint, context=ctx, starttls=starttls, timeout=10.0)


def smtp_session(endpoint: Endpoint) -> smtplib.SMTP:
    """A session on an SMTP cell; where the cell requires auth, MAIL must first get 530, then it logs in."""
    client: smtplib.SMTP = connect(endpoint)
    if endpoint.auth.required:
        code, text = client.mail(endpoint.address)
        assert (code, b"Authentication required" in text) == (530, True), text
        client.rset()
        client.login(endpoint.username, endpoint.password)
    return client


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


def tagged(endpoint: Endpoint, run: str) -> set[str]:
    """Subjects of the cell's captured messages that start with ``run``."""
    return {s for s in subjects(endpoint) if s.startswith(run)}


def cipher_table(spec: str) -> list[dict[str, str]]:
    """The TLS <= 1.2 ciphers an OpenSSL cipher string selects (name, auth, ...)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers(spec if "@SECLEVEL" in spec else spec + ":@SECLEVEL=0")
    return [{k: str(v) for k, v in c.items()} for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


# --------------------------------------------------------------------------- checks of one cell


def check_protocol_version(server: RunningServer, endpoint: Endpoint, version: str) -> None:
    """A handshake pinned to ``version`` completes exactly where the cell's policy accepts it; elsewhere it
    fails with a version refusal, not a certificate error."""
    with server_side(server, endpoint):
        # OpenSSL's whole default list (it has the single-cipher cell's static-RSA cipher, Python's has not):
        # a client pinned to TLSv1 must have ciphers that exist in TLSv1 to ask with.
        # A NULL-encryption or small-DH cell: its own suites (DEFAULT has no NULL one; a default level refuses
        # a 1024-bit group), at the level OpenSSL 3 offers them.
        policy = endpoint.policy
        own = policy is not None and (policy.null_encryption or policy.small_dh)
        own = own and endpoint.cell.accepts_version(version)  # the small-DH suites exist from TLS 1.2 on
        ctx = context(endpoint, version, ciphers=policy.openssl_ciphers() if own and policy else "DEFAULT")
        if endpoint.cell.accepts_version(version):
            assert handshake(endpoint, ctx).version == version
        else:
            with pytest.raises(ssl.SSLError) as caught:
                handshake(endpoint, ctx)
            assert not isinstance(caught.value, ssl.SSLCertVerificationError)
            assert caught.value.reason in VERSION_FAILURES, caught.value


def check_certificate(server: RunningServer, endpoint: Endpoint) -> None:
    """A verifying client accepts a valid certificate and names each fault; without verification all connect.

    A fault OpenSSL's defaults do not see (revocation, CN fallback) verifies for the default client, and the
    fault's own check (``pki.CertFault.check``, run by verify) makes the handshake of a client that checks it
    (the CRL loaded, CN fallback off) and sees it refused with the fault's error; every profile's check reads
    the presented chain (key, intermediates, extensions) as well.
    """
    cert = endpoint.cert
    assert cert is not None and endpoint.policy is not None
    top = endpoint.policy.max_version
    with server_side(server, endpoint):
        verifying = context(endpoint, top, verify=True)
        if cert.fault.verifies_by_default:
            assert handshake(endpoint, verifying).version == top
        else:
            with pytest.raises(ssl.SSLCertVerificationError) as caught:
                handshake(endpoint, verifying)
            assert any(e.lower() in str(caught.value.verify_message).lower() for e in CERT_ERRORS[cert]), caught.value
        assert handshake(endpoint, context(endpoint, top, verify=False)).version == top
        problems = [m for m in verify_endpoint(endpoint, probe_endpoint(endpoint)) if m.aspect == "certificate"]
        assert problems == [], problems


def check_tls_mode(
    server: RunningServer, endpoint: Endpoint, plain_port: Callable[[Endpoint, ssl.SSLContext], None]
) -> None:
    """The cell's own mode works; implicit TLS on a plaintext port and plaintext on an implicit port fail.
    ``plain_port(endpoint, ctx)`` checks a plain port further (no STARTTLS there, plaintext works)."""
    with server_side(server, endpoint):
        if endpoint.mode is Mode.IMPLICIT:
            assert handshake(endpoint, context(endpoint)).greeting.banner
            # A STARTTLS client speaks plaintext first: the server reads it as a broken ClientHello and hangs up.
            with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
                sock.sendall(b"EHLO mailtls.client\r\n")
                try:
                    answer = sock.recv(64)
                except ConnectionResetError:
                    answer = b""
            assert not answer.startswith((b"220", b"250")), answer
            assert answer == b"" or answer[:1] == b"\x15", answer  # closed, or a TLS alert: never a greeting
            return
        ctx = context(endpoint) if endpoint.cell.tls else endpoint.client_context(verify=False)
        with pytest.raises(ssl.SSLError, match="WRONG_VERSION_NUMBER"):
            handshake(endpoint, ctx, implicit=True)
        if endpoint.mode is Mode.PLAIN:
            plain_port(endpoint, ctx)
        else:
            result = handshake(endpoint, ctx)
            assert result.version and result.greeting.starttls


def check_cipher_list(server: RunningServer, endpoint: Endpoint, outsiders: str) -> None:
    """A cipher of the policy's list is negotiated; the first of ``outsiders`` outside it is refused; Python's
    default list works exactly when it shares a cipher with the policy (the single-cipher cell refuses it)."""
    policy = endpoint.policy
    assert policy is not None and policy.ciphers is not None and endpoint.cert is not None
    allowed = cipher_table(policy.ciphers)
    auth = "auth-ecdsa" if endpoint.cert.key_type == "ecdsa" else "auth-rsa"
    usable = next(c["name"] for c in allowed if c["auth"] == auth)
    names = {c["name"] for c in allowed}
    outsider = next(c["name"] for c in cipher_table(outsiders + ":AES128-GCM-SHA256") if c["name"] not in names)
    with server_side(server, endpoint):
        assert handshake(endpoint, context(endpoint, "TLSv1.2", ciphers=usable)).cipher == usable
        with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
            handshake(endpoint, context(endpoint, "TLSv1.2", ciphers=outsider))
        default = endpoint.client_context("TLSv1.2", verify=endpoint.cert.verifies)
        shared = {c["name"] for c in default.get_ciphers()} & {c["name"] for c in allowed}
        if shared and policy.small_dh:  # a default client shares the DHE suites and refuses the server's group
            with pytest.raises(ssl.SSLError, match="DH_KEY_TOO_SMALL"):
                handshake(endpoint, default)
        elif shared:
            assert handshake(endpoint, default).cipher in shared
        else:
            with pytest.raises(ssl.SSLError, match="HANDSHAKE_FAILURE"):
                handshake(endpoint, default)


def check_starttls_required(server: RunningServer, endpoint: Endpoint) -> None:
    """MAIL before STARTTLS gets 530; after STARTTLS and AUTH the same MAIL is accepted."""
    with server_side(server, endpoint):
        client = connect(endpoint, starttls=False)
        code, text = client.mail(endpoint.address)
        assert (code, b"Must issue a STARTTLS command first" in text) == (530, True), text
        client.quit()
        client = connect(endpoint)
        client.login(endpoint.username, endpoint.password)
        assert client.mail(endpoint.address)[0] == 250
        client.quit()


def send_from_two_cells(first: Endpoint, second: Endpoint) -> tuple[str, dict[str, set[str]]]:
    """Two SMTP cells take ten messages each at the same time, tagged with a new run; each Maildir gets
    exactly its own. Returns the run and the subjects sent per cell id."""
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
    wait_for(
        lambda: tagged(first, run) == sent[first.id] and tagged(second, run) == sent[second.id], what="20 deliveries"
    )
    assert len(sent[first.id]) == len(sent[second.id]) == 10
    return run, sent
