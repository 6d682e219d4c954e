"""The probe against in-process servers whose policies are known.

SMTP cells come from the embedded backend; IMAP and POP3 from a tiny asyncio
STARTTLS responder defined here (its TLS context is a plain ``ssl.SSLContext``
with a known version range). Each finding has its negative twin: versions
refused next to versions accepted, a certificate that fails next to one that
verifies, and the errors for a closed port, a non-mail service and the wrong mode.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.embedded import EmbeddedBackend, EmbeddedServer, server_context
from pytest_mailtls.connect import plain_exchange, tls_handshake
from pytest_mailtls.hello import Answer, HelloTemplate, ask, hello_template
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import VERSIONS, CertProfile
from pytest_mailtls.probe import (
    TLS13_SUITES,
    ProbeError,
    ProbeResult,
    candidates,
    local_ciphers,
    parse_target,
    port_defaults,
    probe,
)
from pytest_mailtls.tls import client_context
from pytest_mailtls.verify import policy_ciphers, probe_endpoint
from pytest_mailtls.wire.tlsrecords import ClientHelloInfo, TLSObserver

from .loopserver import LoopServer

CELLS = [
    "embedded-submission-starttls-modern-valid",
    "embedded-submission-starttls-intermediate-valid",
    "embedded-submission-starttls-tls12-only-valid",
    "embedded-submission-starttls-legacy-valid",
    "embedded-submission-starttls-tls10-only-valid",
    "embedded-smtps-implicit-tls11-only-valid",
    "embedded-submission-starttls-tls12-single-cipher-valid",
    "embedded-submission-starttls-required-intermediate-valid",
    "embedded-smtps-implicit-intermediate-ecdsa-p256",
    "embedded-smtps-implicit-intermediate-expired",
    "embedded-submission-starttls-intermediate-wrong-host",
    "embedded-submission-plain-cleartext-auth",
    "embedded-smtp-starttls-intermediate-valid-open",
    "embedded-smtps-implicit-intermediate-valid-mtls",
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    by_id = {c.id: c for c in load_matrix().cells(servers=["embedded"])}
    with EmbeddedBackend().start(
        [by_id[i] for i in CELLS], StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("embedded"))
    ) as srv:
        assert isinstance(srv, EmbeddedServer)
        yield srv


@pytest.fixture(scope="module")
def probed(server: EmbeddedServer) -> dict[str, ProbeResult]:
    """Each cell probed once, as verify probes it."""
    return {e.id: probe_endpoint(e) for e in server.endpoints}


def ep(server: EmbeddedServer, cell_id: str) -> Endpoint:
    return next(e for e in server.endpoints if e.id == cell_id)


# --- versions and ciphers -------------------------------------------------------------------------


@pytest.mark.parametrize("cell_id", CELLS)
def test_accepted_versions_are_exactly_the_policy(
    probed: dict[str, ProbeResult], server: EmbeddedServer, cell_id: str
) -> None:
    cell = ep(server, cell_id).cell
    result = probed[cell_id]
    expected = list(cell.policy.versions) if cell.policy else []
    assert result.accepted_versions == expected
    for version in VERSIONS:
        if version not in expected:  # the refused twin: no cipher, a reason
            assert result.versions[version].ciphers == [] and result.versions[version].error


def test_single_cipher_policy_yields_that_cipher_only(probed: dict[str, ProbeResult]) -> None:
    result = probed["embedded-submission-starttls-tls12-single-cipher-valid"]
    assert result.ciphers("TLSv1.2") == ["AES256-GCM-SHA384"]
    assert result.preferred == {"TLSv1.2": "AES256-GCM-SHA384"}


def test_intermediate_ciphers_are_the_rsa_half_of_the_policy(probed: dict[str, ProbeResult]) -> None:
    result = probed["embedded-submission-starttls-intermediate-valid"]
    allowed = policy_ciphers(load_matrix().policies["intermediate"].openssl_ciphers())
    found = result.ciphers("TLSv1.2")
    # An RSA certificate: exactly the ECDHE-RSA ciphers of the list, none of the ECDSA ones.
    assert sorted(found) == sorted(c for c in allowed if "-RSA-" in c)
    assert found[0] == result.preferred["TLSv1.2"]
    ecdsa = probed["embedded-smtps-implicit-intermediate-ecdsa-p256"].ciphers("TLSv1.2")
    assert sorted(ecdsa) == sorted(c for c in allowed if "-ECDSA-" in c)


def test_legacy_policy_finds_ciphers_at_every_version(probed: dict[str, ProbeResult]) -> None:
    result = probed["embedded-submission-starttls-legacy-valid"]
    for version in ("TLSv1", "TLSv1.1"):
        found = result.ciphers(version)
        assert "ECDHE-RSA-AES256-SHA" in found
        assert set(found) <= set(local_ciphers(version))
        assert not any("GCM" in c for c in found)  # TLS 1.2-only suites never show below 1.2
    assert len(result.ciphers("TLSv1.2")) > len(result.ciphers("TLSv1"))
    assert all(r.complete for r in result.versions.values())


def test_every_suite_found_completes_a_real_handshake_and_no_other_does(
    probed: dict[str, ProbeResult], server: EmbeddedServer
) -> None:
    """The raw-hello answers, checked both ways by full handshakes: each suite the probe lists completes
    one at its version, each other suite the local OpenSSL can offer there is refused."""
    endpoint = ep(server, "embedded-submission-starttls-legacy-valid")
    result = probed[endpoint.id]
    for version in ("TLSv1", "TLSv1.1", "TLSv1.2"):
        found = set(result.ciphers(version))
        for suite in local_ciphers(version):
            ctx = client_context(version, suite + ":@SECLEVEL=0")
            try:
                tls_handshake(endpoint.host, endpoint.port, protocol="smtp", implicit=False, context=ctx,
                              server_hostname=endpoint.server_hostname, timeout=5)  # fmt: skip
                completed = True
            except ssl.SSLError:
                completed = False
            assert completed is (suite in found), f"{version} {suite}: probe says {suite in found}"
    # TLS 1.3: Python cannot choose the suite, but the one it negotiates is listed.
    ctx = client_context("TLSv1.3")
    negotiated = tls_handshake(endpoint.host, endpoint.port, protocol="smtp", implicit=False, context=ctx,
                               server_hostname=endpoint.server_hostname, timeout=5).cipher  # fmt: skip
    assert negotiated in result.ciphers("TLSv1.3")


def test_hello_questions(server: EmbeddedServer) -> None:
    """One question each way: a HelloRetryRequest (TLS 1.3 without key shares) and a full ServerHello both
    name the suite; a suite the server lacks gets an alert; another version's hello is refused."""
    endpoint = ep(server, "embedded-submission-starttls-intermediate-valid")

    def question(template: HelloTemplate, suites: list[str]) -> Answer:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as sock:
            plain_exchange(sock, "smtp", starttls=True)
            return ask(sock, template, suites)

    tls13 = hello_template("TLSv1.3", endpoint.server_hostname)
    retry = question(tls13.without_key_shares(), ["TLS_CHACHA20_POLY1305_SHA256"])
    assert (retry.accepted, retry.hello_retry, retry.suite) == (True, True, "TLS_CHACHA20_POLY1305_SHA256")
    full = question(tls13, ["TLS_CHACHA20_POLY1305_SHA256"])
    assert (full.accepted, full.hello_retry, full.suite) == (True, False, "TLS_CHACHA20_POLY1305_SHA256")
    refused = question(tls13, ["TLS_AES_128_CCM_8_SHA256"])
    assert not refused.accepted and refused.refusal == "the server refused: alert handshake_failure"
    legacy = question(hello_template("TLSv1", endpoint.server_hostname), list(candidates("TLSv1")))
    assert not legacy.accepted and "protocol_version" in (legacy.refusal or "")
    tls12 = question(hello_template("TLSv1.2", endpoint.server_hostname), ["DES-CBC3-SHA", "AES128-SHA"])
    assert not tls12.accepted  # neither is in the policy: one is not even built by OpenSSL 3, both asked


def test_hello_template_is_the_local_openssl_hello() -> None:
    """Offered the suites OpenSSL itself put in its hello, the rebuilt record is OpenSSL's, byte for byte."""
    for version in VERSIONS:
        ctx = client_context(version)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname="mail.mailtls.test")
        with pytest.raises(ssl.SSLWantReadError):
            obj.do_handshake()
        record = outgoing.read()
        template = hello_template(version, "mail.mailtls.test")
        info = _client_hello(record)
        suites = [c for c in info.ciphers if not c.endswith("_SCSV")]
        rebuilt = template.hello(suites)
        # The same bytes but for the random (11..43), the session id (random in TLS 1.3's compatibility
        # mode) and the key share (fresh in each TLS 1.3 hello): every suite and extension in place.
        end = 44 + record[43]
        suites_end = end + 2 + int.from_bytes(record[end : end + 2], "big")
        assert len(rebuilt) == len(record) and rebuilt[:11] == record[:11]
        assert rebuilt[end:suites_end] == record[end:suites_end]
        if version != "TLSv1.3":
            assert rebuilt[suites_end:] == record[suites_end:]
        assert _client_hello(rebuilt) == info
    with pytest.raises(KeyError):
        template.hello(["NO-SUCH-SUITE"])
    assert {"DES-CBC3-SHA", "RC4-SHA"} <= set(candidates("TLSv1.2")) and "DES-CBC3-SHA" not in local_ciphers("TLSv1.2")


def _client_hello(record: bytes) -> ClientHelloInfo:
    observer = TLSObserver()
    observer.feed("client", record)
    assert observer.client_hello is not None
    return observer.client_hello


def test_tls13_suites_are_asked_with_raw_hellos(probed: dict[str, ProbeResult]) -> None:
    result = probed["embedded-submission-starttls-modern-valid"]
    # OpenSSL's default server suites: the CCM ones are off, and the probe asked about them too.
    assert result.ciphers("TLSv1.3") == [
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_GCM_SHA256",
    ]
    assert result.versions["TLSv1.3"].complete
    assert set(result.ciphers("TLSv1.3")) < set(TLS13_SUITES) == set(candidates("TLSv1.3"))


# --- certificate ----------------------------------------------------------------------------------


def test_valid_certificate_verifies_with_names_and_key(probed: dict[str, ProbeResult], pki: SessionPKI) -> None:
    cert = probed["embedded-submission-starttls-intermediate-valid"].certificate
    assert cert is not None and cert.leaf is not None
    assert cert.verifies is True and cert.verify_error is None
    assert {"localhost", "mail.mailtls.test", "127.0.0.1"} <= set(cert.leaf.sans)
    assert (cert.leaf.key_type, cert.leaf.key_size, cert.leaf.signature_hash) == ("rsa", 2048, "sha256")
    assert "pytest-mailtls session CA" in cert.leaf.issuer
    assert len(cert.chain) == 1 and not cert.leaf.self_signed


def test_faulty_certificates_do_not_verify_and_say_why(probed: dict[str, ProbeResult]) -> None:
    expired = probed["embedded-smtps-implicit-intermediate-expired"].certificate
    assert expired is not None and expired.leaf is not None
    assert expired.verifies is False and "expired" in (expired.verify_error or "")
    assert expired.leaf.expired()
    wrong = probed["embedded-submission-starttls-intermediate-wrong-host"].certificate
    assert wrong is not None and wrong.verifies is False and "Hostname mismatch" in (wrong.verify_error or "")
    ecdsa = probed["embedded-smtps-implicit-intermediate-ecdsa-p256"].certificate
    assert ecdsa is not None and ecdsa.leaf is not None
    assert ecdsa.verifies is True and (ecdsa.leaf.key_type, ecdsa.leaf.key_size) == ("ecdsa", 256)


def test_verification_against_another_ca_fails(server: EmbeddedServer, tmp_path: Path) -> None:
    stranger = SessionPKI(tmp_path / "other")
    endpoint = ep(server, "embedded-submission-starttls-intermediate-valid")
    result = probe(endpoint.host, endpoint.port, protocol="smtp", mode="starttls", server_hostname="localhost",
                   ca_file=str(stranger.ca_file))  # fmt: skip
    assert result.certificate is not None and result.certificate.verifies is False
    assert "unable to get local issuer certificate" in (result.certificate.verify_error or "")


# --- STARTTLS and AUTH ----------------------------------------------------------------------------


def test_starttls_required_is_told_from_optional(probed: dict[str, ProbeResult]) -> None:
    required = probed["embedded-submission-starttls-required-intermediate-valid"]
    assert required.starttls_offered and required.starttls_required is True
    assert "STARTTLS" in required.starttls_evidence
    optional = probed["embedded-smtp-starttls-intermediate-valid-open"]
    assert optional.starttls_offered and optional.starttls_required is False
    plain = probed["embedded-submission-plain-cleartext-auth"]
    assert not plain.starttls_offered and plain.accepted_versions == []


def test_auth_before_and_after_tls(probed: dict[str, ProbeResult]) -> None:
    tls_only = probed["embedded-submission-starttls-intermediate-valid"]
    assert tls_only.auth_before_tls == [] and sorted(tls_only.auth_after_tls or []) == ["LOGIN", "PLAIN"]
    assert tls_only.auth_required is True
    clear = probed["embedded-submission-plain-cleartext-auth"]
    assert sorted(clear.auth_before_tls or []) == ["LOGIN", "PLAIN"] and clear.auth_after_tls is None
    open_mx = probed["embedded-smtp-starttls-intermediate-valid-open"]
    assert open_mx.auth_after_tls == [] and open_mx.auth_required is False
    implicit = probed["embedded-smtps-implicit-intermediate-ecdsa-p256"]
    assert implicit.auth_before_tls is None and implicit.starttls_required is None


def test_client_certificate_requirement(probed: dict[str, ProbeResult], server: EmbeddedServer) -> None:
    assert probed["embedded-smtps-implicit-intermediate-valid-mtls"].client_cert_required is True
    endpoint = ep(server, "embedded-smtps-implicit-intermediate-valid-mtls")
    result = probe(endpoint.host, endpoint.port, protocol="smtp", mode="implicit", server_hostname="localhost",
                   ca_file=endpoint.ca_file)  # fmt: skip
    assert result.accepted_versions == []  # no client certificate: no handshake completes
    # The twin: a cell without mutual TLS does not need one.
    other = ep(server, "embedded-smtps-implicit-intermediate-ecdsa-p256")
    assert endpoint.client_cert_file and endpoint.client_key_file
    result = probe(other.host, other.port, protocol="smtp", mode="implicit", server_hostname="localhost",
                   client_cert=endpoint.client_cert_file, client_key=endpoint.client_key_file)  # fmt: skip
    assert result.client_cert_required is False


def test_json_document(probed: dict[str, ProbeResult]) -> None:
    doc = json.loads(json.dumps(probed["embedded-submission-starttls-legacy-valid"].to_json()))
    assert {"target", "protocol", "mode", "versions", "preferred", "certificate", "starttls", "auth"} <= set(doc)
    assert set(doc["versions"]) == set(VERSIONS)
    assert all({"accepted", "ciphers"} <= set(v) for v in doc["versions"].values())
    cert = doc["certificate"]
    fields = {"subject", "issuer", "sans", "not_before", "not_after", "key_type", "key_size", "signature_algorithm"}
    assert fields | {"chain", "verifies", "verify_error"} <= set(cert)
    assert all(fields <= set(c) for c in cert["chain"])
    assert doc["starttls"] == {"offered": True, "required": False, "evidence": doc["starttls"]["evidence"]}
    assert set(doc["auth"]) >= {"before_tls", "after_tls"}
    assert "TLSv1" in probed["embedded-submission-starttls-legacy-valid"].render()


@pytest.mark.parametrize(
    ("cell_id", "accepted", "code"),
    [
        ("embedded-submission-plain-cleartext-auth", True, "235"),
        ("embedded-submission-starttls-intermediate-valid", False, "538"),  # tls_only: aiosmtpd says 538
        ("embedded-submission-starttls-required-intermediate-valid", False, "530"),
    ],
)
def test_logins_are_attempted_in_clear_with_credentials_masked(
    probed: dict[str, ProbeResult], server: EmbeddedServer, cell_id: str, accepted: bool, code: str
) -> None:
    result = probed[cell_id]
    endpoint = ep(server, cell_id)
    assert result.auth_attempts is not None and len(result.auth_attempts) == 1
    attempt = result.auth_attempts[0]
    assert (attempt.method, attempt.sent, attempt.accepted) == ("AUTH PLAIN", "AUTH PLAIN <credentials>", accepted)
    assert attempt.answer.startswith(code), attempt.answer
    doc = json.dumps(result.to_json())
    assert endpoint.password not in doc and endpoint.password not in result.render()
    assert json.loads(doc)["auth"]["attempts_in_clear"][0]["accepted"] is accepted
    assert f"login in clear, AUTH PLAIN: {'ACCEPTED' if accepted else 'refused'}" in result.render()


def test_no_login_attempts_without_credentials_or_in_implicit_mode(
    probed: dict[str, ProbeResult], server: EmbeddedServer
) -> None:
    assert probed["embedded-smtps-implicit-intermediate-expired"].auth_attempts is None
    plain = ep(server, "embedded-submission-plain-cleartext-auth")
    assert probe(plain.host, plain.port, protocol="smtp", mode="starttls").auth_attempts is None


def test_certificates_carry_key_identifiers(probed: dict[str, ProbeResult], pki: SessionPKI) -> None:
    cert = probed["embedded-submission-starttls-intermediate-valid"].certificate
    assert cert is not None and cert.leaf is not None
    ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest.hex()
    assert cert.leaf.authority_key_id == ski  # the leaf names the session CA's key as its issuer
    assert cert.leaf.subject_key_id and cert.leaf.subject_key_id != ski


# --- IMAP and POP3: a tiny STARTTLS responder -----------------------------------------------------


class Responder(LoopServer):
    """An IMAP or POP3 server just deep enough for the probe: greeting, capabilities, STARTTLS/STLS, login refusal."""

    def __init__(self, protocol: str, context: ssl.SSLContext, *, implicit: bool = False, required: bool = True):
        self.protocol, self.context, self.implicit, self.required = protocol, context, implicit, required
        super().__init__(context if implicit else None)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tls = self.implicit
        try:
            writer.write(b"* OK ready\r\n" if self.protocol == "imap" else b"+OK ready\r\n")
            while line := (await reader.readline()).decode().strip():
                reply, upgrade = self._answer(line, tls)
                writer.write(reply.encode())
                await writer.drain()
                if upgrade:
                    await writer.start_tls(self.context)
                    tls = True
                if line.upper().endswith(("LOGOUT", "QUIT")):
                    break
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, line: str, tls: bool) -> tuple[str, bool]:
        if self.protocol == "imap":
            tag, _, command = line.partition(" ")
            command = command.upper()
            if command == "CAPABILITY":
                caps = (
                    "IMAP4rev1 AUTH=PLAIN"
                    if tls
                    else "IMAP4rev1 STARTTLS" + (" LOGINDISABLED" if self.required else "")
                )
                return f"* CAPABILITY {caps}\r\n{tag} OK done\r\n", False
            if command == "STARTTLS" and not tls:
                return f"{tag} OK begin TLS\r\n", True
            if command == "LOGOUT":
                return f"* BYE\r\n{tag} OK bye\r\n", False
            return f"{tag} BAD unknown\r\n", False
        command = line.upper()
        if command == "CAPA":
            caps = "SASL PLAIN\r\nUSER" if tls else "STLS" + ("" if self.required else "\r\nUSER")
            return f"+OK\r\n{caps}\r\n.\r\n", False
        if command == "STLS" and not tls:
            return "+OK begin TLS\r\n", True
        if command.startswith("USER"):
            if self.required and not tls:
                return "-ERR [AUTH] Plaintext authentication disallowed on non-secure (SSL/TLS) connections.\r\n", False
            return "+OK\r\n", False
        if command == "QUIT":
            return "+OK bye\r\n", False
        return "-ERR unknown\r\n", False


@pytest.fixture(scope="module")
def tls12_context(pki: SessionPKI) -> ssl.SSLContext:
    files = pki.server_files(CertProfile.VALID)
    return server_context(
        min_version="TLSv1.2",
        max_version="TLSv1.2",
        ciphers="ECDHE+AESGCM",
        cert_file=files.cert_file,
        key_file=files.key_file,
    )


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("required", [True, False])
def test_imap_and_pop3_starttls(protocol: str, required: bool, tls12_context: ssl.SSLContext, pki: SessionPKI) -> None:
    responder = Responder(protocol, tls12_context, required=required)
    try:
        result = probe("127.0.0.1", responder.port, protocol=protocol, mode="starttls", server_hostname="localhost",
                       ca_file=str(pki.ca_file))  # fmt: skip
    finally:
        responder.stop()
    assert result.accepted_versions == ["TLSv1.2"]
    assert sorted(result.ciphers("TLSv1.2")) == ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]
    assert result.starttls_offered and result.starttls_required is required
    assert result.auth_before_tls == [] and result.auth_after_tls == ["PLAIN"]
    assert result.certificate is not None and result.certificate.verifies is True


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_imap_and_pop3_implicit(protocol: str, tls12_context: ssl.SSLContext) -> None:
    responder = Responder(protocol, tls12_context, implicit=True)
    try:
        result = probe("127.0.0.1", responder.port, protocol=protocol, mode="implicit", server_hostname="localhost")
        with pytest.raises(ProbeError, match="try --mode implicit"):
            probe("127.0.0.1", responder.port, protocol=protocol, mode="starttls", timeout=1.0)
    finally:
        responder.stop()
    assert result.accepted_versions == ["TLSv1.2"]
    assert result.banner.startswith("* OK" if protocol == "imap" else "+OK")
    # No CA file: the system trust store does not know the session CA.
    assert result.certificate is not None and result.certificate.verifies is False


# --- errors: one clear line -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Talker:
    """A TCP service that is not a mail server: says ``banner`` (or nothing) and waits."""

    def __init__(self, banner: bytes | None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.banner = banner
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            if self.banner:
                conn.sendall(self.banner)

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            conn.close()


def test_closed_port() -> None:
    port = _free_port()
    with pytest.raises(ProbeError, match=f"connection refused: nothing listens on port {port}") as err:
        probe("127.0.0.1", port, protocol="smtp", mode="starttls", timeout=2)
    assert "\n" not in str(err.value)
    with pytest.raises(ProbeError, match="connection refused"):
        probe("127.0.0.1", port, protocol="smtp", mode="implicit", timeout=2)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_non_mail_service(mode: str) -> None:
    talker = Talker(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    try:
        with pytest.raises(ProbeError, match=r"not a.* server") as err:
            probe("127.0.0.1", talker.port, protocol="smtp", mode=mode, timeout=1.5)
    finally:
        talker.close()
    assert "SSH-2.0" in str(err.value) and "\n" not in str(err.value)


def test_silent_service() -> None:
    talker = Talker(None)
    try:
        with pytest.raises(ProbeError, match="no SMTP greeting within 1 s: not a mail server"):
            probe("127.0.0.1", talker.port, protocol="smtp", mode="starttls", timeout=1.0)
        with pytest.raises(ProbeError, match="not an implicit-TLS mail server"):
            probe("127.0.0.1", talker.port, protocol="smtp", mode="implicit", timeout=1.0)
    finally:
        talker.close()


def test_wrong_mode(server: EmbeddedServer) -> None:
    starttls = ep(server, "embedded-submission-starttls-intermediate-valid")
    with pytest.raises(ProbeError, match=r"the server answered in plaintext .*: try --mode starttls"):
        probe(starttls.host, starttls.port, protocol="smtp", mode="implicit", timeout=2)
    implicit = ep(server, "embedded-smtps-implicit-tls11-only-valid")
    with pytest.raises(ProbeError, match="try --mode implicit"):
        probe(implicit.host, implicit.port, protocol="smtp", mode="starttls", timeout=1.0)


def test_wrong_protocol(server: EmbeddedServer) -> None:
    starttls = ep(server, "embedded-submission-starttls-intermediate-valid")
    with pytest.raises(ProbeError, match=r"this is an SMTP server .*try --protocol smtp"):
        probe(starttls.host, starttls.port, protocol="imap", mode="starttls", timeout=2)


def test_bad_arguments() -> None:
    with pytest.raises(ProbeError, match="unknown protocol"):
        probe("127.0.0.1", 25, protocol="http", mode="starttls")
    with pytest.raises(ProbeError, match="unknown mode"):
        probe("127.0.0.1", 25, protocol="smtp", mode="tls")


def test_target_parsing_and_port_defaults() -> None:
    assert parse_target("mail.example.com:587") == ("mail.example.com", 587)
    assert parse_target("[::1]:465") == ("::1", 465)
    for bad in ("mail.example.com", ":25", "host:0", "host:smtp"):
        with pytest.raises(ProbeError, match="HOST:PORT"):
            parse_target(bad)
    assert port_defaults(993) == ("imap", "implicit") and port_defaults(587) == ("smtp", "starttls")
    assert port_defaults(2525) == (None, None)
