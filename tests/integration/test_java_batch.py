"""The Jakarta Mail client's batch JVM against the embedded server: reuse, isolation, deadlines, fallback."""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.embedded import EmbeddedBackend, EmbeddedServer
from pytest_mailtls.clients.java import JAVA_PROFILES, JakartaMailClient
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI

pytestmark = pytest.mark.integration

VALID = "smtps-implicit-intermediate-valid"
EXPIRED = "smtps-implicit-intermediate-expired"


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    workdir = tmp_path_factory.mktemp("java-batch")
    cells = [c for c in load_matrix().cells(servers=["embedded"]) if c.id.split("-", 1)[1] in (VALID, EXPIRED)]
    server = EmbeddedBackend().start(cells, StartOptions(pki=SessionPKI(workdir / "pki"), workdir=workdir))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client() -> Iterator[JakartaMailClient]:
    c = JakartaMailClient(JAVA_PROFILES["jakarta-mail"], batch=True)
    problem = c.unavailable()
    if problem:
        pytest.skip(problem)
    try:
        yield c
    finally:
        c.close()


def _find(server: EmbeddedServer, suffix: str) -> Endpoint:
    return next(e for e in server.endpoints if e.id.split("-", 1)[1] == suffix)


def _pid(client: JakartaMailClient) -> int | None:
    return client._jvm.pid if client._jvm is not None else None


def test_one_jvm_serves_cells_without_sharing_trust(embedded: EmbeddedServer, client: JakartaMailClient) -> None:
    good = client.run(_find(embedded, VALID))
    pid = _pid(client)
    assert good.ok and good.negotiated_version == "TLSv1.3", good.error_text
    # The negative twin in the same JVM: an expired certificate is still refused after a trusted session.
    bad = client.run(_find(embedded, EXPIRED))
    assert not bad.ok and bad.exit_code == 1 and "CertificateExpired" in bad.error_text + bad.transcript
    again = client.run(_find(embedded, VALID))
    assert again.ok, again.error_text
    assert pid is not None and _pid(client) == pid
    # The per-cell JVM gives the same answers.
    alone = JakartaMailClient(JAVA_PROFILES["jakarta-mail"], batch=False)
    assert alone.run(_find(embedded, VALID)).ok
    solo_bad = alone.run(_find(embedded, EXPIRED))
    assert (solo_bad.ok, solo_bad.exception_type) == (False, bad.exception_type)
    client.close()
    assert not Path(f"/proc/{pid}").exists()


def test_a_stuck_job_kills_the_jvm_and_the_next_cell_runs(embedded: EmbeddedServer, tmp_path: Path) -> None:
    client = JakartaMailClient(JAVA_PROFILES["jakarta-mail"], batch=True, timeout=3.0)
    if problem := client.unavailable():
        pytest.skip(problem)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    held: list[socket.socket] = []
    accepter = threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True)
    accepter.start()
    try:
        assert client.run(_find(embedded, VALID)).ok
        first = _pid(client)
        # Accepts, never speaks: the 10 s mail timeouts outlast the 3 s job deadline.
        stuck = client.run(replace(_find(embedded, VALID), port=silent.getsockname()[1]))
        assert (stuck.ok, stuck.exit_code) == (False, 124) and "timed out after 3 s" in stuck.error_text
        assert stuck.duration < 6 and _pid(client) is None
        after = client.run(_find(embedded, VALID))
        assert after.ok and _pid(client) not in (None, first), after.error_text
    finally:
        client.close()
        silent.close()
        for s in held:
            s.close()


def test_a_dying_jvm_is_restarted_once_then_cells_run_alone(
    embedded: EmbeddedServer, client: JakartaMailClient
) -> None:
    assert client.run(_find(embedded, VALID)).ok
    for restarts_left in (True, False):
        pid = _pid(client)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        result = client.run(_find(embedded, VALID))
        assert result.ok, result.error_text
        assert client.batch is restarts_left
        assert (_pid(client) not in (None, pid)) is restarts_left
