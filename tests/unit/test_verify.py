"""Verify: the full default embedded matrix tells the truth, and planted lies are caught.

A planted mismatch is a real server started with one policy and declared with
another (``dataclasses.replace`` on the endpoint's cell): the probe sees what
the server does, verify compares it with what the manifest claims.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.embedded import EmbeddedBackend, EmbeddedServer, server_context
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, Cell, CertProfile, Mode, TLSPolicy
from pytest_mailtls.verify import Mismatch, probe_endpoint, verify_endpoint, verify_endpoints, weak_policy_mismatches

from .loopserver import LoginResponder, LoopServer

MATRIX = load_matrix()
POLICIES = MATRIX.policies
AUTH = MATRIX.auth


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def full(pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    backend = EmbeddedBackend()
    every = MATRIX.cells(servers=["embedded"])
    cells = [c for c in every if not backend.unsupported(c)]
    # Python's ssl cannot choose TLS 1.3 suites: the tls13-aes256 cells are reported, not served.
    assert sorted(c.id for c in every if c not in cells) == [
        "embedded-smtps-implicit-tls13-aes256-valid",
        "embedded-submission-starttls-tls13-aes256-valid",
    ]
    with backend.start(cells, StartOptions(pki=pki, workdir=tmp_path_factory.mktemp("full"))) as srv:
        assert isinstance(srv, EmbeddedServer)
        yield srv


def test_full_default_matrix_verifies(full: EmbeddedServer) -> None:
    assert len(full.endpoints) == 63
    lines: list[str] = []
    report = verify_endpoints(full.endpoints, lines.append)
    assert report.ok, report.render_table()
    assert len(report.verdicts) == 63 and len(lines) == 63
    table = report.render_table()
    assert "63 cells verified" in table and "all cells match" in table and "MISMATCH" not in table
    # Every version really negotiated somewhere, legacy included (aiosmtpd#459).
    seen = {v for verdict in report.verdicts if verdict.probe for v in verdict.probe.accepted_versions}
    assert seen == {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["ok"] is True and doc["cells"] == 63


# --- planted lies ---------------------------------------------------------------------------------


def _cell(
    service: str, mode: Mode, policy: str | TLSPolicy | None, cert: CertProfile | None, auth: str = "default"
) -> Cell:
    pol = POLICIES[policy] if isinstance(policy, str) else policy
    return Cell("embedded", SERVICES[service], mode, pol, cert, AUTH[auth])


def _serve(pki: SessionPKI, tmp_path: Path, served: Cell, declared: Cell) -> tuple[EmbeddedServer, Endpoint]:
    srv = EmbeddedBackend().start([served], StartOptions(pki=pki, workdir=tmp_path))
    assert isinstance(srv, EmbeddedServer)
    endpoint = srv.endpoints[0]
    files = pki.client_files()
    declared_endpoint = replace(
        endpoint, cell=declared, client_cert_file=str(files.cert_file), client_key_file=str(files.key_file)
    )
    return srv, declared_endpoint


def _verify(pki: SessionPKI, tmp_path: Path, served: Cell, declared: Cell) -> list[Mismatch]:
    srv, endpoint = _serve(pki, tmp_path, served, declared)
    with srv:
        return verify_endpoint(endpoint, probe_endpoint(endpoint))


def test_tls12_only_cell_that_accepts_tls11_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    liar = TLSPolicy("tls12-only", min_version="TLSv1.1", max_version="TLSv1.2")
    declared = _cell("submission", Mode.STARTTLS, "tls12-only", CertProfile.VALID)
    served = _cell("submission", Mode.STARTTLS, liar, CertProfile.VALID)
    assert served.id == declared.id  # the manifest cannot tell them apart: only the probe can
    mismatches = _verify(pki, tmp_path, served, declared)
    assert [m.aspect for m in mismatches] == ["versions"]
    assert "also accepts TLSv1.1" in mismatches[0].actual and mismatches[0].expected == "TLSv1.2"


def test_honest_tls12_only_cell_passes(pki: SessionPKI, tmp_path: Path) -> None:
    cell = _cell("submission", Mode.STARTTLS, "tls12-only", CertProfile.VALID)
    assert _verify(pki, tmp_path, cell, cell) == []


def test_refused_declared_version_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    declared = _cell("smtps", Mode.IMPLICIT, "legacy", CertProfile.VALID)
    served = _cell("smtps", Mode.IMPLICIT, "intermediate", CertProfile.VALID)
    mismatches = _verify(pki, tmp_path, served, declared)
    versions = [m for m in mismatches if m.aspect == "versions"]
    assert versions and "refuses TLSv1, TLSv1.1" in versions[0].actual


def test_cipher_outside_the_policy_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    declared = _cell("submission", Mode.STARTTLS, "tls12-single-cipher", CertProfile.VALID)
    served = _cell(
        "submission",
        Mode.STARTTLS,
        replace(POLICIES["tls12-single-cipher"], ciphers="AES256-GCM-SHA384:AES128-GCM-SHA256"),
        CertProfile.VALID,
    )
    mismatches = _verify(pki, tmp_path, served, declared)
    assert [m.aspect for m in mismatches] == ["ciphers"]
    assert "AES128-GCM-SHA256" in mismatches[0].actual and "AES256-GCM-SHA384" not in mismatches[0].actual


def test_named_suite_the_server_refuses_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    declared = _cell("smtps", Mode.IMPLICIT, "static-rsa-cbc", CertProfile.VALID)
    served = _cell("smtps", Mode.IMPLICIT, replace(POLICIES["static-rsa-cbc"], ciphers="AES256-SHA"), CertProfile.VALID)
    mismatches = _verify(pki, tmp_path, served, declared)
    assert [m.aspect for m in mismatches] == ["ciphers"]
    assert mismatches[0].actual == "refuses AES128-SHA"


def _weak_mismatches(pki: SessionPKI, tmp_path: Path, served: Cell, declared: Cell) -> list[Mismatch]:
    srv, endpoint = _serve(pki, tmp_path, served, declared)
    with srv:
        return weak_policy_mismatches(endpoint)


@pytest.mark.parametrize("policy", ["static-rsa-cbc", "null-cipher", "dhe-1024"])
def test_weak_cells_are_checked_both_ways_with_real_handshakes(pki: SessionPKI, tmp_path: Path, policy: str) -> None:
    cell = _cell("submission", Mode.STARTTLS, policy, CertProfile.VALID)
    assert cell.group == "broken crypto"
    assert _weak_mismatches(pki, tmp_path, cell, cell) == []


def test_weak_cell_a_default_client_can_use_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    # Declared NULL-only, served with an AEAD suite too: the default context gets a session it must not get.
    declared = _cell("smtps", Mode.IMPLICIT, "null-cipher", CertProfile.VALID)
    leaky = replace(POLICIES["null-cipher"], ciphers="NULL-SHA256:NULL-SHA:ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")
    served = _cell("smtps", Mode.IMPLICIT, leaky, CertProfile.VALID)
    found = _weak_mismatches(pki, tmp_path, served, declared)
    assert [m.expected for m in found] == ["a default client context refused (no shared suite)"]
    assert found[0].actual == "ECDHE-RSA-AES128-GCM-SHA256"


def test_a_dh_cell_served_with_a_2048_bit_group_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    # Declared dhe-1024, served with the embedded server's own group (ffdhe2048): the ServerKeyExchange tells, and
    # the default context (level 2) gets a session instead of "dh key too small" (the server picks in its own order).
    declared = _cell("submission", Mode.STARTTLS, "dhe-1024", CertProfile.VALID)
    served = _cell("submission", Mode.STARTTLS, replace(POLICIES["dhe-1024"], dh_bits=None), CertProfile.VALID)
    found = _weak_mismatches(pki, tmp_path, served, declared)
    assert [(m.expected, m.actual.split(" (")[0]) for m in found] == [
        ("a 1024-bit DH group in the ServerKeyExchange", "2048-bit group"),
        ("a default client context refused ('dh key too small')", "DHE-RSA-AES128-GCM-SHA256"),
    ]


def test_weak_cell_that_negotiates_outside_its_suites_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    # Declared static RSA with CBC, served with a NULL suite: a client offering exactly the declared suites fails.
    declared = _cell("smtps", Mode.IMPLICIT, "static-rsa-cbc", CertProfile.VALID)
    served = _cell(
        "smtps", Mode.IMPLICIT, replace(POLICIES["static-rsa-cbc"], ciphers="NULL-SHA256"), CertProfile.VALID
    )
    found = _weak_mismatches(pki, tmp_path, served, declared)
    assert found and found[0].expected == "a handshake offering exactly 'AES128-SHA:AES256-SHA'"


@pytest.mark.parametrize(
    ("served_cert", "declared_cert"),
    [
        (CertProfile.VALID, CertProfile.EXPIRED),
        (CertProfile.EXPIRED, CertProfile.VALID),
        (CertProfile.UNTRUSTED_CA, CertProfile.SELF_SIGNED),
        (CertProfile.VALID, CertProfile.ECDSA_P256),
        (CertProfile.SHA1_SIGNATURE, CertProfile.WEAK_RSA_1024),
        (CertProfile.MISSING_INTERMEDIATE, CertProfile.WRONG_HOST),
        (CertProfile.VALID, CertProfile.REVOKED),
        (CertProfile.REVOKED, CertProfile.VALID),
        (CertProfile.REVOCATION_UNREACHABLE, CertProfile.REVOKED),
        (CertProfile.REVOKED, CertProfile.REVOCATION_UNREACHABLE),
        (CertProfile.VALID, CertProfile.NO_SAN),
        (CertProfile.NO_SAN, CertProfile.VALID),
        (CertProfile.SHA1_SIGNATURE, CertProfile.SHA1_INTERMEDIATE),
        (CertProfile.SHA1_INTERMEDIATE, CertProfile.SHA1_SIGNATURE),
        (CertProfile.EXPIRED, CertProfile.EXPIRED_INTERMEDIATE),
        (CertProfile.EXPIRED_INTERMEDIATE, CertProfile.EXPIRED),
        (CertProfile.VALID, CertProfile.WRONG_EKU),
        (CertProfile.WRONG_EKU, CertProfile.VALID),
        (CertProfile.NAME_CONSTRAINT_VIOLATION, CertProfile.WRONG_HOST),
        (CertProfile.WRONG_HOST, CertProfile.NAME_CONSTRAINT_VIOLATION),
        (CertProfile.VALID, CertProfile.RSA_4096),
        (CertProfile.RSA_4096, CertProfile.VALID),
        (CertProfile.ECDSA_P256, CertProfile.ECDSA_P384),
        (CertProfile.ECDSA_P384, CertProfile.ECDSA_P256),
    ],
    ids=str,
)
def test_wrong_certificate_profile_is_caught(
    pki: SessionPKI, tmp_path: Path, served_cert: CertProfile, declared_cert: CertProfile
) -> None:
    served = _cell("smtps", Mode.IMPLICIT, "intermediate", served_cert)
    declared = _cell("smtps", Mode.IMPLICIT, "intermediate", declared_cert)
    mismatches = _verify(pki, tmp_path, served, declared)
    assert mismatches and {m.aspect for m in mismatches} == {"certificate"}


@pytest.mark.parametrize(
    ("served_cert", "declared_cert", "found"),
    [
        (CertProfile.UNTRUSTED_CA, CertProfile.MISSING_INTERMEDIATE, "issued by a CA foreign to the session"),
        (CertProfile.MISSING_INTERMEDIATE, CertProfile.UNTRUSTED_CA, "by the session's intermediate CA"),
    ],
)
def test_missing_intermediate_and_untrusted_ca_are_told_apart(
    pki: SessionPKI, tmp_path: Path, served_cert: CertProfile, declared_cert: CertProfile, found: str
) -> None:
    # Both fail verification with "unable to get local issuer certificate": only the issuer tells them apart.
    pki.server_files(CertProfile.MISSING_INTERMEDIATE)  # the session's intermediate exists either way
    served = _cell("smtps", Mode.IMPLICIT, "intermediate", served_cert)
    declared = _cell("smtps", Mode.IMPLICIT, "intermediate", declared_cert)
    mismatches = _verify(pki, tmp_path, served, declared)
    assert [m.aspect for m in mismatches] == ["certificate"]
    assert found in mismatches[0].actual and str(declared_cert) in mismatches[0].expected


@pytest.mark.parametrize("cert", [CertProfile.UNTRUSTED_CA, CertProfile.MISSING_INTERMEDIATE])
def test_honest_issuer_profiles_pass(pki: SessionPKI, tmp_path: Path, cert: CertProfile) -> None:
    cell = _cell("smtps", Mode.IMPLICIT, "intermediate", cert)
    assert _verify(pki, tmp_path, cell, cell) == []


def test_starttls_declared_required_but_optional_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    served = _cell("submission", Mode.STARTTLS, "intermediate", CertProfile.VALID)
    declared = _cell("submission", Mode.STARTTLS_REQUIRED, "intermediate", CertProfile.VALID)
    mismatches = _verify(pki, tmp_path, served, declared)
    assert [m.aspect for m in mismatches] == ["mode"]
    assert "plaintext MAIL answered 530 5.7.0 Authentication required" in mismatches[0].actual


def test_plain_cell_declared_as_starttls_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    served = _cell("submission", Mode.PLAIN, None, None, "cleartext-auth")
    declared = _cell("submission", Mode.STARTTLS, "intermediate", CertProfile.VALID, "cleartext-auth")
    mismatches = _verify(pki, tmp_path, served, declared)
    assert {"mode", "versions"} <= {m.aspect for m in mismatches}


def test_auth_offered_in_plaintext_against_tls_only_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    served = _cell("submission", Mode.STARTTLS, "intermediate", CertProfile.VALID, "cleartext-auth")
    declared = _cell("submission", Mode.STARTTLS, "intermediate", CertProfile.VALID, "default")
    mismatches = _verify(pki, tmp_path, served, declared)
    assert [(m.aspect, m.expected) for m in mismatches] == [
        ("auth", "before TLS: no AUTH"),
        ("auth", "AUTH PLAIN in clear refused before STARTTLS (auth policy default)"),
    ]
    # The login was really attempted: the line names what was sent and what the server answered.
    assert mismatches[1].actual.startswith("sent AUTH PLAIN <credentials>: 235")


def test_auth_required_cell_declared_open_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    served = _cell("smtp", Mode.STARTTLS, "intermediate", CertProfile.VALID, "default")
    declared = _cell("smtp", Mode.STARTTLS, "intermediate", CertProfile.VALID, "open")
    aspects = [(m.aspect, m.expected) for m in _verify(pki, tmp_path, served, declared)]
    assert ("auth", "mail accepted without AUTH") in aspects
    assert ("auth", "after TLS: no AUTH") in aspects


def test_honest_open_mx_cell_passes(pki: SessionPKI, tmp_path: Path) -> None:
    cell = _cell("smtp", Mode.STARTTLS, "intermediate", CertProfile.VALID, "open")
    assert _verify(pki, tmp_path, cell, cell) == []


def test_starttls_cell_declared_plain_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    served = _cell("submission", Mode.STARTTLS, "intermediate", CertProfile.VALID, "cleartext-auth")
    declared = _cell("submission", Mode.PLAIN, None, None, "cleartext-auth")
    mismatches = _verify(pki, tmp_path, served, declared)
    assert ("mode", "plain (no STARTTLS)", "STARTTLS offered") in [(m.aspect, m.expected, m.actual) for m in mismatches]


def test_honest_plain_cell_passes_and_takes_its_login_in_clear(pki: SessionPKI, tmp_path: Path) -> None:
    cell = _cell("submission", Mode.PLAIN, None, None, "cleartext-auth")
    srv, endpoint = _serve(pki, tmp_path, cell, cell)
    with srv:
        result = probe_endpoint(endpoint)
    assert verify_endpoint(endpoint, result) == []
    assert result.auth_attempts is not None
    assert [(a.method, a.accepted) for a in result.auth_attempts] == [("AUTH PLAIN", True)]


def test_starttls_required_cell_refuses_auth_in_clear_whatever_its_auth_policy(pki: SessionPKI, tmp_path: Path) -> None:
    # STARTTLS required wins over cleartext AUTH: aiosmtpd answers 530 to AUTH before STARTTLS, as it must.
    cell = _cell("submission", Mode.STARTTLS_REQUIRED, "intermediate", CertProfile.VALID, "cleartext-auth")
    srv, endpoint = _serve(pki, tmp_path, cell, cell)
    with srv:
        result = probe_endpoint(endpoint)
    assert [m for m in verify_endpoint(endpoint, result) if m.aspect == "auth"] == []
    assert result.auth_attempts is not None
    assert [(a.method, a.accepted, a.answer[:3]) for a in result.auth_attempts] == [("AUTH PLAIN", False, "530")]


def test_open_relay_declared_as_auth_required_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    served = _cell("smtp", Mode.STARTTLS, "intermediate", CertProfile.VALID, "open")
    declared = _cell("smtp", Mode.STARTTLS, "intermediate", CertProfile.VALID, "default")
    aspects = [(m.aspect, m.expected) for m in _verify(pki, tmp_path, served, declared)]
    assert ("auth", "AUTH required before MAIL/RCPT") in aspects
    assert ("auth", "after TLS: LOGIN PLAIN") in aspects


def test_mtls_declared_but_not_enforced_is_caught(pki: SessionPKI, tmp_path: Path) -> None:
    served = replace(
        _cell("smtps", Mode.IMPLICIT, "intermediate", CertProfile.VALID), auth=replace(AUTH["mtls"], client_cert=False)
    )
    declared = _cell("smtps", Mode.IMPLICIT, "intermediate", CertProfile.VALID, "mtls")
    mismatches = _verify(pki, tmp_path, served, declared)
    assert [m.aspect for m in mismatches] == ["client-cert"]


def test_unreachable_cell_is_a_mismatch_not_a_crash(full: EmbeddedServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = full.endpoints[0]
    gone = replace(endpoint, port=port)
    plaintext = next(e for e in full.endpoints if e.mode is Mode.STARTTLS)
    as_implicit = replace(plaintext, cell=replace(plaintext.cell, service=SERVICES["smtps"], mode=Mode.IMPLICIT))
    report = verify_endpoints([gone, as_implicit, endpoint], timeout=2.0)
    assert not report.ok
    first, second, third = report.verdicts
    assert [m.aspect for m in first.mismatches] == ["probe"] and "connection refused" in first.mismatches[0].actual
    assert "try --mode starttls" in second.mismatches[0].actual
    assert third.ok
    table = report.render_table()
    assert "MISMATCH: probe" in table and "2 of 3 cells do NOT match" in table


def test_mismatch_reads_as_one_line() -> None:
    m = Mismatch("embedded-x", "versions", "TLSv1.2", "TLSv1.1 TLSv1.2: also accepts TLSv1.1")
    assert str(m) == "embedded-x: versions: expected TLSv1.2; found TLSv1.1 TLSv1.2: also accepts TLSv1.1"


# --- mutual TLS checked at login, as Dovecot does -------------------------------------------------


class LoginChecker(LoopServer):
    """An implicit-TLS IMAP server that asks for a client certificate but only checks it at LOGIN."""

    def __init__(self, context: ssl.SSLContext, *, enforce: bool, password: str) -> None:
        self.context, self.enforce, self.password = context, enforce, password
        super().__init__(context)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        has_cert = bool(writer.get_extra_info("peercert"))
        writer.write(b"* OK ready\r\n")
        try:
            while line := (await reader.readline()).decode().strip():
                tag, _, rest = line.partition(" ")
                command = rest.split(" ")[0].upper()
                if command == "CAPABILITY":
                    writer.write(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN AUTH=LOGIN\r\n{tag} OK done\r\n".encode())
                elif command == "LOGIN":
                    good = rest.endswith(f'"{self.password}"') or rest.endswith(f" {self.password}")
                    if good and (has_cert or not self.enforce):
                        writer.write(f"{tag} OK logged in\r\n".encode())
                    else:
                        writer.write(f"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n".encode())
                elif command == "LOGOUT":
                    writer.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                    break
                else:
                    writer.write(f"{tag} BAD unknown\r\n".encode())
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


@pytest.mark.parametrize("enforce", [True, False])
def test_client_certificate_checked_at_login(pki: SessionPKI, enforce: bool) -> None:
    files = pki.server_files(CertProfile.VALID)
    context = server_context(
        min_version="TLSv1.2",
        max_version="TLSv1.2",
        ciphers="ECDHE+AESGCM",
        cert_file=files.cert_file,
        key_file=files.key_file,
    )
    context.verify_mode = ssl.CERT_OPTIONAL  # ask for one, complete the handshake without one
    context.load_verify_locations(str(pki.client_ca_file))
    client = pki.client_files()
    checker = LoginChecker(context, enforce=enforce, password="mailtls-password")
    try:
        cell = Cell(
            "dovecot", SERVICES["imaps"], Mode.IMPLICIT, POLICIES["tls12-only"], CertProfile.VALID, AUTH["mtls"]
        )
        endpoint = Endpoint(cell, "127.0.0.1", checker.port, pki.server_hostname, str(pki.ca_file),
                            "tester@mailtls.test", "mailtls-password", client_cert_file=str(client.cert_file),
                            client_key_file=str(client.key_file))  # fmt: skip
        result = probe_endpoint(endpoint)
    finally:
        checker.stop()
    assert result.client_cert_required is False  # the handshake alone does not tell
    assert result.client_cert_login_refused is enforce
    client_cert = [m for m in verify_endpoint(endpoint, result) if m.aspect == "client-cert"]
    assert (client_cert == []) is enforce


# --- IMAP and POP3: logins really attempted in clear ------------------------------------------------


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
@pytest.mark.parametrize("lie", [False, True], ids=["honest", "login-in-clear"])
def test_imap_and_pop3_login_in_clear_where_forbidden_is_caught(pki: SessionPKI, protocol: str, lie: bool) -> None:
    files = pki.server_files(CertProfile.VALID)
    context = server_context(
        min_version="TLSv1.2",
        max_version="TLSv1.2",
        ciphers="DEFAULT",
        cert_file=files.cert_file,
        key_file=files.key_file,
    )
    user, password = "tester@mailtls.test", "mailtls-password"
    responder = LoginResponder(protocol, context, username=user, password=password, login_in_clear=lie)
    try:
        cell = Cell(
            "dovecot", SERVICES[protocol], Mode.STARTTLS, POLICIES["tls12-only"], CertProfile.VALID, AUTH["default"]
        )
        endpoint = Endpoint(cell, "127.0.0.1", responder.port, pki.server_hostname, str(pki.ca_file), user, password)
        result = probe_endpoint(endpoint)
    finally:
        responder.stop()
    mismatches = verify_endpoint(endpoint, result)
    if not lie:
        assert mismatches == []
        assert result.auth_attempts and not any(a.accepted for a in result.auth_attempts)
        return
    # What the server advertises is honest (LOGINDISABLED, no SASL before STLS): only the attempts tell.
    assert {m.aspect for m in mismatches} == {"auth"}
    first = {"imap": "LOGIN", "pop3": "USER/PASS"}[protocol]
    expected = f"{first} in clear refused before STARTTLS (auth policy default)"
    line = next(str(m) for m in mismatches if m.expected == expected)
    sent = {"imap": 'sent p3 LOGIN "tester@mailtls.test" "***": p3 OK logged in',
            "pop3": "sent USER tester@mailtls.test, PASS ***: +OK logged in"}[protocol]  # fmt: skip
    assert sent in line and password not in line
    assert len(mismatches) == 2  # the SASL PLAIN attempt too
