"""The wire layer: real TLS handshakes and real cleartext dialogues through the recorder, read back as sessions.

The servers here are tiny in-test asyncio responders (tests/unit/loopserver.py) speaking just enough SMTP,
IMAP or POP3 with Python's ssl; the clients are smtplib/imaplib/poplib and raw sockets. No Docker.
"""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import poplib
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy
from pytest_mailtls.tls import dh_params_pem
from pytest_mailtls.wire.dialogue import Dialogue
from pytest_mailtls.wire.judge import WireView, findings, insecurity, offered_profile
from pytest_mailtls.wire.recorder import Recorder, SessionAnalyzer
from pytest_mailtls.wire.tlsrecords import TLSObserver, cipher_name, looks_like_tls

from .loopserver import LoopServer

# --------------------------------------------------------------------------- a tiny server


class _Mail(LoopServer):
    """An SMTP/IMAP/POP3 responder with STARTTLS (or implicit TLS), AUTH and DATA."""

    def __init__(self, protocol: str, ctx: ssl.SSLContext, *, implicit: bool = False, offer_tls: bool = True) -> None:
        self.protocol, self.ctx, self.implicit, self.offer_tls = protocol, ctx, implicit, offer_tls
        super().__init__()

    def __enter__(self) -> _Mail:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if self.implicit:
                await writer.start_tls(self.ctx)
            await getattr(self, self.protocol)(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, OSError):
            pass
        finally:
            writer.close()

    async def smtp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        tls = self.implicit
        while line := await reader.readline():
            verb = line.split(b" ")[0].strip().upper()
            if verb == b"EHLO":
                caps = [b"test", b"PIPELINING", b"AUTH PLAIN LOGIN"] + (
                    [b"STARTTLS"] if self.offer_tls and not tls else []
                )
                writer.write(b"".join(b"250-" + c + b"\r\n" for c in caps[:-1]) + b"250 " + caps[-1] + b"\r\n")
            elif verb == b"STARTTLS":
                writer.write(b"220 2.0.0 Ready to start TLS\r\n")
                await writer.drain()
                await writer.start_tls(self.ctx)
                tls = True
            elif verb == b"AUTH":
                writer.write(b"235 2.7.0 Authentication successful\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                while (await reader.readline()).rstrip(b"\r\n") != b".":
                    pass
                writer.write(b"250 2.0.0 queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    async def imap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 STARTTLS] ready\r\n")
        while line := await reader.readline():
            tag, verb = ([*line.split(b" "), b""])[:2]
            verb = verb.strip().upper()
            if verb == b"CAPABILITY":
                writer.write(b"* CAPABILITY IMAP4rev1 STARTTLS AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
            elif verb == b"STARTTLS":
                writer.write(tag + b" OK begin TLS\r\n")
                await writer.drain()
                await writer.start_tls(self.ctx)
            elif verb == b"LOGIN":
                writer.write(tag + b" OK logged in\r\n")
            elif verb == b"LOGOUT":
                writer.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(tag + b" OK\r\n")
            await writer.drain()

    async def pop3(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK ready\r\n")
        while line := await reader.readline():
            verb = line.split(b" ")[0].strip().upper()
            if verb == b"CAPA":
                writer.write(b"+OK\r\nUSER\r\nSTLS\r\n.\r\n")
            elif verb == b"STLS":
                writer.write(b"+OK begin TLS\r\n")
                await writer.drain()
                await writer.start_tls(self.ctx)
            elif verb == b"QUIT":
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"+OK\r\n")
            await writer.drain()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


def _server_ctx(
    pki: SessionPKI, profile: CertProfile = CertProfile.VALID, **versions: ssl.TLSVersion
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    files = pki.server_files(profile)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    for attr, value in versions.items():
        setattr(ctx, attr, value)
    return ctx


def _cell(service: str, mode: Mode, *, cert: CertProfile = CertProfile.VALID, policy: str = "modern") -> Cell:
    tls = None if mode is Mode.PLAIN else TLSPolicy(policy, "TLSv1.2", "TLSv1.3", ciphers=None)
    if policy == "legacy" and tls is not None:
        tls = TLSPolicy("legacy", "TLSv1", "TLSv1.3", ciphers="DEFAULT:@SECLEVEL=0")
    return Cell(
        server="embedded",
        service=SERVICES[service],
        mode=mode,
        policy=tls,
        cert=None if mode is Mode.PLAIN else cert,
        auth=AuthPolicy("default", mechanisms=("PLAIN", "LOGIN"), required=True, tls_only=False),
    )


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Recorder]:
    with Recorder(tmp_path / "sessions") as recorder:
        yield recorder


def _front(relay: Recorder, pki: SessionPKI, cell: Cell, port: int) -> Endpoint:
    endpoint = Endpoint(
        cell=cell,
        host="127.0.0.1",
        port=port,
        server_hostname=pki.server_hostname,
        ca_file=str(pki.ca_file),
        username="tester@mailtls.test",
        password="s3cret-pass",
    )
    fronted = relay.front(endpoint)
    return replace(fronted, extra={**fronted.extra, "sessions_since": time.time()})


def _client_ctx(pki: SessionPKI, **settings: object) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    for attr, value in settings.items():
        setattr(ctx, attr, value)
    return ctx


# --------------------------------------------------------------------------- SMTP


def test_a_starttls_session_is_recorded_with_hello_choice_and_masked_credentials(
    relay: Recorder, pki: SessionPKI
) -> None:
    cell = _cell("submission", Mode.STARTTLS)
    with _Mail("smtp", _server_ctx(pki)) as server:
        ep = _front(relay, pki, cell, server.port)
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp:
            smtp.starttls(context=_client_ctx(pki))
            smtp.login(ep.username, ep.password)
            smtp.sendmail(ep.address, [ep.address], b"Subject: hi\r\n\r\nbody\r\n")
        s = ep.last_session()
    assert s.starttls_offered is True
    assert s.starttls is not None and s.starttls.accepted and s.starttls.answer.startswith("220")
    assert s.client_hello is not None and s.offered_versions == ["TLSv1.2", "TLSv1.3"]
    assert s.sni is None  # smtplib dialled an IP address, and IP addresses are never sent as SNI
    assert s.tls_version == "TLSv1.3" and s.cipher and s.cipher.startswith("TLS_")
    assert s.handshake_completed and s.client_app_data
    assert not s.credentials_in_clear and s.mail_commands == []  # all of it went inside TLS
    assert s.upstream_port and s.closed_by in ("client", "server") and s.close_how in ("fin", "rst")
    assert "s3cret-pass" not in s.model_dump_json()


def test_credentials_and_mail_sent_in_clear_are_seen_and_masked(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("submission", Mode.STARTTLS)
    with _Mail("smtp", _server_ctx(pki)) as server:
        ep = _front(relay, pki, cell, server.port)
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp:  # never calls starttls()
            smtp.login(ep.username, ep.password)
            smtp.sendmail(ep.address, [ep.address], b"Subject: hi\r\n\r\nbody\r\n")
        [s] = ep.sessions()
    assert s.starttls_offered is True and s.starttls is None and s.client_hello is None
    assert s.credentials_in_clear and s.credentials[0].startswith("AUTH ")
    assert s.mail_commands[:2] == ["MAIL FROM:<TESTER@MAILTLS.TEST>", "RCPT TO:<TESTER@MAILTLS.TEST>"]
    assert s.message_accepted is True
    text = s.model_dump_json()
    assert "s3cret-pass" not in text and "czNjcmV0" not in text  # neither the password nor its base64
    view = WireView(cell, (s,))
    bad = insecurity(view, ok=True)
    assert bad is not None and bad[0] == "starttls-required" and "credentials crossed in clear" in bad[1][0]


def test_an_implicit_session_records_sni_and_alpn(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("smtps", Mode.IMPLICIT)
    with _Mail("smtp", _server_ctx(pki), implicit=True) as server:
        ep = _front(relay, pki, cell, server.port)
        ctx = _client_ctx(pki)
        ctx.set_alpn_protocols(["smtp"])
        raw = socket.create_connection((ep.host, ep.port), timeout=5)
        with ctx.wrap_socket(raw, server_hostname=pki.server_hostname) as tls:
            assert tls.recv(100).startswith(b"220")
            tls.sendall(b"QUIT\r\n")
            tls.recv(100)
        s = ep.last_session()
    assert s.dialogue == [] and s.sni == pki.server_hostname and s.client_hello and s.client_hello.alpn == ["smtp"]
    assert s.client_hello.groups and s.client_hello.signature_algorithms
    assert s.handshake_completed and s.client_app_data


def test_a_plaintext_hello_on_an_implicit_port_is_wrong_tls_mode(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("smtps", Mode.IMPLICIT)
    with _Mail("smtp", _server_ctx(pki), implicit=True) as server:
        ep = _front(relay, pki, cell, server.port)
        with socket.create_connection((ep.host, ep.port), timeout=5) as sock:
            sock.sendall(b"EHLO client\r\n")
            sock.settimeout(1)
            with contextlib.suppress(TimeoutError, OSError):
                sock.recv(100)
        [s] = ep.sessions()
    assert s.not_tls and s.first_client_bytes and s.first_client_bytes.startswith("EHLO")
    assert [f.classes for f in findings(WireView(cell, (s,)))] == [("wrong-tls-mode",)]


def test_a_tls_hello_on_a_starttls_port_is_wrong_tls_mode(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("submission", Mode.STARTTLS)
    with _Mail("smtp", _server_ctx(pki)) as server:
        ep = _front(relay, pki, cell, server.port)
        with pytest.raises((ssl.SSLError, OSError)):
            smtplib.SMTP_SSL(ep.host, ep.port, timeout=3, context=_client_ctx(pki))
        [s] = ep.sessions()
    assert s.tls_before_starttls
    assert findings(WireView(cell, (s,)))[0].classes == ("wrong-tls-mode",)


def test_a_version_refusal_shows_the_alert_and_the_offer(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("submission", Mode.STARTTLS)
    legacy_only = _server_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    tls10 = replace(cell, policy=TLSPolicy("tls10-only", "TLSv1", "TLSv1", ciphers="DEFAULT:@SECLEVEL=0"))
    with _Mail("smtp", legacy_only) as server:
        ep = _front(relay, pki, tls10, server.port)
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp, pytest.raises(ssl.SSLError):
            smtp.starttls(context=_client_ctx(pki))
        s = ep.last_session()
    assert s.server_hello is None and s.offered_versions == ["TLSv1.2", "TLSv1.3"]
    # (asyncio's start_tls drops the server's protocol_version alert; Postfix and Dovecot send it, see the
    # integration tests)
    [finding] = findings(WireView(tls10, (s,)))
    assert finding.classes == ("protocol-version-mismatch",) and "no common version" in finding.line


def test_a_tls1_only_client_is_seen_offering_tls1_and_settling_for_it(relay: Recorder, pki: SessionPKI) -> None:
    """The javax.mail 1.4.x shape: a client that offers only TLSv1 on a cell that also speaks TLS 1.3."""
    cell = _cell("submission", Mode.STARTTLS, policy="legacy")
    server_ctx = _server_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1)
    with _Mail("smtp", server_ctx) as server:
        ep = _front(relay, pki, cell, server.port)
        client = _client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1)
        client.set_ciphers("DEFAULT:@SECLEVEL=0")
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp:
            smtp.starttls(context=client)
            smtp.noop()
        s = ep.last_session()
    assert s.client_hello is not None and s.client_hello.versions_from == "legacy_version"
    assert s.offered_versions == ["TLSv1"] and s.tls_version == "TLSv1"
    assert s.handshake_completed and s.client_app_data
    view = WireView(cell, (s,))
    bad = insecurity(view, ok=True)
    assert bad is not None and bad[0] == "protocol-version-mismatch"
    assert "the client offered TLSv1" in bad[1][1]
    assert offered_profile(__import__("pytest_mailtls.oracle").oracle.ClientProfile("x"), view).versions == ("TLSv1",)


def test_a_client_offering_only_static_rsa_cbc_is_seen_settling_for_it_on_a_secure_cell(
    relay: Recorder, pki: SessionPKI
) -> None:
    """A client whose offer holds one static-RSA CBC suite, on a cell that also offers forward-secret AEAD: the
    session went on without forward secrecy because of the client (the lookup once read a TLS 1.3 suite and
    never fired)."""
    cell = _cell("submission", Mode.STARTTLS)
    with _Mail("smtp", _server_ctx(pki)) as server:
        ep = _front(relay, pki, cell, server.port)
        client = _client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
        client.set_ciphers("AES128-SHA")
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp:
            smtp.starttls(context=client)
            smtp.noop()
        s = ep.last_session()
    assert s.tls_version == "TLSv1.2" and s.cipher == "AES128-SHA" and s.client_app_data
    bad = insecurity(WireView(cell, (s,)), ok=True)
    assert bad is not None and bad[0] == "no-shared-cipher"
    assert "AES128-SHA (no forward secrecy)" in bad[1][0]


def test_a_bad_certificate_refused_in_tls13_is_seen_as_a_stop_before_finished(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("submission", Mode.STARTTLS, cert=CertProfile.EXPIRED)
    with _Mail("smtp", _server_ctx(pki, CertProfile.EXPIRED)) as server:
        ep = _front(relay, pki, cell, server.port)
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp, pytest.raises(ssl.SSLCertVerificationError):
            smtp.starttls(context=_client_ctx(pki))
        s = ep.last_session()
    assert s.tls_version == "TLSv1.3" and not s.client_finished and not s.client_app_data
    assert insecurity(WireView(cell, (s,)), ok=False) is None
    [finding] = [f for f in findings(WireView(cell, (s,))) if f.classes]
    assert finding.classes == ("certificate-expired",) and "before finishing the handshake" in finding.line


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_a_bad_certificate_accepted_shows_application_data(
    relay: Recorder, pki: SessionPKI, version: ssl.TLSVersion
) -> None:
    cell = _cell("submission", Mode.STARTTLS, cert=CertProfile.EXPIRED)
    with _Mail("smtp", _server_ctx(pki, CertProfile.EXPIRED)) as server:
        ep = _front(relay, pki, cell, server.port)
        unsafe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unsafe.check_hostname = False
        unsafe.verify_mode = ssl.CERT_NONE
        unsafe.maximum_version = version
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp:
            smtp.starttls(context=unsafe)
            smtp.noop()
        s = ep.last_session()
    assert s.tls_version == {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version]
    assert s.client_finished and s.client_app_data
    bad = insecurity(WireView(cell, (s,)), ok=True)
    assert bad is not None and bad[0] == "certificate-expired"


def test_a_tls13_client_that_checks_the_host_name_after_the_handshake_sends_no_data(
    relay: Recorder, pki: SessionPKI
) -> None:
    """curl's way: finish the handshake, compare the host name, then only close_notify (encrypted, 19 bytes)."""
    cell = _cell("submission", Mode.STARTTLS, cert=CertProfile.WRONG_HOST)
    with _Mail("smtp", _server_ctx(pki, CertProfile.WRONG_HOST)) as server:
        ep = _front(relay, pki, cell, server.port)
        ctx = _client_ctx(pki, check_hostname=False)  # the chain verifies; the name is checked afterwards
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp:
            smtp.starttls(context=ctx)
            assert isinstance(smtp.sock, ssl.SSLSocket)
            with contextlib.suppress(OSError):
                smtp.sock.unwrap()  # close_notify, and no command
            smtp.close()
        s = ep.last_session()
    assert s.tls_version == "TLSv1.3" and s.client_finished and not s.client_app_data
    assert ("client", "encrypted") in [(a.sender, a.description) for a in s.alerts]
    assert insecurity(WireView(cell, (s,)), ok=False) is None


def test_a_tls12_client_rejecting_a_certificate_sends_a_readable_alert(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("submission", Mode.STARTTLS, cert=CertProfile.UNTRUSTED_CA)
    with _Mail("smtp", _server_ctx(pki, CertProfile.UNTRUSTED_CA)) as server:
        ep = _front(relay, pki, cell, server.port)
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp, pytest.raises(ssl.SSLCertVerificationError):
            smtp.starttls(context=_client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2))
        s = ep.last_session()
    assert [(a.sender, a.description) for a in s.alerts] == [("client", "unknown_ca")]
    [finding] = [f for f in findings(WireView(cell, (s,))) if f.classes]
    assert set(finding.classes) == {"untrusted-certificate", "incomplete-chain"}


def test_starttls_not_offered_and_a_refused_starttls(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("submission", Mode.PLAIN)
    with _Mail("smtp", _server_ctx(pki), offer_tls=False) as server:
        ep = _front(relay, pki, cell, server.port)
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp, pytest.raises(smtplib.SMTPNotSupportedError):
            smtp.starttls(context=_client_ctx(pki))
        [s] = ep.sessions()
    assert s.starttls_offered is False and s.starttls is None
    assert findings(WireView(cell, (s,)))[0].classes == ("starttls-not-offered",)


# --------------------------------------------------------------------------- IMAP and POP3


def test_imap_starttls_and_login_inside_tls(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("imap", Mode.STARTTLS)
    with _Mail("imap", _server_ctx(pki)) as server:
        ep = _front(relay, pki, cell, server.port)
        imap = imaplib.IMAP4(ep.host, ep.port, timeout=5)
        imap.starttls(ssl_context=_client_ctx(pki))
        imap.login(ep.username, ep.password)
        imap.logout()
        s = ep.last_session()
    assert s.starttls_offered and s.starttls is not None and s.starttls.accepted
    assert s.handshake_completed and not s.credentials_in_clear


def test_imap_login_in_clear_is_masked(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("imap", Mode.STARTTLS)
    with _Mail("imap", _server_ctx(pki)) as server:
        ep = _front(relay, pki, cell, server.port)
        imap = imaplib.IMAP4(ep.host, ep.port, timeout=5)
        imap.login(ep.username, ep.password)
        imap.logout()
        s = ep.last_session()
    assert s.credentials == ["LOGIN"]
    assert any(ln.text.endswith("LOGIN tester@mailtls.test ***") for ln in s.dialogue)
    assert "s3cret-pass" not in s.model_dump_json()
    assert insecurity(WireView(cell, (s,)), ok=True) is not None


def test_pop3_capa_stls_and_user_pass_in_clear(relay: Recorder, pki: SessionPKI) -> None:
    cell = _cell("pop3", Mode.STARTTLS)
    with _Mail("pop3", _server_ctx(pki)) as server:
        ep = _front(relay, pki, cell, server.port)
        pop = poplib.POP3(ep.host, ep.port, timeout=5)
        pop.capa()
        pop.user(ep.username)
        pop.pass_(ep.password)
        pop.quit()
        s = ep.last_session()
        pop = poplib.POP3(ep.host, ep.port, timeout=5)
        pop.stls(context=_client_ctx(pki))
        pop.quit()
        tls = ep.last_session()
    assert s.starttls_offered is True and s.credentials == ["USER/PASS"]
    assert "s3cret-pass" not in s.model_dump_json()
    assert tls.starttls is not None and tls.starttls.accepted and tls.handshake_completed


# --------------------------------------------------------------------------- pieces


def test_dialogue_follows_pipelined_smtp_answers_in_order() -> None:
    d = Dialogue("smtp")
    d.feed("server", b"220 hi\r\n")
    d.feed("client", b"EHLO x\r\n")
    d.feed("server", b"250-x\r\n250 PIPELINING\r\n")
    d.feed("client", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    d.feed("server", b"250 ok\r\n250 ok\r\n354 go\r\n")
    d.feed("client", b"Subject: x\r\n\r\nhello\r\n.\r\n")
    d.feed("server", b"250 queued\r\n")
    assert d.message_accepted is True and d.starttls_offered is False
    assert [ln.text for ln in d.lines if ln.dir == "client"][-2:] == ["(message, 21 bytes)", "."]


def test_dialogue_hands_over_the_bytes_that_follow_starttls() -> None:
    d = Dialogue("smtp")
    d.feed("server", b"220 hi\r\n")
    d.feed("client", b"STARTTLS\r\n")
    rest = d.feed("server", b"220 go ahead\r\n\x16\x03\x03")
    assert d.tls_from_here and rest == b"\x16\x03\x03"


def test_observer_ignores_garbage_and_names_ciphers() -> None:
    obs = TLSObserver()
    obs.feed("client", b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\xff")  # a truncated ClientHello
    assert obs.client_hello is None
    assert cipher_name(0xC02F) == "ECDHE-RSA-AES128-GCM-SHA256" and cipher_name(0x1301) == "TLS_AES_128_GCM_SHA256"
    assert cipher_name(0xFEFE) == "0xfefe"
    assert looks_like_tls(b"\x16\x03\x01") and not looks_like_tls(b"EHLO")


def test_an_unreachable_server_is_recorded(relay: Recorder, pki: SessionPKI) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    ep = _front(relay, pki, _cell("submission", Mode.STARTTLS), port)
    with socket.create_connection((ep.host, ep.port), timeout=5) as conn:
        conn.settimeout(2)
        assert conn.recv(10) == b""
    [s] = ep.sessions()
    assert s.upstream_error and s.closed_by == "relay"


def test_analyzer_records_an_implicit_session_without_a_dialogue() -> None:
    a = SessionAnalyzer(session_id="x", cell="c", protocol="smtp", implicit=True, client="127.0.0.1:1")
    a.feed("client", b"EHLO x\r\n")
    s = a.finish(closed_by="client", close_how="fin")
    assert s.not_tls and s.dialogue == [] and s.first_client_bytes == "EHLO x\r\n"


# --------------------------------------------------------------------------- DHE over a small group

DHE_1024 = TLSPolicy(
    "dhe-1024", "TLSv1.2", "TLSv1.2", ciphers="DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384", dh_bits=1024
)


def _dh_server_ctx(pki: SessionPKI, folder: Path) -> ssl.SSLContext:
    ctx = _server_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)
    ctx.set_ciphers(DHE_1024.openssl_ciphers())
    (folder / "dh1024.pem").write_text(dh_params_pem(1024))
    ctx.load_dh_params(str(folder / "dh1024.pem"))
    return ctx


def test_observer_reads_the_size_of_the_server_dh_group(pki: SessionPKI, tmp_path: Path) -> None:
    server_ctx = _dh_server_ctx(pki, tmp_path)
    client_ctx = _client_ctx(pki)
    client_ctx.set_ciphers("DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=1")
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=pki.server_hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    observer = TLSObserver()
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, obj in (("client", client), ("server", server)):
            if not done[side]:
                with contextlib.suppress(ssl.SSLWantReadError):
                    obj.do_handshake()
                    done[side] = True
        sent = c_out.read()
        observer.feed("client", sent)
        s_in.write(sent)
        answered = s_out.read()
        observer.feed("server", answered)
        c_in.write(answered)
        if all(done.values()):
            break
    assert all(done.values()) and client.cipher()[0] == "DHE-RSA-AES256-GCM-SHA384"
    assert observer.server_dh_bits == 1024 and observer.server_hello_done


def test_a_small_dh_group_refused_is_weak_dh_and_taken_is_insecure(
    relay: Recorder, pki: SessionPKI, tmp_path: Path
) -> None:
    cell = Cell(
        "embedded",
        SERVICES["submission"],
        Mode.STARTTLS,
        DHE_1024,
        CertProfile.VALID,
        AuthPolicy("default", mechanisms=("PLAIN", "LOGIN"), required=True, tls_only=False),
    )
    with _Mail("smtp", _dh_server_ctx(pki, tmp_path)) as server:
        ep = _front(relay, pki, cell, server.port)
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp, pytest.raises(ssl.SSLError, match="dh key too small"):
            smtp.starttls(context=_client_ctx(pki))
        refused = ep.last_session()
        weak = _client_ctx(pki)
        weak.set_ciphers("DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=1")
        with smtplib.SMTP(ep.host, ep.port, timeout=5) as smtp:
            smtp.starttls(context=weak)
            smtp.noop()
        taken = ep.last_session()
    # The server chose DHE and the client refused its group: that is weak-dh, not "no shared cipher".
    assert [(a.sender, a.description) for a in refused.alerts] == [("client", "handshake_failure")]
    [finding] = [f for f in findings(WireView(cell, (refused,))) if f.classes]
    assert finding.classes == ("weak-dh",)
    assert insecurity(WireView(cell, (refused,)), ok=False) is None
    judged = insecurity(WireView(cell, (taken,)), ok=True)
    assert judged is not None and judged[0] == "weak-dh", judged
    assert "DHE-RSA-AES128-GCM-SHA256 over the server's 1024-bit DH group" in judged[1][0]


def test_client_hello_lists_are_read_whole_and_grease_is_skipped() -> None:
    # A real ClientHello of this Python's OpenSSL (through memory BIOs), then the same hello with a GREASE
    # value (RFC 8701) put in front of its suite list: the parsed hello must not change.
    import ssl
    import struct

    from pytest_mailtls.wire import tlsrecords

    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="mail.example.test")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    record = outgoing.read()
    msg = record[5 + 4 :]  # record header, handshake header
    hello = tlsrecords._parse_client_hello(msg)
    assert hello.sni == "mail.example.test"
    assert "TLSv1.3" in hello.versions and hello.versions_from == "supported_versions"
    assert "TLS_AES_256_GCM_SHA384" in hello.ciphers and hello.groups and hello.signature_algorithms
    pos = 2 + 32 + 1 + msg[34]
    cs_len = int.from_bytes(msg[pos : pos + 2], "big")
    greased = msg[:pos] + struct.pack(">HH", cs_len + 2, 0x3A3A) + msg[pos + 2 :]
    assert tlsrecords._parse_client_hello(greased) == hello
    # Every GREASE value, and only those.
    grease = [v for v in range(0x10000) if (v & 0x0F0F) == 0x0A0A and (v >> 8) == (v & 0xFF)]
    assert sorted(tlsrecords._GREASE) == grease
