"""The weak-crypto cells (static RSA with CBC, NULL encryption, DHE over a 1024-bit group) on real servers, judged
from real handshakes.

Postfix and Dovecot (OpenSSL at security level 0 for NULL, 1 for the 1024-bit DH group), Courier (GnuTLS ``+NULL``;
no small DH group: RFC 7919) and the embedded server serve the ``weak-crypto`` block behind session recorders.
``mailtls verify`` checks each cell both ways; the Python client with its default suites is refused on every one
(on dhe-1024 with OpenSSL's "dh key too small"); a client that offers the suites gets them, and a success over a
NULL suite or over the small DH group is ``insecure`` whatever the client offered.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.backends.base import Backend, RunningServer, StartOptions
from pytest_mailtls.certify import check
from pytest_mailtls.clients.python import PYTHON_PROFILES, PythonClient
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.verify import server_dh_group, verify_endpoints

from .cellchecks import serve

pytestmark = pytest.mark.integration

MATRIX = load_matrix()
WEAK = MATRIX.cells(selection="weak-crypto")
PYTHON = PYTHON_PROFILES["python"]
#: A client that offers what the weak cells serve (at security level 0, where OpenSSL 3 keeps NULL suites).
OFFERS_WEAK = PythonClient(
    replace(PYTHON, name="python-weak", ciphers="NULL-SHA256:NULL-SHA:AES128-SHA:DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")
)
#: The suites each weak policy's server accepts, and nothing else.
SUITES = {
    "static-rsa-cbc": {"AES128-SHA", "AES256-SHA"},
    "null-cipher": {"NULL-SHA256", "NULL-SHA"},
    "dhe-1024": {"DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("weak-pki"))


def _weak_cells(backend: Backend, pki: SessionPKI, workdir: Path) -> Iterator[RunningServer]:
    cells = [c for c in WEAK if c.server == backend.name and not backend.unsupported(c)]
    yield from serve(lambda: backend.start(cells, StartOptions(pki=pki, workdir=workdir)))


@pytest.fixture(scope="module", params=["postfix", "dovecot", "courier", "embedded"])
def server(
    request: pytest.FixtureRequest, pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    from pytest_mailtls.backends import get_backend

    if request.param != "embedded" and (problem := runtime.engine_problem()):
        pytest.skip(problem)
    yield from _weak_cells(get_backend(request.param), pki, tmp_path_factory.mktemp(request.param))


def test_weak_cells_verify_both_ways(server: RunningServer) -> None:
    assert len(server.endpoints) >= 4
    report = verify_endpoints(server.endpoints)
    assert report.ok, report.render_table()
    for verdict in report.verdicts:
        assert verdict.probe is not None
        accepted = set(verdict.probe.ciphers("TLSv1.2"))
        policy = verdict.endpoint.cell.policy
        assert policy is not None and verdict.probe.accepted_versions == ["TLSv1.2"]
        assert accepted == SUITES[policy.name], verdict.endpoint.id


def test_python_default_suites_are_refused_on_every_weak_cell(server: RunningServer) -> None:
    for endpoint in server.endpoints:
        record = check(PythonClient(PYTHON), endpoint, send=False)
        assert record.verdict == "refused-correctly", record.explain()
        assert record.negotiated_cipher is None  # no ServerHello was accepted: nothing crossed under weak crypto
        policy = endpoint.cell.policy
        assert policy is not None
        if policy.name == "dhe-1024":
            # The server chose a DHE suite (Python offers DHE+AES) and the client refused its 1024-bit group.
            assert record.expected == "weak-dh"
            assert "dh key too small" in (record.error or "").lower(), record.explain()
            assert record.diagnosis is not None and record.diagnosis.failure_class == "weak-dh", record.explain()
        else:
            assert record.expected == "no-shared-cipher"


def test_a_null_session_is_insecure_and_static_rsa_cbc_passes(server: RunningServer) -> None:
    for endpoint in server.endpoints:
        record = check(OFFERS_WEAK, endpoint, send=False)
        policy = endpoint.cell.policy
        assert policy is not None
        if policy.name == "null-cipher":
            assert record.verdict == "insecure", record.explain()
            assert record.negotiated_cipher in ("NULL-SHA256", "NULL-SHA"), record.explain()
            assert record.diagnosis is not None and any("NULL" in e for e in record.diagnosis.evidence)
        elif policy.name == "dhe-1024":
            # At level 0 the client takes the 1024-bit group: broken crypto accepted, whatever it offered.
            assert record.verdict == "insecure", record.explain()
            assert record.negotiated_cipher == "DHE-RSA-AES128-GCM-SHA256", record.explain()
            assert record.diagnosis is not None and record.diagnosis.failure_class == "weak-dh", record.explain()
            assert any("1024-bit DH group" in e for e in record.diagnosis.evidence), record.explain()
        else:
            assert record.verdict == "pass", record.explain()
            assert record.negotiated_cipher == "AES128-SHA", record.explain()
        assert endpoint.cell.group == "broken crypto"


def test_the_dhe_1024_group_is_1024_bits_on_the_wire(server: RunningServer) -> None:
    small = [e for e in server.endpoints if e.cell.policy is not None and e.cell.policy.name == "dhe-1024"]
    if server.endpoints[0].cell.server == "courier":
        assert small == []  # GnuTLS follows RFC 7919: the cell is declared unsupported
        return
    assert small
    for endpoint in small:
        # The project's own reader: the prime of the ServerKeyExchange after a raw TLS 1.2 ClientHello.
        for suite in sorted(SUITES["dhe-1024"]):
            assert server_dh_group(endpoint, [suite]) == (suite, 1024), endpoint.id
        # And OpenSSL's: s_client names the server's temporary key.
        if shutil.which("openssl"):
            assert "Server Temp Key: DH, 1024 bits" in _s_client(endpoint), endpoint.id


def _s_client(endpoint: Endpoint) -> str:
    args = ["openssl", "s_client", "-connect", f"{endpoint.host}:{endpoint.port}", "-CAfile", endpoint.ca_file]
    args += ["-servername", endpoint.server_hostname, "-cipher", "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=1", "-tls1_2"]
    if endpoint.mode == "starttls":
        args += ["-starttls", {"smtp": "smtp", "imap": "imap", "pop3": "pop3"}[endpoint.protocol]]
    done = subprocess.run(args, input="", capture_output=True, text=True, timeout=20, check=False)
    return re.sub(r"\s+", " ", done.stdout + done.stderr)
