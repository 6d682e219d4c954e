"""The session recorder in front of real servers: what it records matches what clients and servers did.

One grid per backend (embedded, Postfix, Dovecot, James) on the ``quick`` selection, served through
``Grid`` exactly as the plugin and the CLI serve it, so every connection crosses the recorder. Each
fact asserted here was first checked by hand against the client's own report and ``openssl s_client``.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator

import pytest

from pytest_mailtls.certify import certify, check
from pytest_mailtls.clients import command_client, get_client
from pytest_mailtls.grid import Grid
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.policy import Mode
from pytest_mailtls.report import Report
from pytest_mailtls.upstream import is_socket

from .cellchecks import needs_engine

pytestmark = pytest.mark.integration

MATRIX = load_matrix()
SERVERS = ["embedded", "postfix", "dovecot", "james"]

# A client that never uses STARTTLS: logs in and sends (SMTP) or logs in (IMAP, POP3) in clear.
PLAINTEXT_CLIENT = textwrap.dedent(
    """
    import imaplib, poplib, smtplib, sys
    host, port, proto, user, password = sys.argv[1:6]
    port = int(port)
    if proto == "smtp":
        with smtplib.SMTP(host, port, timeout=10) as s:
            s.ehlo()
            if s.has_extn("auth"):
                s.login(user, password)
            s.sendmail(user, [user], b"Subject: clear\\r\\n\\r\\nin clear\\r\\n")
    elif proto == "imap":
        c = imaplib.IMAP4(host, port, timeout=10)
        c.login(user, password)
        c.logout()
    else:
        c = poplib.POP3(host, port, timeout=10)
        c.user(user)
        c.pass_(password)
        c.quit()
    """
)


@pytest.fixture(scope="module", params=SERVERS)
def grid(request: pytest.FixtureRequest) -> Iterator[Grid]:
    if request.param != "embedded":
        needs_engine()
    cells = MATRIX.cells(servers=[request.param], selection="quick")
    with Grid(cells, ready_timeout=120) as running:
        yield running


def _logs(grid: Grid):  # type: ignore[no-untyped-def]
    return lambda e: grid.cell_logs(e.id)


def _one(grid: Grid, **criteria: str) -> Endpoint:
    found = grid.find(**criteria)
    assert found, f"no cell matches {criteria}"
    return found[0]


def test_every_python_session_is_recorded_and_agrees_with_the_client(grid: Grid) -> None:
    client = get_client("python")
    for endpoint in grid.endpoints:
        record = check(client, endpoint, logs_for=_logs(grid))
        assert record.wire is not None and record.wire["connections"] >= 1, endpoint.id
        assert record.verdict in ("pass", "refused-correctly"), record.explain()
        if record.verdict == "pass" and endpoint.mode is not Mode.PLAIN:
            # The wire names what was negotiated, and it is what the client itself reported.
            assert record.wire["negotiated"] is not None, record.explain()
            assert record.negotiated_version == record.wire["negotiated"]["version"]
            assert record.wire["handshake_completed"] and record.wire["credentials_in_clear"] == []
            assert record.client_offer is not None and record.client_offer["versions"] == ["TLSv1.2", "TLSv1.3"]


def test_a_version_refusal_is_seen_on_the_wire(grid: Grid) -> None:
    endpoint = _one(grid, policy="tls10-only", mode="starttls")
    record = check(get_client("python"), endpoint, logs_for=_logs(grid))
    assert record.verdict == "refused-correctly" and record.actual == "protocol-version-mismatch", record.explain()
    [session] = [s for s in record.wire["sessions"] if s["client_hello"]]  # type: ignore[index]
    assert session["server_hello"] is None
    assert session["client_hello"]["versions"] == ["TLSv1.2", "TLSv1.3"]
    assert any("wire: " in e and "no common version" in e for e in record.diagnosis.evidence)  # type: ignore[union-attr]


def test_a_refused_certificate_stops_before_the_client_finished(grid: Grid) -> None:
    endpoint = _one(grid, cert="expired")
    record = check(get_client("python"), endpoint, logs_for=_logs(grid))
    assert record.actual == "certificate-expired", record.explain()
    assert not record.wire["handshake_completed"] and not record.wire["client_app_data"]  # type: ignore[index]


def test_a_client_that_accepts_a_bad_certificate_is_insecure_by_the_wire(grid: Grid) -> None:
    endpoint = _one(grid, cert="expired")
    record = check(get_client("python-unsafe"), endpoint, logs_for=_logs(grid))
    assert record.verdict == "insecure", record.explain()
    assert record.diagnosis is not None and record.diagnosis.failure_class == "certificate-expired"
    assert "sent application data" in record.diagnosis.evidence[0]


def test_sessions_are_readable_from_the_endpoint(grid: Grid) -> None:
    endpoint = _one(grid, mode="implicit", cert="valid")
    before = len(endpoint.sessions(since=0))
    check(get_client("python"), endpoint)
    sessions = endpoint.sessions(since=0)
    assert len(sessions) == before + 1
    last = endpoint.last_session() if "sessions_since" in endpoint.extra else sessions[-1]
    assert last.tls_version in ("TLSv1.2", "TLSv1.3") and last.cipher and last.dialogue == []
    assert last.closed is not None and not last.upstream_error
    # The recorder's port toward the server, where it dials TCP; through a sealed container's socket the
    # server sees its relay's port instead, so none is recorded.
    assert bool(last.upstream_port) is not is_socket(str(endpoint.extra["upstream_host"]))


def test_a_command_client_that_skips_starttls_is_insecure(grid: Grid) -> None:
    """Through --command: nothing declared, the wire alone shows credentials or mail crossing in clear."""
    template = f"{sys.executable} -c '{PLAINTEXT_CLIENT}' {{host}} {{port}} {{protocol}} {{user}} {{password}}"
    client = command_client(template, name="plaintext", family="python")
    endpoint = _one(grid, mode="starttls", policy="intermediate", cert="valid")
    record = check(client, endpoint, logs_for=_logs(grid))
    assert record.verdict == "insecure", record.explain()
    assert record.diagnosis is not None and "wire: " in record.diagnosis.evidence[0]
    assert "in clear" in record.diagnosis.evidence[0]
    assert not any("plaintext" in e and "succeeded over" in e for e in record.diagnosis.evidence)


def _verdicts(report: Report) -> list[tuple[str, str, str, str | None]]:
    return [(r.id, r.verdict, r.actual, r.diagnosis.failure_class if r.diagnosis else None) for r in report.cells]


def test_parallel_certification_gives_the_sequential_verdicts(grid: Grid) -> None:
    """Each cell is run by one worker; its sessions and log lines stay its own, so verdicts do not move."""
    client = get_client("python")
    sequential = certify(client, grid.endpoints, logs_for=_logs(grid), workers=1)
    parallel = certify(client, grid.endpoints, logs_for=_logs(grid), workers=8)
    assert _verdicts(parallel) == _verdicts(sequential)
    assert [r.negotiated_version for r in parallel.cells] == [r.negotiated_version for r in sequential.cells]
