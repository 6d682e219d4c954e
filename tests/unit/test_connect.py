"""connect.py and readiness.py against tiny loopback mail servers written here.

The servers speak just enough SMTP, IMAP and POP3 (greeting, capabilities,
STARTTLS/STLS, NOOP, QUIT/LOGOUT) over real sockets and real TLS with the
session PKI, and record the SNI name each handshake carried.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_mailtls import connect
from pytest_mailtls.connect import ProtocolError, open_client, plain_exchange, tls_handshake
from pytest_mailtls.errors import ServerStartError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy
from pytest_mailtls.readiness import wait_ready

SNI_NAME = "mail.mailtls.test"  # in every valid certificate, and resolvable by no DNS: dialing it would be a bug
TLS_ALERT = b"\x15\x03\x03\x00\x02\x02\x46"  # fatal protocol_version alert, as a TLS server answers plaintext
# readiness.py reaches down to TLSv1 on purpose (legacy cells must be reachable)
TLSV1_DEPRECATED = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1 is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    """A PKI whose CA signed none of the servers' certificates."""
    return SessionPKI(tmp_path_factory.mktemp("stranger"))


class _Conn:
    """Server side of one connection: CRLF lines in and out, upgradable to TLS."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.buf = b""
        self.tls = False

    def send(self, *lines: str) -> None:
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))

    def line(self) -> str | None:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self.buf += chunk
        raw, _, self.buf = self.buf.partition(b"\n")
        return raw.rstrip(b"\r").decode("utf-8", "replace")

    def upgrade(self, ctx: ssl.SSLContext) -> None:
        self.sock = ctx.wrap_socket(self.sock, server_side=True)
        self.tls = True


class MiniServer:
    """A loopback SMTP/IMAP/POP3 responder on 127.0.0.1.

    ``implicit``: TLS from the first byte. ``offer_starttls``/``refuse_starttls``
    shape the STARTTLS answer; ``banner`` replaces the greeting (a non-mail
    server); ``raw_first`` is sent instead of any greeting (TLS bytes).
    """

    def __init__(
        self,
        protocol: str,
        ctx: ssl.SSLContext | None,
        *,
        implicit: bool = False,
        offer_starttls: bool = True,
        refuse_starttls: bool = False,
        banner: str | None = None,
        raw_first: bytes | None = None,
        port: int = 0,
    ) -> None:
        self.protocol, self.ctx, self.implicit = protocol, ctx, implicit
        self.offer_starttls, self.refuse_starttls = offer_starttls, refuse_starttls
        self.banner, self.raw_first = banner, raw_first
        self.sni: list[str | None] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.01)
        self.port: int = self.listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            sock.settimeout(5)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        conn = _Conn(sock)
        try:
            if self.raw_first is not None:
                sock.sendall(self.raw_first)
                time.sleep(0.05)
                return
            if self.implicit:
                assert self.ctx is not None
                conn.upgrade(self.ctx)
            getattr(self, f"_{self.protocol}")(conn)
        except (OSError, ssl.SSLError) as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.sock.close()

    def _starttls_allowed(self, conn: _Conn) -> bool:
        return self.offer_starttls and not conn.tls and self.ctx is not None

    def _smtp(self, conn: _Conn) -> None:
        conn.send(self.banner or "220 mini.test ESMTP ready")
        while (line := conn.line()) is not None:
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                caps = ["mini.test", "PIPELINING", "AUTH PLAIN LOGIN"]
                if self._starttls_allowed(conn):
                    caps.append("STARTTLS")
                caps.append("8BITMIME")
                conn.send(*[f"250-{c}" for c in caps[:-1]], f"250 {caps[-1]}")
            elif verb == "STARTTLS" and self._starttls_allowed(conn):
                if self.refuse_starttls:
                    conn.send("454 4.7.0 TLS not available due to local problem")
                    continue
                conn.send("220 2.0.0 Ready to start TLS")
                assert self.ctx is not None
                conn.upgrade(self.ctx)
            elif verb == "NOOP":
                conn.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                conn.send("221 2.0.0 Bye")
                return
            else:
                conn.send("502 5.5.2 Error: command not recognized")

    def _imap(self, conn: _Conn) -> None:
        conn.send(self.banner or "* OK mini IMAP ready")
        while (line := conn.line()) is not None:
            tag, _, rest = line.partition(" ")
            verb = rest.split(" ")[0].upper()
            if verb == "CAPABILITY":
                caps = ["IMAP4rev1", "SASL-IR", "AUTH=PLAIN", "AUTH=LOGIN"]
                if self._starttls_allowed(conn):
                    caps.insert(1, "STARTTLS")
                conn.send("* CAPABILITY " + " ".join(caps), f"{tag} OK Capability completed")
            elif verb == "STARTTLS" and self._starttls_allowed(conn):
                if self.refuse_starttls:
                    conn.send(f"{tag} NO TLS is not available")
                    continue
                conn.send(f"{tag} OK Begin TLS negotiation now")
                assert self.ctx is not None
                conn.upgrade(self.ctx)
            elif verb == "NOOP":
                conn.send(f"{tag} OK NOOP completed")
            elif verb == "LOGOUT":
                conn.send("* BYE Logging out", f"{tag} OK Logout completed")
                return
            else:
                conn.send(f"{tag} BAD Unknown command")

    def _pop3(self, conn: _Conn) -> None:
        conn.send(self.banner or "+OK mini POP3 ready")
        while (line := conn.line()) is not None:
            verb = line.split(" ")[0].upper()
            if verb == "CAPA":
                caps = ["TOP", "UIDL", "USER", "SASL PLAIN LOGIN"]
                if self._starttls_allowed(conn):
                    caps.append("STLS")
                conn.send("+OK Capability list follows", *caps, ".")
            elif verb == "STLS" and self._starttls_allowed(conn):
                if self.refuse_starttls:
                    conn.send("-ERR TLS not available")
                    continue
                conn.send("+OK Begin TLS negotiation")
                assert self.ctx is not None
                conn.upgrade(self.ctx)
            elif verb == "NOOP":
                conn.send("+OK")
            elif verb == "QUIT":
                conn.send("+OK Bye")
                return
            else:
                conn.send("-ERR Unknown command")


ServerFactory = Callable[..., MiniServer]


@pytest.fixture
def server_ctx(pki: SessionPKI) -> ssl.SSLContext:
    files = pki.server_files(CertProfile.VALID)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx


@pytest.fixture
def serve(server_ctx: ssl.SSLContext) -> Iterator[ServerFactory]:
    """Start MiniServers that record the SNI name of each handshake; all closed at teardown."""
    started: list[MiniServer] = []

    def start(protocol: str, **kwargs: Any) -> MiniServer:
        ctx = kwargs.pop("ctx", server_ctx)
        server = MiniServer(protocol, ctx, **kwargs)
        if ctx is not None:
            ctx.sni_callback = lambda sslobj, name, _ctx: server.sni.append(name)  # type: ignore[assignment]
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def _client_ctx(pki: SessionPKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca_file))


def _exchange(port: int, protocol: str, **kwargs: bool) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        return plain_exchange(sock, protocol, **kwargs)


PROTOCOLS = ["smtp", "imap", "pop3"]


# --- plaintext exchange -----------------------------------------------------------------------


def test_smtp_greeting_and_capabilities(serve: ServerFactory) -> None:
    greeting = _exchange(serve("smtp").port, "smtp")
    assert greeting.banner == "mini.test ESMTP ready"
    assert greeting.capabilities == ["PIPELINING", "AUTH PLAIN LOGIN", "STARTTLS", "8BITMIME"]
    assert greeting.starttls
    assert greeting.auth_mechanisms() == ["PLAIN", "LOGIN"]


def test_imap_greeting_and_capabilities(serve: ServerFactory) -> None:
    greeting = _exchange(serve("imap").port, "imap")
    assert greeting.banner == "* OK mini IMAP ready"
    assert greeting.capabilities == ["IMAP4rev1", "STARTTLS", "SASL-IR", "AUTH=PLAIN", "AUTH=LOGIN"]
    assert greeting.starttls
    assert greeting.auth_mechanisms() == ["PLAIN", "LOGIN"]


def test_pop3_greeting_and_capabilities(serve: ServerFactory) -> None:
    greeting = _exchange(serve("pop3").port, "pop3")
    assert greeting.banner == "+OK mini POP3 ready"
    assert "STLS" in greeting.capabilities
    assert greeting.starttls
    assert greeting.auth_mechanisms() == ["USER", "PLAIN", "LOGIN"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_starttls_not_offered_is_seen(serve: ServerFactory, protocol: str) -> None:
    greeting = _exchange(serve(protocol, offer_starttls=False).port, protocol)
    assert not greeting.starttls
    assert greeting.auth_mechanisms()


def test_smtp_starttls_not_offered_is_a_protocol_error(serve: ServerFactory) -> None:
    with pytest.raises(ProtocolError, match="STARTTLS is not offered"):
        _exchange(serve("smtp", offer_starttls=False).port, "smtp", starttls=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_starttls_refused_is_a_protocol_error(serve: ServerFactory, protocol: str) -> None:
    with pytest.raises(ProtocolError, match="refused"):
        _exchange(serve(protocol, refuse_starttls=True).port, protocol, starttls=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_not_a_mail_server_is_a_protocol_error(serve: ServerFactory, protocol: str) -> None:
    server = serve(protocol, banner="SSH-2.0-OpenSSH_9.2p1 Debian-2")
    with pytest.raises(ProtocolError, match=re.escape("SSH-2.0")):
        _exchange(server.port, protocol)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_protocol_is_a_protocol_error(serve: ServerFactory, protocol: str) -> None:
    other = {"smtp": "imap", "imap": "pop3", "pop3": "smtp"}[protocol]
    with pytest.raises(ProtocolError):
        _exchange(serve(other).port, protocol)


def test_server_that_hangs_up_is_a_protocol_error(serve: ServerFactory) -> None:
    with pytest.raises(ProtocolError, match="closed the connection"):
        _exchange(serve("smtp", raw_first=b"").port, "smtp")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tls_bytes_where_plaintext_was_expected(serve: ServerFactory, protocol: str) -> None:
    with pytest.raises(ProtocolError, match="implicit TLS"):
        _exchange(serve(protocol, raw_first=TLS_ALERT).port, protocol)


def test_the_first_line_tells_tls_silence_and_other_protocols_apart(serve: ServerFactory) -> None:
    """The probe builds its one-line errors on these: each failure of the greeting has its own type."""
    with pytest.raises(connect.ImplicitTLSError):
        _exchange(serve("smtp", raw_first=TLS_ALERT).port, "smtp")
    with pytest.raises(connect.WrongProtocolError) as wrong:
        _exchange(serve("pop3").port, "imap")
    assert wrong.value.greeting == "+OK mini POP3 ready" and connect.guess_protocol(wrong.value.greeting) == "pop3"
    with pytest.raises(ProtocolError, match="SMTP greeting 554") as refused:
        _exchange(serve("smtp", banner="554 5.3.2 no service here").port, "smtp")
    assert not isinstance(refused.value, connect.WrongProtocolError)  # an SMTP server, refusing: not another protocol
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        with (
            socket.create_connection(silent.getsockname(), timeout=0.3) as sock,
            pytest.raises(connect.NoGreetingError),
        ):
            plain_exchange(sock, "smtp")
    finally:
        silent.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_one_helper_per_step(pki: SessionPKI, serve: ServerFactory, protocol: str) -> None:
    """greet, capabilities and starttls are the steps plain_exchange and the probe share; after them TLS starts."""
    server = serve(protocol)
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as sock:
        lines = connect.Lines(sock)
        assert connect.guess_protocol(connect.greet(lines, protocol)) == protocol
        caps = connect.capabilities(lines, protocol, name="mailtls-probe.invalid")
        assert connect.auth_mechanisms(caps) == ["PLAIN", "LOGIN"]  # SASL mechanisms only: no POP3 USER
        connect.starttls(lines, protocol)
        with _client_ctx(pki).wrap_socket(sock, server_hostname=SNI_NAME) as tls:
            assert tls.version() == "TLSv1.3"


def test_unknown_protocol() -> None:
    with socket.socket() as sock, pytest.raises(ValueError, match="unknown protocol 'nntp'"):
        plain_exchange(sock, "nntp")


# --- TLS handshakes -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_tls_handshake(pki: SessionPKI, serve: ServerFactory, protocol: str, implicit: bool) -> None:
    server = serve(protocol, implicit=implicit)
    result = tls_handshake(
        "127.0.0.1",
        server.port,
        protocol=protocol,
        implicit=implicit,
        context=_client_ctx(pki),
        server_hostname=SNI_NAME,
        timeout=3,
    )
    assert result.version == "TLSv1.3"
    assert result.cipher.startswith("TLS_")
    assert result.peer_cert and result.peer_cert.startswith(b"\x30")  # DER
    assert result.greeting.auth_mechanisms()
    assert server.sni == [SNI_NAME]
    # STARTTLS cells show their plaintext capabilities; implicit ones greet inside TLS (no STARTTLS there)
    assert result.greeting.starttls is not implicit


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "implicit"])
def test_tls_handshake_fails_verification_with_a_foreign_ca(
    stranger: SessionPKI, serve: ServerFactory, implicit: bool
) -> None:
    server = serve("smtp", implicit=implicit)
    stranger = stranger
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(
            "127.0.0.1",
            server.port,
            protocol="smtp",
            implicit=implicit,
            context=_client_ctx(stranger),
            server_hostname=SNI_NAME,
            timeout=3,
        )


def test_tls_handshake_host_name_mismatch(pki: SessionPKI, serve: ServerFactory) -> None:
    server = serve("imap", implicit=True)
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        tls_handshake(
            "127.0.0.1",
            server.port,
            protocol="imap",
            implicit=True,
            context=_client_ctx(pki),
            server_hostname="elsewhere.mailtls.test",
            timeout=3,
        )
    assert server.sni == ["elsewhere.mailtls.test"]


def test_tls_handshake_starttls_refused(pki: SessionPKI, serve: ServerFactory) -> None:
    server = serve("pop3", refuse_starttls=True)
    with pytest.raises(ProtocolError, match="STLS refused"):
        tls_handshake(
            "127.0.0.1",
            server.port,
            protocol="pop3",
            implicit=False,
            context=_client_ctx(pki),
            server_hostname=SNI_NAME,
            timeout=3,
        )
    assert server.sni == []


def test_tls_handshake_nothing_listening(pki: SessionPKI) -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedError):
        tls_handshake(
            "127.0.0.1", port, protocol="smtp", implicit=True, context=_client_ctx(pki), server_hostname=SNI_NAME
        )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plaintext_client_against_implicit_tls_server(pki: SessionPKI, serve: ServerFactory, protocol: str) -> None:
    server = serve(protocol, implicit=True)
    started = time.monotonic()
    with pytest.raises(ProtocolError, match="implicit TLS"):
        tls_handshake(
            "127.0.0.1",
            server.port,
            protocol=protocol,
            implicit=False,
            context=_client_ctx(pki),
            server_hostname=SNI_NAME,
            timeout=0.5,
        )
    assert time.monotonic() - started < 1.5


def test_tls_client_against_a_plaintext_only_server(pki: SessionPKI, serve: ServerFactory) -> None:
    server = serve("smtp", ctx=None)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_handshake(
            "127.0.0.1",
            server.port,
            protocol="smtp",
            implicit=True,
            context=_client_ctx(pki),
            server_hostname=SNI_NAME,
            timeout=2,
        )


# --- stdlib clients through open_client -------------------------------------------------------------

_SERVICE = {
    ("smtp", False): "submission",
    ("smtp", True): "smtps",
    ("imap", False): "imap",
    ("imap", True): "imaps",
    ("pop3", False): "pop3",
    ("pop3", True): "pop3s",
}


def _endpoint(pki: SessionPKI, protocol: str, port: int, mode: Mode) -> Endpoint:
    implicit = mode is Mode.IMPLICIT
    tls = mode is not Mode.PLAIN
    cell = Cell(
        "james",
        SERVICES[_SERVICE[(protocol, implicit)]],
        mode,
        TLSPolicy("intermediate") if tls else None,
        CertProfile.VALID if tls else None,
        AuthPolicy("default"),
    )
    return Endpoint(
        cell=cell,
        host="127.0.0.1",
        port=port,
        server_hostname=SNI_NAME,
        ca_file=str(pki.ca_file),
        username="tester@mailtls.test",
        password="secret",
    )


@pytest.fixture
def dialed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address a client dials; dialing anything but the IP fails the test instead of asking DNS."""
    real = socket.create_connection
    seen: list[tuple[str, int]] = []

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        seen.append(address)
        if address[0] != "127.0.0.1":
            raise AssertionError(f"dialed {address[0]!r} instead of the endpoint's IP")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return seen


def _noop(client: Any, protocol: str) -> None:
    if protocol == "smtp":
        assert client.noop()[0] == 250
        client.quit()
    elif protocol == "imap":
        assert client.noop()[0] == "OK"
        client.logout()
    else:
        assert client.noop().startswith(b"+OK")
        client.quit()


@pytest.mark.parametrize(
    ("protocol", "mode"),
    [
        ("smtp", Mode.STARTTLS),
        ("smtp", Mode.STARTTLS_REQUIRED),
        ("smtp", Mode.IMPLICIT),
        ("imap", Mode.STARTTLS),
        ("imap", Mode.IMPLICIT),
        ("pop3", Mode.STARTTLS),
        ("pop3", Mode.STARTTLS_REQUIRED),
        ("pop3", Mode.IMPLICIT),
    ],
)
def test_open_client_dials_the_ip_and_sends_sni(
    pki: SessionPKI, serve: ServerFactory, dialed: list[tuple[str, int]], protocol: str, mode: Mode
) -> None:
    server = serve(protocol, implicit=mode is Mode.IMPLICIT)
    client = open_client(_endpoint(pki, protocol, server.port, mode), timeout=3)
    assert client.sock.version() == "TLSv1.3"
    _noop(client, protocol)
    assert dialed == [("127.0.0.1", server.port)]
    assert server.sni == [SNI_NAME]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_open_client_plain_stays_plain(
    pki: SessionPKI, serve: ServerFactory, dialed: list[tuple[str, int]], protocol: str
) -> None:
    server = serve(protocol)
    client = open_client(_endpoint(pki, protocol, server.port, Mode.PLAIN), timeout=3)
    assert not isinstance(client.sock, ssl.SSLSocket)
    _noop(client, protocol)
    assert server.sni == []
    assert dialed == [("127.0.0.1", server.port)]


def test_open_client_smtp_asks_no_dns(pki: SessionPKI, serve: ServerFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # smtplib looks the machine's own name up (getfqdn: a DNS query, slow where DNS is broken) unless told a name.
    def getfqdn(name: str = "") -> str:
        raise AssertionError("socket.getfqdn() called: a DNS lookup")

    monkeypatch.setattr(socket, "getfqdn", getfqdn)
    server = serve("smtp")
    _noop(open_client(_endpoint(pki, "smtp", server.port, Mode.STARTTLS), timeout=3), "smtp")


def test_open_client_starttls_false_skips_the_upgrade(pki: SessionPKI, serve: ServerFactory) -> None:
    server = serve("smtp")
    client = open_client(_endpoint(pki, "smtp", server.port, Mode.STARTTLS), starttls=False, timeout=3)
    assert not isinstance(client.sock, ssl.SSLSocket)
    assert client.has_extn("starttls")
    _noop(client, "smtp")
    assert server.sni == []


@pytest.mark.parametrize("protocol", ["smtp", ("imap"), ("pop3")])
def test_open_client_verifies_the_certificate(stranger: SessionPKI, serve: ServerFactory, protocol: str) -> None:
    server = serve(protocol)
    endpoint = _endpoint(stranger, protocol, server.port, Mode.STARTTLS)
    with pytest.raises(ssl.SSLCertVerificationError):
        open_client(endpoint, timeout=3)
    assert server.sni == [SNI_NAME]


# --- readiness ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


@TLSV1_DEPRECATED
def test_wait_ready_returns_when_servers_come_up_late(pki: SessionPKI, serve: ServerFactory) -> None:
    # Hold the ports bound but not listening (connections are refused, as before a server starts), so a
    # parallel test cannot take them before the late servers do.
    holders = []
    for _ in range(2):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holders.append(holder)
    ports = [h.getsockname()[1] for h in holders]
    endpoints = [_endpoint(pki, "smtp", ports[0], Mode.PLAIN), _endpoint(pki, "imap", ports[1], Mode.STARTTLS)]
    late: list[MiniServer] = []

    def start_late() -> None:
        for protocol, port, holder in zip(["smtp", "imap"], ports, holders, strict=True):
            holder.close()
            late.append(serve(protocol, port=port))

    timer = threading.Timer(0.3, start_late)
    started = time.monotonic()
    timer.start()
    try:
        wait_ready(endpoints, timeout=4)
    finally:
        timer.join()
    waited = time.monotonic() - started
    assert 0.3 <= waited < 3
    assert late[1].sni == [SNI_NAME]  # the STARTTLS cell was checked by a real handshake


@TLSV1_DEPRECATED
def test_wait_ready_raises_naming_cell_address_time_and_log(pki: SessionPKI) -> None:
    port = _free_port()
    endpoint = _endpoint(pki, "pop3", port, Mode.IMPLICIT)
    log = "mini[1]: starting\nmini[1]: fatal: cannot bind 995: permission denied"
    started = time.monotonic()
    with pytest.raises(ServerStartError) as err:
        wait_ready([endpoint], timeout=0.3, logs=lambda: log)
    waited = time.monotonic() - started
    assert 0.3 <= waited < 2
    message = str(err.value)
    assert endpoint.id in message
    assert f"127.0.0.1:{port}" in message
    assert re.search(r"after 0\.\d s", message), message
    assert "ConnectionRefusedError" in message
    assert "--mailtls-ready-timeout" in message
    assert err.value.log == log
    assert any("cannot bind 995" in note for note in err.value.__notes__)


@TLSV1_DEPRECATED
def test_wait_ready_fails_on_a_certificate_it_cannot_verify(stranger: SessionPKI, serve: ServerFactory) -> None:
    # Listening is not ready: a port whose handshake does not verify never passes.
    server = serve("smtp")
    endpoint = _endpoint(stranger, "smtp", server.port, Mode.STARTTLS)
    with pytest.raises(ServerStartError, match="certificate verify failed"):
        wait_ready([endpoint], timeout=0.3)


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_wait_ready_under_warnings_as_errors(pki: SessionPKI, serve: ServerFactory) -> None:
    # Many projects run with filterwarnings = error; readiness must not depend on warning filters.
    server = serve("smtp")
    wait_ready([_endpoint(pki, "smtp", server.port, Mode.STARTTLS)], timeout=0.3)


def test_wait_ready_stops_early_when_the_server_died(pki: SessionPKI) -> None:
    endpoint = _endpoint(pki, "smtp", _free_port(), Mode.PLAIN)
    started = time.monotonic()
    with pytest.raises(ServerStartError, match=r"server stopped \(container exited with 1\)"):
        wait_ready([endpoint], timeout=10, alive=lambda: "container exited with 1")
    assert time.monotonic() - started < 2
