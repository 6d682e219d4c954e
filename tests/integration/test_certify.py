"""Certification against real servers: every verdict and every diagnosis class from real connections.

The embedded backend (aiosmtpd, in-process) serves the default matrix; Postfix
and Dovecot containers join when a Docker engine answers. Every failure class
is produced by a real failing session and diagnosed from what the client and
the server really said; each has a twin that passes.
"""

from __future__ import annotations

import json
import shutil
import ssl
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from pytest_mailtls import runtime
from pytest_mailtls.backends.base import Backend, RunningServer, StartOptions
from pytest_mailtls.backends.embedded import EmbeddedBackend, EmbeddedServer
from pytest_mailtls.certify import assert_outcome, certify, check, exit_status, version_findings
from pytest_mailtls.clients import get_client
from pytest_mailtls.clients.base import Client
from pytest_mailtls.clients.python import PYTHON_PROFILES, PythonClient
from pytest_mailtls.connect import open_client
from pytest_mailtls.diagnose import diagnose
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.oracle import FAILURE_CLASSES
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.report import Report

from .cellchecks import serve

pytestmark = pytest.mark.integration

MATRIX = load_matrix()
SMTPLIB = PYTHON_PROFILES["python-smtplib"]


def _logs(server: RunningServer) -> Callable[[Endpoint], list[str]]:
    return lambda e: server.cell_logs(e.id)  # type: ignore[attr-defined]


def _find(server: RunningServer, suffix: str) -> Endpoint:
    matches = [e for e in server.endpoints if e.id.split("-", 1)[1] == suffix]
    assert matches, f"no cell *-{suffix}"
    return matches[0]


def _problems(report: Report) -> str:
    return "\n\n".join(r.explain() for r in report.cells if r.verdict in ("incompatible", "insecure"))


def _misdiagnosed(report: Report) -> str:
    return "\n\n".join(r.explain() for r in report.cells if r.verdict == "refused-correctly" and not r.class_matches)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    workdir = tmp_path_factory.mktemp("certify-embedded")
    backend = EmbeddedBackend()
    cells = [c for c in MATRIX.cells(servers=["embedded"]) if not backend.unsupported(c)]  # no TLS 1.3 suite cells
    server = backend.start(cells, StartOptions(pki=SessionPKI(workdir / "pki"), workdir=workdir))
    try:
        yield server
    finally:
        server.stop()


# --- the built-in Python client across the default matrix ---------------------------------------


def test_python_smtplib_is_certified_with_no_incompatible_cell(embedded: EmbeddedServer, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    report = certify(
        get_client("python-smtplib"),
        embedded.endpoints,
        logs_for=_logs(embedded),
        progress=lambda done, total, line: seen.append((done, total)),
    )
    s = report.summary
    assert (s["incompatible"], s["insecure"]) == (0, 0), _problems(report)
    assert s["unexpected_class"] == 0, _misdiagnosed(report)
    assert s["pass"] >= 10 and s["refused-correctly"] >= 10
    assert exit_status(report) == 0
    assert seen[-1] == (len(embedded.endpoints), len(embedded.endpoints)) and len(seen) == s["total"]
    # Every refusal carries a diagnosis with evidence from the client and a remedy.
    for record in report.cells:
        if record.verdict == "refused-correctly":
            assert record.diagnosis is not None and record.diagnosis.remedy
            assert any(e.startswith("client: ") for e in record.diagnosis.evidence), record.explain()
    paths = report.write_all(tmp_path)
    page = paths["html"].read_text()
    assert all(e.id in page for e in embedded.endpoints)
    assert json.loads(paths["json"].read_text())["summary"]["total"] == len(embedded.endpoints)


def test_unsafe_python_client_is_reported_insecure(embedded: EmbeddedServer) -> None:
    report = certify(get_client("python-unsafe"), embedded.endpoints, logs_for=_logs(embedded))
    insecure = {r.id.split("-", 1)[1] for r in report.cells if r.verdict == "insecure"}
    faults = {
        f"{svc}-intermediate-{cert}"
        for svc in ("submission-starttls", "smtps-implicit")
        for cert in (
            "expired",
            "not-yet-valid",
            "wrong-host",
            "self-signed",
            "untrusted-ca",
            "missing-intermediate",
            "weak-rsa-1024",
            "sha1-signature",
            "sha1-intermediate",
            "expired-intermediate",
            "wrong-eku",
            "name-constraint-violation",
        )
    }
    # Every bad certificate accepted, and the password sent where no TLS was on offer.
    assert insecure == faults | {"submission-plain-cleartext-auth"}
    assert report.summary["incompatible"] == 0, _problems(report)
    assert exit_status(report) == 1
    expired = next(r for r in report.cells if r.id.endswith("smtps-implicit-intermediate-expired"))
    assert expired.diagnosis is not None and expired.diagnosis.failure_class == "certificate-expired"
    assert "verification is off" in expired.diagnosis.remedy
    # The twin: the same client where nothing is wrong passes.
    valid = next(r for r in report.cells if r.id.endswith("smtps-implicit-intermediate-valid"))
    assert valid.verdict == "pass"


# --- every failure class from a real failing connection -----------------------------------------


class CRLCheckingClient(PythonClient):
    """smtplib that checks revocation: it fetches the CRL the server's certificate names (its distribution
    point, served by the session PKI) and verifies with ``VERIFY_CRL_CHECK_LEAF``."""

    def context(self, endpoint: Endpoint) -> ssl.SSLContext:
        ctx = super().context(endpoint)
        leaf = ssl.DER_cert_to_PEM_cert(_presented_leaf(endpoint))
        points = x509.load_pem_x509_certificate(leaf.encode()).extensions.get_extension_for_class(
            x509.CRLDistributionPoints
        )
        url = str(points.value[0].full_name[0].value)  # type: ignore[index]
        with urllib.request.urlopen(url, timeout=5) as answer:
            crl = x509.load_der_x509_crl(answer.read())
        crl_file = Path(tempfile.mkdtemp(prefix="mailtls-crl-")) / "crl.pem"
        try:
            crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
            ctx.load_verify_locations(str(crl_file))
        finally:
            shutil.rmtree(crl_file.parent)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        return ctx


def _presented_leaf(endpoint: Endpoint) -> bytes:
    """The DER leaf the cell presents (read without verification)."""
    ctx = endpoint.client_context(verify=False)
    client = open_client(endpoint, context=ctx, timeout=5)
    try:
        sock = client.sock
        der = sock.getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        client.close()


@dataclass(frozen=True)
class Scenario:
    """A client and a cell that fail with ``cls``, and a twin that must pass."""

    cls: str
    cell: str
    client: Callable[[], Client] = lambda: PythonClient(SMTPLIB)
    tweak: Callable[[Endpoint, RunningServer], Endpoint] = lambda e, s: e
    twin_cell: str = "smtps-implicit-intermediate-valid"
    twin_client: Callable[[], Client] = lambda: PythonClient(SMTPLIB)


def _tls_on_a_starttls_port(endpoint: Endpoint, server: RunningServer) -> Endpoint:
    # An implicit-TLS client pointed at the STARTTLS port (465 settings used on 587).
    return replace(endpoint, port=_find(server, "submission-starttls-intermediate-valid").port)


SCENARIOS = [
    Scenario(
        "protocol-version-mismatch", "smtps-implicit-tls10-only-valid", twin_cell="smtps-implicit-tls12-only-valid"
    ),
    Scenario(
        "no-shared-cipher",
        "smtps-implicit-tls12-single-cipher-valid",
        twin_cell="smtps-implicit-tls12-single-cipher-valid",
        twin_client=lambda: PythonClient(replace(SMTPLIB, name="static-rsa", ciphers="AES256-GCM-SHA384")),
    ),
    Scenario("untrusted-certificate", "smtps-implicit-intermediate-untrusted-ca"),
    Scenario("hostname-mismatch", "submission-starttls-intermediate-wrong-host"),
    Scenario("certificate-expired", "smtps-implicit-intermediate-expired"),
    Scenario("certificate-not-yet-valid", "submission-starttls-intermediate-not-yet-valid"),
    Scenario("incomplete-chain", "smtps-implicit-intermediate-missing-intermediate"),
    Scenario("weak-key-or-signature", "smtps-implicit-intermediate-weak-rsa-1024"),
    Scenario("weak-dh", "smtps-implicit-dhe-1024-valid"),  # OpenSSL at level 2: "dh key too small"
    Scenario(
        "certificate-revoked",
        "smtps-implicit-intermediate-revoked",
        client=lambda: CRLCheckingClient(replace(SMTPLIB, name="crl-checking")),
        twin_cell="smtps-implicit-intermediate-revoked",  # a client that checks no revocation goes on: pass
    ),
    Scenario("wrong-key-usage", "submission-starttls-intermediate-wrong-eku"),
    Scenario("name-constraint-violation", "smtps-implicit-intermediate-name-constraint-violation"),
    Scenario(
        "wrong-tls-mode",
        "smtps-implicit-intermediate-valid",
        client=lambda: PythonClient(replace(SMTPLIB, name="starttls-only", implicit_tls=False), timeout=3),
    ),
    Scenario("starttls-not-offered", "submission-plain-cleartext-auth"),
    Scenario(
        "starttls-required",
        "submission-starttls-required-intermediate-valid",
        client=lambda: PythonClient(replace(SMTPLIB, name="never-starttls", starttls="never")),
        twin_cell="submission-starttls-required-intermediate-valid",
    ),
    Scenario(
        "auth-failed",
        "submission-starttls-intermediate-valid",
        tweak=lambda e, s: replace(e, password="not-the-password"),
        twin_cell="submission-starttls-intermediate-valid",
    ),
    Scenario(
        "server-refused",  # a sender address the server refuses: 553 5.1.3 malformed address
        "smtp-starttls-intermediate-valid-open",
        tweak=lambda e, s: replace(e, username="x@@y"),
        twin_cell="smtp-starttls-intermediate-valid-open",
    ),
    Scenario(
        "client-certificate-required",
        "smtps-implicit-intermediate-valid-mtls",
        client=lambda: PythonClient(replace(SMTPLIB, name="no-client-cert", client_cert=False)),
        twin_cell="smtps-implicit-intermediate-valid-mtls",
    ),
]


def test_scenarios_cover_every_class() -> None:
    assert sorted(s.cls for s in SCENARIOS) == sorted(FAILURE_CLASSES)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.cls for s in SCENARIOS])
def test_every_class_from_a_real_failing_connection(embedded: EmbeddedServer, scenario: Scenario) -> None:
    endpoint = scenario.tweak(_find(embedded, scenario.cell), embedded)
    record = check(scenario.client(), endpoint, logs_for=_logs(embedded))
    assert record.actual == scenario.cls, record.explain()
    assert record.error, "the session must really have failed"
    assert record.diagnosis is not None and record.diagnosis.evidence and record.diagnosis.remedy
    twin = check(scenario.twin_client(), _find(embedded, scenario.twin_cell), logs_for=_logs(embedded))
    assert twin.verdict == "pass", twin.explain()


def test_implicit_tls_client_on_a_starttls_port_is_wrong_tls_mode(embedded: EmbeddedServer) -> None:
    endpoint = _tls_on_a_starttls_port(_find(embedded, "smtps-implicit-intermediate-valid"), embedded)
    record = check(PythonClient(SMTPLIB), endpoint)
    assert record.actual == "wrong-tls-mode", record.explain()
    assert record.diagnosis is not None and "wrong version number" in " ".join(record.diagnosis.evidence)


def test_server_log_lines_are_evidence(embedded: EmbeddedServer) -> None:
    record = check(
        PythonClient(replace(SMTPLIB, name="no-client-cert", client_cert=False)),
        _find(embedded, "smtps-implicit-intermediate-valid-mtls"),
        logs_for=_logs(embedded),
    )
    assert record.diagnosis is not None
    assert any(e.startswith("server: ") and "peer did not return a certificate" in e for e in record.diagnosis.evidence)
    assert any("SSL_accept error" in line for line in record.server_log)


def test_a_probe_settles_a_silent_hang_up(embedded: EmbeddedServer) -> None:
    old = _find(embedded, "smtps-implicit-tls10-only-valid")
    findings = version_findings(old, SMTPLIB)
    assert [f.classes for f in findings] == [("protocol-version-mismatch",)]
    assert "completes handshakes at TLSv1;" in findings[0].line
    # Fed the words of a server that hung up without an alert, the probe decides the class.
    text = "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol (_ssl.c:1006)"
    diagnosis = diagnose(text, family="python", cell=old.cell, findings=findings)
    assert diagnosis.failure_class == "protocol-version-mismatch" and not diagnosis.ambiguous
    # The twin: where the versions meet, the probe says so and points elsewhere.
    modern = version_findings(_find(embedded, "smtps-implicit-tls12-single-cipher-valid"), SMTPLIB)
    assert "protocol-version-mismatch" not in modern[0].classes and "not the problem" in modern[0].line


# --- command-line clients ------------------------------------------------------------------------

# What each tool really lets through (a finding about the tool, not about pytest-mailtls):
# swaks 20201014 has no host name check; msmtp's GnuTLS accepts a 1024-bit RSA key, and msmtp checks no extended
# key usage (a clientAuth-only certificate is accepted; docs/findings.md).
KNOWN_INSECURE = {
    "curl": set(),
    "openssl-s_client": set(),
    "swaks": {"submission-starttls-intermediate-wrong-host", "smtps-implicit-intermediate-wrong-host"},
    "msmtp": {
        # GnuTLS's NORMAL priority takes a 1024-bit DH group (its own output: "(DHE-CUSTOM1024)-(RSA-PSS-RSAE-SHA256)")
        "submission-starttls-dhe-1024-valid",
        "smtps-implicit-dhe-1024-valid",
        "submission-starttls-intermediate-weak-rsa-1024",
        "smtps-implicit-intermediate-weak-rsa-1024",
        "submission-starttls-intermediate-wrong-eku",
        "smtps-implicit-intermediate-wrong-eku",
    },
}


@pytest.mark.parametrize("name", sorted(KNOWN_INSECURE))
def test_command_line_clients(embedded: EmbeddedServer, name: str) -> None:
    client = get_client(name)
    if client.unavailable():
        pytest.skip(str(client.unavailable()))
    report = certify(client, embedded.endpoints, logs_for=_logs(embedded))
    assert report.summary["incompatible"] == 0, _problems(report)
    assert report.summary["unexpected_class"] == 0, _misdiagnosed(report)
    insecure = {r.id.split("-", 1)[1] for r in report.cells if r.verdict == "insecure"}
    assert insecure == KNOWN_INSECURE[name], _problems(report)
    assert report.summary["pass"] >= 10


def test_command_template_client(embedded: EmbeddedServer) -> None:
    if shutil.which("curl") is None:
        pytest.skip("needs curl")
    from pytest_mailtls.clients import command_client

    client = command_client(
        "curl -sS --resolve {server_hostname}:{port}:{host} --cacert {ca_file} --ssl-reqd {url} "
        "-u {user}:{password} -X NOOP",
        name="curl-template",
    )
    good = check(client, _find(embedded, "submission-starttls-intermediate-valid"))
    assert good.verdict == "pass", good.explain()
    bad = check(client, _find(embedded, "smtps-implicit-intermediate-expired"), logs_for=_logs(embedded))
    assert (bad.verdict, bad.actual) == ("refused-correctly", "certificate-expired"), bad.explain()


# --- the Jakarta Mail client ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def java_client() -> Client:
    client = get_client("jakarta-mail")
    problem = client.unavailable()  # builds the client with Maven once (cached by content hash)
    if problem:
        pytest.skip(problem)
    return client


def test_jakarta_mail_tls1_reproduces_the_field_failure(embedded: EmbeddedServer, java_client: Client) -> None:
    tls1 = get_client("jakarta-mail-tls1")
    for suffix in ("smtps-implicit-intermediate-valid", "submission-starttls-intermediate-valid"):
        record = check(tls1, _find(embedded, suffix), logs_for=_logs(embedded))
        assert (record.verdict, record.actual) == ("incompatible", "protocol-version-mismatch"), record.explain()
        assert record.diagnosis is not None
        assert any("No appropriate protocol" in e for e in record.diagnosis.evidence), record.explain()
        assert 'mail.smtp.ssl.protocols="TLSv1.2 TLSv1.3"' in record.diagnosis.remedy
        # The twin: the same JVM and Angus Mail with JDK defaults.
        twin = check(java_client, _find(embedded, suffix), logs_for=_logs(embedded))
        assert twin.verdict == "pass" and twin.negotiated_version == "TLSv1.3", twin.explain()


def test_jakarta_mail_quick_selection(embedded: EmbeddedServer, java_client: Client) -> None:
    quick = {c.id for c in MATRIX.cells(servers=["embedded"], selection="quick")}
    report = certify(java_client, [e for e in embedded.endpoints if e.id in quick], logs_for=_logs(embedded))
    assert report.summary["incompatible"] == 0 and report.summary["insecure"] == 0, _problems(report)
    assert report.summary["unexpected_class"] == 0, _misdiagnosed(report)
    expired = next(r for r in report.cells if r.id.endswith("implicit-intermediate-expired"))
    assert expired.diagnosis is not None and any("NotAfter" in e for e in expired.diagnosis.evidence)


# --- real Postfix and Dovecot, when a Docker engine answers ---------------------------------------


@pytest.fixture(scope="module")
def docker_pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)
    return SessionPKI(tmp_path_factory.mktemp("certify-docker-pki"))


def _default_cells(backend: Backend, pki: SessionPKI, workdir: Path) -> Iterator[RunningServer]:
    """A server fixture's body: ``backend`` serving its default cells."""
    yield from serve(
        lambda: backend.start(MATRIX.cells(servers=[backend.name]), StartOptions(pki=pki, workdir=workdir))
    )


@pytest.fixture(scope="module")
def postfix(docker_pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from pytest_mailtls.backends.postfix import PostfixBackend

    yield from _default_cells(PostfixBackend(), docker_pki, tmp_path_factory.mktemp("pf"))


@pytest.fixture(scope="module")
def dovecot(docker_pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from pytest_mailtls.backends.dovecot import DovecotBackend

    yield from _default_cells(DovecotBackend(), docker_pki, tmp_path_factory.mktemp("dv"))


def test_python_smtplib_against_postfix(postfix: RunningServer) -> None:
    report = certify(get_client("python-smtplib"), postfix.endpoints, logs_for=_logs(postfix))
    assert (report.summary["incompatible"], report.summary["insecure"]) == (0, 0), _problems(report)
    assert report.summary["unexpected_class"] == 0, _misdiagnosed(report)
    by_cell = {r.id: r for r in report.cells}
    old = by_cell["postfix-smtps-implicit-tls10-only-valid"]
    assert old.diagnosis is not None
    assert any(e.startswith("server: ") and "unsupported protocol" in e for e in old.diagnosis.evidence)
    cipher = by_cell["postfix-smtps-implicit-tls12-single-cipher-valid"]
    assert cipher.diagnosis is not None
    assert any(e.startswith("server: ") and "no shared cipher" in e for e in cipher.diagnosis.evidence)


def test_postfix_logs_the_failed_login(postfix: RunningServer) -> None:
    endpoint = replace(_find(postfix, "submission-starttls-intermediate-valid"), password="not-the-password")
    record = check(PythonClient(SMTPLIB), endpoint, logs_for=_logs(postfix))
    assert record.actual == "auth-failed", record.explain()
    assert record.diagnosis is not None
    assert any(e.startswith("server: ") and "authentication failed" in e for e in record.diagnosis.evidence)
    twin = check(PythonClient(SMTPLIB), _find(postfix, "submission-starttls-intermediate-valid"))
    assert_outcome(twin)


def test_python_imap_and_pop3_against_dovecot(dovecot: RunningServer) -> None:
    report = certify(get_client("python"), dovecot.endpoints, logs_for=_logs(dovecot))
    assert (report.summary["incompatible"], report.summary["insecure"]) == (0, 0), _problems(report)
    assert report.summary["unexpected_class"] == 0, _misdiagnosed(report)
    assert {r.manifest["protocol"] for r in report.cells if r.verdict == "pass"} == {"imap", "pop3"}
    unsafe = certify(get_client("python-unsafe"), dovecot.endpoints, logs_for=_logs(dovecot))
    plain = {r.id for r in unsafe.cells if r.verdict == "insecure" and r.manifest["mode"] == "plain"}
    assert plain == {"dovecot-imap-plain-cleartext-auth", "dovecot-pop3-plain-cleartext-auth"}
