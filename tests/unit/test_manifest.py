"""The manifest contract: Endpoint JSON, atomic writes, clear read errors, captured mail, client contexts."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mailtls.errors import ManifestError
from pytest_mailtls.manifest import (
    Endpoint,
    ManifestOwner,
    _process_start,
    check_replaceable,
    find_endpoint,
    read_manifest,
    write_manifest,
)
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

LEGACY = TLSPolicy("legacy", min_version="TLSv1", max_version="TLSv1.3", ciphers="ALL:@SECLEVEL=0")
INTERMEDIATE = TLSPolicy("intermediate", ciphersuites="TLS_AES_256_GCM_SHA384")
MTLS = AuthPolicy("mtls", ("PLAIN", "LOGIN"), client_cert=True)
CLEARTEXT = AuthPolicy("cleartext-auth", ("PLAIN", "LOGIN"), tls_only=False)

TOP_KEYS = {
    "id", "server", "service", "protocol", "mode", "policy", "cert", "client_cert", "network", "host", "port",
    "server_hostname", "ca_file", "auth", "mailbox", "client_cert_file", "client_key_file", "extra",
}  # fmt: skip
POLICY_KEYS = {"name", "min_version", "max_version", "ciphers", "ciphersuites", "dh_bits"}
AUTH_KEYS = {"name", "mechanisms", "username", "password", "tls_only", "required"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


def _endpoint(
    cell: Cell, *, port: int = 2525, ca_file: str = "/tmp/ca.pem", mailbox: str | None = None, **kw: object
) -> Endpoint:
    return Endpoint(
        cell=cell,
        host="127.0.0.1",
        port=port,
        server_hostname="localhost",
        ca_file=ca_file,
        username="tester@mailtls.test",
        password="secret",
        mailbox=mailbox,
        **kw,  # type: ignore[arg-type]
    )


def _tls_cell(policy: TLSPolicy = LEGACY, auth: AuthPolicy | None = None) -> Cell:
    extra = {"auth": auth} if auth else {}
    return Cell("postfix", SERVICES["submission"], Mode.STARTTLS, policy, CertProfile.EXPIRED, **extra)


PLAIN_CELL = Cell("dovecot", SERVICES["imap"], Mode.PLAIN, None, None, CLEARTEXT)
MTLS_CELL = Cell("james", SERVICES["pop3s"], Mode.IMPLICIT, INTERMEDIATE, CertProfile.VALID, MTLS)

ENDPOINTS = {
    "tls": _endpoint(_tls_cell(), mailbox="/tmp/maildir", extra={"container": "abc"}),
    "plain": _endpoint(PLAIN_CELL),
    "mtls": _endpoint(MTLS_CELL, client_cert_file="/tmp/client.pem", client_key_file="/tmp/client-key.pem"),
}


# --- JSON ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ENDPOINTS)
def test_round_trip_through_json_text(kind: str) -> None:
    endpoint = ENDPOINTS[kind]
    record = json.loads(json.dumps(endpoint.to_json()))
    again = Endpoint.from_json(record)
    assert again == endpoint
    assert again.id == endpoint.id
    assert again.cell.auth.client_cert == endpoint.cell.auth.client_cert


@pytest.mark.parametrize("kind", ENDPOINTS)
def test_record_has_exactly_the_documented_keys(kind: str) -> None:
    record = ENDPOINTS[kind].to_json()
    assert set(record) == TOP_KEYS
    assert set(record["auth"]) == AUTH_KEYS
    if record["policy"] is not None:
        assert set(record["policy"]) == POLICY_KEYS


def test_tls_record_values() -> None:
    record = ENDPOINTS["tls"].to_json()
    assert record["id"] == "postfix-submission-starttls-legacy-expired"
    assert (record["server"], record["service"], record["protocol"], record["mode"]) == (
        "postfix",
        "submission",
        "smtp",
        "starttls",
    )
    assert record["policy"] == {
        "name": "legacy",
        "min_version": "TLSv1",
        "max_version": "TLSv1.3",
        "ciphers": "ALL:@SECLEVEL=0",
        "ciphersuites": None,
        "dh_bits": None,
    }
    assert record["cert"] == "expired"
    assert record["client_cert"] is False
    assert (record["host"], record["port"], record["server_hostname"]) == ("127.0.0.1", 2525, "localhost")
    assert record["auth"]["username"] == "tester@mailtls.test"
    assert record["auth"]["password"] == "secret"
    assert record["auth"]["mechanisms"] == ["PLAIN", "LOGIN"]
    assert record["auth"]["tls_only"] is True


def test_plain_record_has_no_policy_and_no_cert() -> None:
    record = ENDPOINTS["plain"].to_json()
    assert record["policy"] is None
    assert record["cert"] is None
    assert record["mode"] == "plain"
    assert record["auth"]["tls_only"] is False


def test_mtls_record_carries_client_cert_flag_and_files() -> None:
    record = ENDPOINTS["mtls"].to_json()
    assert record["client_cert"] is True
    assert record["client_cert_file"] == "/tmp/client.pem"
    assert record["client_key_file"] == "/tmp/client-key.pem"
    assert record["policy"]["ciphersuites"] == "TLS_AES_256_GCM_SHA384"


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"])
def test_versions_are_spelled_like_openssl(version: str) -> None:
    endpoint = _endpoint(_tls_cell(TLSPolicy("p", min_version=version, max_version=version)))
    record = json.loads(json.dumps(endpoint.to_json()))
    assert record["policy"]["min_version"] == record["policy"]["max_version"] == version


def test_url_and_address() -> None:
    assert ENDPOINTS["tls"].url == "smtp://localhost:2525"
    assert ENDPOINTS["mtls"].url == "pop3s://localhost:2525"
    assert ENDPOINTS["plain"].url == "imap://localhost:2525"
    assert ENDPOINTS["tls"].address == "tester@mailtls.test"


# --- write / read ----------------------------------------------------------------------------


def test_write_then_read(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "sub" / "manifest.json", ENDPOINTS.values())
    assert path == tmp_path / "sub" / "manifest.json"
    doc = json.loads(path.read_text())
    assert doc["version"] == 1
    assert [r["id"] for r in doc["cells"]] == [e.id for e in ENDPOINTS.values()]
    assert read_manifest(path) == list(ENDPOINTS.values())


def test_write_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "manifest.json", [ENDPOINTS["tls"]])
    with path.open() as reader:  # a reader that opened the old file keeps reading the whole old file
        write_manifest(path, ENDPOINTS.values())
        assert [r["id"] for r in json.load(reader)["cells"]] == [ENDPOINTS["tls"].id]
    assert len(read_manifest(path)) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_failed_write_keeps_the_old_manifest(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "manifest.json", [ENDPOINTS["tls"]])
    before = path.read_bytes()
    broken = _endpoint(PLAIN_CELL, extra={"unserializable": object()})
    with pytest.raises(TypeError):
        write_manifest(path, [ENDPOINTS["plain"], broken])
    assert path.read_bytes() == before


def test_failed_write_leaves_no_temp_file(tmp_path: Path) -> None:
    path = write_manifest(tmp_path / "manifest.json", [ENDPOINTS["tls"]])
    broken = _endpoint(PLAIN_CELL, extra={"unserializable": object()})
    with pytest.raises(TypeError):
        write_manifest(path, [broken])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_read_missing_manifest_says_how_to_make_one(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(path) in str(err.value)
    assert "no such manifest" in str(err.value)
    assert f"mailtls up --manifest {path}" in str(err.value)


def test_read_bad_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"version": 1,\n "cells": [\n')
    with pytest.raises(ManifestError, match=r"not valid JSON \(line 3: ") as err:
        read_manifest(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("doc", [{"version": 1}, {"cells": {}}, [], "cells"])
def test_read_without_a_cells_list(tmp_path: Path, doc: object) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ManifestError, match="a manifest is an object with a 'cells' list") as err:
        read_manifest(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda r: r.pop("port"), "'port'"),
        (lambda r: r.update(service="nntp"), "'nntp'"),
        (lambda r: r.update(mode="tls"), "'tls'"),
        (lambda r: r.update(cert="rotten"), "'rotten'"),
        (lambda r: r["auth"].pop("password"), "'password'"),
        (lambda r: r["policy"].update(min_version="SSLv3"), "SSLv3"),
        (lambda r: r.update(port="many"), "port 'many' is not a port number (1-65535)"),
        (lambda r: r.update(port=70000), "port 70000 is not a port number"),
        (lambda r: r.update(port=True), "port True is not a port number"),
        (lambda r: r.update(mode="implicit"), "cannot run in mode implicit"),
        (lambda r: r.update(policy="legacy"), "policy must be an object, got str"),
        (lambda r: r.update(auth=[]), "auth must be an object, got list"),
        (lambda r: r.update(extra=[1]), "extra must be an object, got list"),
        (lambda r: r["policy"].pop("min_version"), "missing key 'min_version'"),
    ],
    ids=["no port", "bad service", "bad mode", "bad cert", "no password", "bad version", "bad port", "port range",
         "bool port", "bad combo", "policy string", "auth list", "extra list", "no min_version"],
)  # fmt: skip
def test_read_malformed_record_names_the_record(tmp_path: Path, change: object, why: str) -> None:
    record = ENDPOINTS["tls"].to_json()
    change(record)  # type: ignore[operator]
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"version": 1, "cells": [ENDPOINTS["plain"].to_json(), record]}))
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    message = str(err.value)
    assert message.startswith(f"{path}: cells[1] ('postfix-submission-starttls-legacy-expired') is malformed: ")
    assert why in message
    assert "\n" not in message and "Error(" not in message  # a sentence, not an exception's repr


@pytest.mark.parametrize("record", ["cell", 3, None, []])
def test_read_record_that_is_not_an_object(tmp_path: Path, record: object) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"version": 1, "cells": [ENDPOINTS["plain"].to_json(), record]}))
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(err.value).startswith(f"{path}: cells[1]: a record is an object, got ")


def test_find_endpoint_and_similar_ids() -> None:
    endpoints = list(ENDPOINTS.values())
    assert find_endpoint(endpoints, PLAIN_CELL.id) is ENDPOINTS["plain"]
    with pytest.raises(ManifestError) as err:
        find_endpoint(endpoints, "postfix-submission-starttls-legacy-valid")
    message = str(err.value)
    assert "no cell 'postfix-submission-starttls-legacy-valid'" in message
    assert "Similar: postfix-submission-starttls-legacy-expired" in message
    with pytest.raises(ManifestError) as err:
        find_endpoint(endpoints, "exim-smtp-plain")
    assert "Similar" not in str(err.value)


def test_find_endpoint_suggests_the_closest_id() -> None:
    policies = [TLSPolicy(f"p{i}") for i in range(8)]
    cells = [Cell("postfix", SERVICES["smtps"], Mode.IMPLICIT, p, CertProfile.VALID) for p in policies]
    with pytest.raises(ManifestError) as err:
        find_endpoint([_endpoint(c) for c in cells], "postfix-smtps-implicit-p7-vlaid")
    assert "postfix-smtps-implicit-p7-valid" in str(err.value)


# --- captured mail -------------------------------------------------------------------------


def _deliver(maildir: Path, sub: str, name: str, subject: str, when: float) -> Path:
    file = maildir / sub / name
    file.write_bytes(f"From: a@x\r\nTo: b@y\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n".encode())
    os.utime(file, (when, when))
    return file


def test_messages_and_clear_on_a_hand_written_maildir(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (maildir / sub).mkdir(parents=True)
    now = time.time()
    _deliver(maildir, "new", "1700000002.M2.host", "second", now - 10)
    _deliver(maildir, "cur", "1700000001.M1.host:2,S", "first", now - 20)
    _deliver(maildir, "new", "1700000003.M3.host", "third", now)
    _deliver(maildir, "tmp", "1700000004.M4.host", "still being delivered", now)
    _deliver(maildir, "new", ".hidden", "not a message", now)
    endpoint = _endpoint(PLAIN_CELL, mailbox=str(maildir))

    messages = endpoint.messages()
    assert [m["Subject"] for m in messages] == ["first", "second", "third"]
    assert messages[0].get_content().strip() == "body of first"

    endpoint.clear()
    assert endpoint.messages() == []
    assert [p.name for p in (maildir / "tmp").iterdir()] == ["1700000004.M4.host"]
    assert (maildir / "new").is_dir() and (maildir / "cur").is_dir()


def test_messages_of_an_empty_or_missing_maildir(tmp_path: Path) -> None:
    assert _endpoint(PLAIN_CELL, mailbox=str(tmp_path / "never-created")).messages() == []


def test_messages_without_a_mailbox_is_an_error() -> None:
    endpoint = _endpoint(PLAIN_CELL)
    with pytest.raises(ManifestError, match=f"{PLAIN_CELL.id}: this endpoint captures no mail"):
        endpoint.messages()
    endpoint.clear()  # nothing to clear is not an error


# --- client contexts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("TLSv1", ssl.TLSVersion.TLSv1),
        ("TLSv1.1", ssl.TLSVersion.TLSv1_1),
        ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
        ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
    ],
)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_client_context_pins_the_version(pki: SessionPKI, version: str, expected: ssl.TLSVersion) -> None:
    ctx = _endpoint(_tls_cell(), ca_file=str(pki.ca_file)).client_context(version)
    assert ctx.minimum_version == ctx.maximum_version == expected
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def test_client_context_unknown_version(pki: SessionPKI) -> None:
    with pytest.raises((KeyError, ValueError), match="SSLv3"):
        _endpoint(_tls_cell(), ca_file=str(pki.ca_file)).client_context("SSLv3")


def test_client_context_without_verification() -> None:
    ctx = ENDPOINTS["tls"].client_context(verify=False)
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname


@pytest.fixture
def tls_server(pki: SessionPKI) -> Iterator[tuple[ssl.SSLContext, int, list[str]]]:
    """A loopback TLS server handling one handshake per connection; its context is set up by the test."""
    files = pki.server_files(CertProfile.VALID)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    outcomes: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.settimeout(5)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"hello\n")
                    outcomes.append(tls.version() or "")
            except (ssl.SSLError, OSError) as exc:
                outcomes.append(f"error: {exc}")
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield ctx, listener.getsockname()[1], outcomes
    stop.set()
    thread.join(5)
    listener.close()


def _handshake(ctx: ssl.SSLContext, port: int) -> str:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname="localhost") as tls,
    ):
        assert tls.recv(6) == b"hello\n"  # TLS 1.3 client-certificate refusals surface on the first read
        return tls.version() or ""


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
def test_legacy_version_gets_seclevel_zero(
    pki: SessionPKI, tls_server: tuple[ssl.SSLContext, int, list[str]], version: str
) -> None:
    server_ctx, port, _ = tls_server
    pinned = {"TLSv1": ssl.TLSVersion.TLSv1, "TLSv1.1": ssl.TLSVersion.TLSv1_1}[version]
    server_ctx.minimum_version = server_ctx.maximum_version = pinned
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    endpoint = _endpoint(_tls_cell(), ca_file=str(pki.ca_file))
    assert _handshake(endpoint.client_context(version), port) == version

    # negative twins: the same pin without level 0 fails, and so does a modern client
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.load_verify_locations(pki.ca_file)
    bare.minimum_version = bare.maximum_version = pinned
    with pytest.raises(ssl.SSLError):
        _handshake(bare, port)
    with pytest.raises(ssl.SSLError):
        _handshake(endpoint.client_context("TLSv1.2"), port)


def test_modern_pin_and_its_negative_twin(pki: SessionPKI, tls_server: tuple[ssl.SSLContext, int, list[str]]) -> None:
    server_ctx, port, _ = tls_server
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    endpoint = _endpoint(_tls_cell(INTERMEDIATE), ca_file=str(pki.ca_file))
    assert _handshake(endpoint.client_context("TLSv1.2"), port) == "TLSv1.2"
    assert _handshake(endpoint.client_context("TLSv1.3"), port) == "TLSv1.3"
    assert _handshake(endpoint.client_context(), port) == "TLSv1.3"
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _handshake(endpoint.client_context("TLSv1.3"), port)


def test_client_context_verifies_against_the_session_ca(
    tmp_path: Path, pki: SessionPKI, tls_server: tuple[ssl.SSLContext, int, list[str]]
) -> None:
    _, port, _ = tls_server
    assert _handshake(_endpoint(_tls_cell(), ca_file=str(pki.ca_file)).client_context(), port)
    stranger = SessionPKI(tmp_path / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(_endpoint(_tls_cell(), ca_file=str(stranger.ca_file)).client_context(), port)


@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
def test_mtls_endpoint_presents_the_client_certificate(
    pki: SessionPKI, tls_server: tuple[ssl.SSLContext, int, list[str]], version: str
) -> None:
    server_ctx, port, outcomes = tls_server
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_verify_locations(pki.client_ca_file)
    client = pki.client_files()
    endpoint = _endpoint(
        MTLS_CELL,
        ca_file=str(pki.ca_file),
        client_cert_file=str(client.cert_file),
        client_key_file=str(client.key_file),
    )
    assert _handshake(endpoint.client_context(version), port) == version
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _handshake(endpoint.client_context(version, client_cert=False), port)
    deadline = time.monotonic() + 5  # the server thread records its side after the client saw the alert
    while len(outcomes) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert outcomes[0] == version
    assert outcomes[1].startswith("error:")


# --- the owner record: a manifest whose servers are gone is told apart before anything runs --------------


@pytest.fixture
def listening() -> Iterator[int]:
    """A port that accepts connections (what a served cell looks like to the liveness check)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


def _other_process(seconds: float = 30) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def _owner_of(proc: subprocess.Popen[bytes], command: str = "mailtls up") -> ManifestOwner:
    stat = _process_start(proc.pid)
    assert stat is not None
    return ManifestOwner(proc.pid, stat[1], socket.gethostname(), "tester", command)


def test_write_records_this_process_as_the_owner(tmp_path: Path, listening: int) -> None:
    path = write_manifest(tmp_path / "m.json", [_endpoint(PLAIN_CELL, port=listening)])
    owner = json.loads(path.read_text())["owner"]
    assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
    assert owner["start"] and owner["user"]
    assert [e.port for e in read_manifest(path, live=True)] == [listening]


def test_a_manifest_of_a_dead_owner_is_stale(tmp_path: Path, listening: int) -> None:
    proc = _other_process(0)
    owner = _owner_of(proc)
    proc.wait()
    path = write_manifest(tmp_path / "m.json", [_endpoint(PLAIN_CELL, port=listening)], owner=owner)
    assert len(read_manifest(path)) == 1  # reading the records alone still works
    with pytest.raises(ManifestError) as err:
        read_manifest(path, live=True)
    assert str(err.value) == (
        f"manifest {path} was written by mailtls up (pid {proc.pid}) which is no longer running; "
        f"start them again with `mailtls up --manifest {path}`"
    )


def test_a_zombie_owner_is_dead(tmp_path: Path, listening: int) -> None:
    proc = _other_process(0.05)
    owner = _owner_of(proc)
    deadline = time.monotonic() + 10
    while (_process_start(proc.pid) or ("?", ""))[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert _process_start(proc.pid) is not None, "not reaped yet: a zombie"
        os.kill(proc.pid, 0)  # kill(pid, 0) still succeeds on a zombie: it cannot tell
        assert not owner.alive()
        path = write_manifest(tmp_path / "m.json", [_endpoint(PLAIN_CELL, port=listening)], owner=owner)
        with pytest.raises(ManifestError, match="no longer running"):
            read_manifest(path, live=True)
    finally:
        proc.wait()


def test_a_reused_pid_is_not_the_owner() -> None:
    me = ManifestOwner.current()
    assert me.alive()
    assert not ManifestOwner(me.pid, "1", me.host, me.user).alive()


def test_a_manifest_from_another_host_is_foreign(tmp_path: Path, listening: int) -> None:
    owner = ManifestOwner(os.getpid(), "", "elsewhere.invalid", "tester", "mailtls up")
    path = write_manifest(tmp_path / "m.json", [_endpoint(PLAIN_CELL, port=listening)], owner=owner)
    with pytest.raises(ManifestError, match=r"was written on host elsewhere\.invalid, not here"):
        read_manifest(path, live=True)


@pytest.mark.parametrize("with_owner", [True, False], ids=["live owner", "no owner record"])
def test_a_first_port_that_does_not_answer_is_stale(tmp_path: Path, closed_port: int, with_owner: bool) -> None:
    path = tmp_path / "m.json"
    write_manifest(path, [_endpoint(PLAIN_CELL, port=closed_port)])
    if not with_owner:
        doc = json.loads(path.read_text())
        del doc["owner"]
        path.write_text(json.dumps(doc))
    with pytest.raises(ManifestError) as err:
        read_manifest(path, live=True)
    message = str(err.value)
    assert f"its first cell {PLAIN_CELL.id} at 127.0.0.1:{closed_port} does not answer" in message
    assert f"mailtls up --manifest {path}" in message and "\n" not in message


@pytest.mark.parametrize(
    ("owner", "fragment"),
    [
        ({"pid": "12"}, "owner.pid '12' is not a process id (3 more problems: owner.start, owner.host, owner.user)"),
        ([], "owner: must be an object"),
    ],
)
def test_a_malformed_owner_names_the_file(tmp_path: Path, owner: object, fragment: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(json.dumps({"version": 1, "owner": owner, "cells": []}))
    with pytest.raises(ManifestError) as err:
        read_manifest(path, live=True)
    assert str(err.value).startswith(f"{path}: ") and fragment in str(err.value)


def test_up_refuses_to_replace_the_manifest_of_a_live_run(tmp_path: Path) -> None:
    proc = _other_process()
    try:
        path = write_manifest(tmp_path / "m.json", [], owner=_owner_of(proc))
        with pytest.raises(ManifestError) as err:
            check_replaceable(path)
        assert str(err.value) == (
            f"manifest {path} belongs to mailtls up (pid {proc.pid}, user tester, host {socket.gethostname()}), "
            f"which is still running: stop it (Ctrl-C, or `kill {proc.pid}`) or choose another --manifest"
        )
    finally:
        proc.kill()
        proc.wait()
    check_replaceable(path)  # its owner is gone now: replacing it is fine


def test_up_may_replace_its_own_or_a_missing_manifest(tmp_path: Path) -> None:
    check_replaceable(tmp_path / "new" / "m.json")
    check_replaceable(write_manifest(tmp_path / "m.json", []))


def test_up_refuses_to_overwrite_a_file_that_is_not_a_manifest(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text("my notes\n")
    with pytest.raises(ManifestError, match=r"not valid JSON .*refusing to overwrite it: choose another --manifest"):
        check_replaceable(path)
    assert path.read_text() == "my notes\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_up_refuses_a_folder_it_cannot_write(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    with pytest.raises(ManifestError, match="cannot write the manifest there"):
        check_replaceable(folder / "m.json")
