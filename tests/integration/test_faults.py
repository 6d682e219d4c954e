"""Server-fault cells in front of real servers: a correct client reports every failure it meets, a careless one that
reports success for refused mail is caught as ``lost-mail`` (or ``ignored-error``), and the session record shows the
fault and what the client saw, inside TLS included.

The grid is the one ``mailtls certify --select faults`` uses: real Postfix and Dovecot containers (the embedded
backend without a Docker engine, for SMTP), each fault cell a relay of its own playing the fault in front of the
real server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.certify import certify, check
from pytest_mailtls.clients import command_client, get_client
from pytest_mailtls.clients.base import Client
from pytest_mailtls.grid import Grid
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.oracle import expect
from pytest_mailtls.wire.attacks import FAULTS

pytestmark = pytest.mark.integration

MATRIX = load_matrix()
CARELESS = Path(__file__).with_name("vulnerable_clients.py")
#: Stages the built-in python client never reaches (it neither appends over IMAP nor retrieves over POP3).
NOT_REACHED = {"fault-append-no", "fault-retr-err"}


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    servers = ["embedded"] if runtime.engine_problem() else ["postfix", "dovecot"]
    cells = MATRIX.cells(servers=servers, selection="faults")
    with Grid(cells, workdir=tmp_path_factory.mktemp("faults")) as running:
        yield running


def _cell(grid: Grid, network: str, service: str) -> Endpoint:
    found = [e for e in grid.endpoints if e.cell.network == network and e.service == service]
    if not found:
        pytest.skip(f"no {service} cell for {network} (no Docker engine: SMTP only)")
    return found[0]


def _careless(kind: str, protocol: str) -> Client:
    argv = f"{sys.executable} {CARELESS} {kind} {{host}} {{port}} {{server_hostname}} {{ca_file}} {{user}} {{password}}"
    return command_client(argv, name=f"careless-{kind}", family="python", protocols=(protocol,))


def test_every_fault_is_played_in_front_of_a_real_server(grid: Grid) -> None:
    played = {e.cell.network for e in grid.endpoints}
    smtp_only = all(e.protocol == "smtp" for e in grid.endpoints)
    assert played == {name for name, f in FAULTS.items() if not smtp_only or "smtp" in f.protocols}
    for endpoint in grid.endpoints:
        assert endpoint.id.endswith("-" + str(endpoint.cell.network))
        assert endpoint.cell.group == "faults"
        assert endpoint.extra["upstream_port"] != endpoint.port


def test_python_reports_every_fault_it_meets(grid: Grid) -> None:
    report = certify(get_client("python"), grid.endpoints, logs_for=lambda e: grid.cell_logs(e.id))
    problems = [r.explain() for r in report.cells if r.verdict not in ("pass", "refused-correctly")]
    assert not problems, "\n\n".join(problems)
    mismatched = [r.explain() for r in report.cells if r.verdict == "refused-correctly" and not r.class_matches]
    assert not mismatched, "\n\n".join(mismatched)
    assert report.vulnerabilities() == {}
    for record in report.cells:
        network = str(record.manifest["network"])
        fault = FAULTS[network]
        assert record.wire is not None
        sessions = record.wire["sessions"]
        events = [event for s in sessions for event in s["attack"]]
        if network in NOT_REACHED:
            assert record.verdict == "pass" and not events, record.explain()
        elif fault.stage == "slow":  # a patient client gets through, and the mail is accepted
            assert record.verdict == "pass" and events, record.explain()
        else:  # the client met the fault, on the wire, and reported the failure
            assert record.verdict == "refused-correctly", record.explain()
            assert events and record.expected == fault.refusal, record.explain()
            assert not any(s["message_accepted"] or s["inner_message_accepted"] for s in sessions), record.explain()
            assert record.diagnosis is not None and record.diagnosis.remedy.startswith("nothing to fix")


@pytest.mark.parametrize("network", ["fault-rcpt-451", "fault-rcpt-550", "fault-mail-451", "fault-data-554"])
def test_a_client_that_ignores_refusals_loses_mail(grid: Grid, network: str) -> None:
    endpoint = _cell(grid, network, "submission")
    record = check(_careless("ignoring", "smtp"), endpoint, logs_for=lambda e: grid.cell_logs(e.id))
    assert record.verdict == "insecure", record.explain()
    assert record.diagnosis is not None and record.diagnosis.failure_class == "lost-mail", record.explain()
    evidence = record.diagnosis.evidence
    assert "no 2xx after the end of DATA" in evidence[0] and network in evidence[0], record.explain()
    # The refusal was inside TLS (STARTTLS, then the relay's own TLS endpoint), and the record shows it.
    assert any(e.startswith("wire (inside TLS): ") for e in evidence), record.explain()
    assert record.wire is not None and record.wire["negotiated"] is not None
    # The same careless client on the real server without the fault gets its mail accepted: a pass.
    base = next(e for e in grid.servers[endpoint.server].endpoints if e.id == endpoint.cell.base.id)
    assert check(_careless("ignoring", "smtp"), base).verdict == "pass"


def test_a_client_cut_off_in_the_middle_of_data_reports_it(grid: Grid) -> None:
    endpoint = _cell(grid, "fault-data-disconnect", "submission")
    record = check(_careless("ignoring", "smtp"), endpoint)
    assert record.verdict == "refused-correctly", record.explain()  # its socket error makes it exit 1
    assert record.wire is not None
    assert any(s["close_how"] == "rst" for s in record.wire["sessions"]), record.explain()


@pytest.mark.parametrize("network", ["fault-rcpt-550", "fault-rcpt-451", "fault-greeting-554"])
def test_a_client_that_comes_back_at_once_for_a_refusal_is_a_retry_storm(grid: Grid, network: str) -> None:
    endpoint = _cell(grid, network, "submission")
    record = check(_careless("retrying", "smtp"), endpoint)
    assert record.verdict == "insecure", record.explain()  # although it reported the failure in the end
    assert record.diagnosis is not None and record.diagnosis.failure_class == "retry-storm", record.explain()
    assert "refused on 5 connections" in record.diagnosis.evidence[0], record.explain()
    base = next(e for e in grid.servers[endpoint.server].endpoints if e.id == endpoint.cell.base.id)
    assert check(_careless("retrying", "smtp"), base).verdict == "pass"


@pytest.mark.parametrize("network", ["fault-login-no", "fault-select-no"])
def test_an_imap_client_that_ignores_no_is_reported_ignored_error(grid: Grid, network: str) -> None:
    endpoint = _cell(grid, network, "imap")
    record = check(_careless("ignoring-imap", "imap"), endpoint)
    assert record.verdict == "insecure", record.explain()
    assert record.diagnosis is not None and record.diagnosis.failure_class == "ignored-error", record.explain()
    assert "NO [" in record.diagnosis.evidence[0], record.explain()


def test_expectations_let_the_wire_decide(grid: Grid) -> None:
    python = get_client("python").profile
    for endpoint in grid.endpoints:
        fault = FAULTS[str(endpoint.cell.network)]
        expected = expect(python, endpoint.cell)
        assert expected.may_succeed and not expected.secure_overlap
        assert expected.outcome == (fault.refusal or "success")
