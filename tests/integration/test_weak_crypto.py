"""The weak-crypto cells (static RSA with CBC, NULL encryption) on real servers, judged from real handshakes.

Postfix and Dovecot (OpenSSL at security level 0 for NULL) and Courier (GnuTLS ``+NULL``) serve the
``weak-crypto`` block behind session recorders. ``mailtls verify`` checks each cell both ways; the Python client
with its default suites is refused on every one; a client that offers the suites gets them, and a success
over a NULL suite is ``insecure`` whatever the client offered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.backends.base import Backend, RunningServer, StartOptions
from pytest_mailtls.certify import check
from pytest_mailtls.clients.python import PYTHON_PROFILES, PythonClient
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.verify import verify_endpoints

from .cellchecks import serve

pytestmark = pytest.mark.integration

MATRIX = load_matrix()
WEAK = MATRIX.cells(selection="weak-crypto")
PYTHON = PYTHON_PROFILES["python"]
#: A client that offers what the weak cells serve (at security level 0, where OpenSSL 3 keeps NULL suites).
OFFERS_WEAK = PythonClient(replace(PYTHON, name="python-weak", ciphers="NULL-SHA256:NULL-SHA:AES128-SHA:@SECLEVEL=0"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)
    return SessionPKI(tmp_path_factory.mktemp("weak-pki"))


def _weak_cells(backend: Backend, pki: SessionPKI, workdir: Path) -> Iterator[RunningServer]:
    cells = [c for c in WEAK if c.server == backend.name and not backend.unsupported(c)]
    yield from serve(lambda: backend.start(cells, StartOptions(pki=pki, workdir=workdir)))


@pytest.fixture(scope="module", params=["postfix", "dovecot", "courier"])
def server(
    request: pytest.FixtureRequest, pki: SessionPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    from pytest_mailtls.backends import get_backend

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
        want = {"NULL-SHA256", "NULL-SHA"} if policy.name == "null-cipher" else {"AES128-SHA", "AES256-SHA"}
        assert accepted == want, verdict.endpoint.id


def test_python_default_suites_are_refused_on_every_weak_cell(server: RunningServer) -> None:
    for endpoint in server.endpoints:
        record = check(PythonClient(PYTHON), endpoint, send=False)
        assert record.verdict == "refused-correctly", record.explain()
        assert record.expected == "no-shared-cipher"
        assert record.negotiated_cipher is None  # no ServerHello was accepted: nothing crossed under weak crypto


def test_a_null_session_is_insecure_and_static_rsa_cbc_passes(server: RunningServer) -> None:
    for endpoint in server.endpoints:
        record = check(OFFERS_WEAK, endpoint, send=False)
        policy = endpoint.cell.policy
        assert policy is not None
        if policy.name == "null-cipher":
            assert record.verdict == "insecure", record.explain()
            assert record.negotiated_cipher in ("NULL-SHA256", "NULL-SHA"), record.explain()
            assert record.diagnosis is not None and any("NULL" in e for e in record.diagnosis.evidence)
        else:
            assert record.verdict == "pass", record.explain()
            assert record.negotiated_cipher == "AES128-SHA", record.explain()
        assert endpoint.cell.group == "broken crypto"
