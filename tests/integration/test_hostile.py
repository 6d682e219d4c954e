"""Hostile-network cells in front of real servers: a secure client refuses (or goes on unharmed), vulnerable clients
are reported ``insecure`` with the right class, and the session record shows what the client did after the attack.

The grid is the one ``mailtls certify --select hostile`` uses: real Postfix and Dovecot containers (the embedded
backend without a Docker engine, for SMTP), each hostile cell a relay of its own playing the attack in front of
the real server.
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
from pytest_mailtls.wire.attacks import ATTACKS

pytestmark = pytest.mark.integration

MATRIX = load_matrix()
VULNERABLE = Path(__file__).with_name("vulnerable_clients.py")


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    servers = ["embedded"] if runtime.engine_problem() else ["postfix", "dovecot"]
    cells = MATRIX.cells(servers=servers, selection="hostile")
    with Grid(cells, workdir=tmp_path_factory.mktemp("hostile")) as running:
        yield running


def _smtp(grid: Grid, network: str) -> Endpoint:
    return next(e for e in grid.endpoints if e.cell.network == network and e.service == "submission")


def _vulnerable(kind: str) -> Client:
    argv = (
        f"{sys.executable} {VULNERABLE} {kind} {{host}} {{port}} {{server_hostname}} {{ca_file}} {{user}} {{password}}"
    )
    return command_client(argv, name=f"vulnerable-{kind}", family="python", protocols=("smtp",))


def test_every_attack_is_played_in_front_of_a_real_server(grid: Grid) -> None:
    played = {e.cell.network for e in grid.endpoints}
    smtp_only = grid.endpoints and all(e.protocol == "smtp" for e in grid.endpoints)
    wanted = {name for name, a in ATTACKS.items() if not smtp_only or "smtp" in a.protocols}
    assert played == wanted
    for endpoint in grid.endpoints:
        assert endpoint.id.endswith("-" + str(endpoint.cell.network))
        assert endpoint.extra["upstream_port"] != endpoint.port  # the relay's port, the server behind it


def test_python_is_refused_correctly_or_unharmed_on_every_hostile_cell(grid: Grid) -> None:
    report = certify(get_client("python"), grid.endpoints, logs_for=lambda e: grid.cell_logs(e.id))
    problems = [r.explain() for r in report.cells if r.verdict not in ("pass", "refused-correctly")]
    assert not problems, "\n\n".join(problems)
    mismatched = [r.explain() for r in report.cells if not r.class_matches and r.verdict == "refused-correctly"]
    assert not mismatched, "\n\n".join(mismatched)
    for record in report.cells:
        network = record.manifest["network"]
        attack = ATTACKS[network]
        assert record.wire is not None
        sessions = record.wire["sessions"]
        # The record shows the attack, and what the client did after it.
        assert any(s["network"] == network and s["attack"] for s in sessions), record.explain()
        if attack.expected == "refuse":
            assert record.verdict == "refused-correctly", record.explain()
            assert not any(s["credentials"] or s["mail_commands"] for s in sessions), record.explain()
    assert report.vulnerabilities() == {}


@pytest.mark.parametrize("network", ["strip-capa", "strip-refuse", "strip-garbage"])
def test_a_client_that_carries_on_in_clear_is_insecure_stripping(grid: Grid, network: str) -> None:
    endpoint = _smtp(grid, network)
    record = check(_vulnerable("fallback"), endpoint, logs_for=lambda e: grid.cell_logs(e.id))
    assert record.verdict == "insecure", record.explain()
    assert record.diagnosis is not None and record.diagnosis.failure_class == "starttls-stripping", record.explain()
    assert any("credentials (AUTH PLAIN) in clear" in e for e in record.diagnosis.evidence), record.explain()
    # The same client on the cell without the attack upgrades and is not insecure.
    base = next(e for e in grid.servers[endpoint.server].endpoints if e.id == endpoint.cell.base.id)
    assert check(_vulnerable("fallback"), base).verdict == "pass"


def test_a_client_that_keeps_buffered_plaintext_is_insecure_response_injection(grid: Grid) -> None:
    endpoint = _smtp(grid, "inject-response")
    record = check(_vulnerable("buffering"), endpoint, logs_for=lambda e: grid.cell_logs(e.id))
    assert record.verdict == "insecure", record.explain()
    assert record.diagnosis is not None and record.diagnosis.failure_class == "response-injection", record.explain()
    assert any("before the server had answered its first command" in e for e in record.diagnosis.evidence)
    assert any(e.startswith("wire (inside TLS): C: AUTH PLAIN ***") for e in record.diagnosis.evidence)
    # smtplib, which discards what it read before the handshake, goes on unharmed on the same cell.
    assert check(get_client("python-smtplib"), endpoint).verdict == "pass"


def test_the_vulnerable_clients_are_refused_correctly_where_they_are_not_vulnerable(grid: Grid) -> None:
    buffering, fallback = _vulnerable("buffering"), _vulnerable("fallback")
    assert check(buffering, _smtp(grid, "strip-refuse")).verdict == "refused-correctly"
    assert check(fallback, _smtp(grid, "intercept")).verdict == "refused-correctly"
    assert check(fallback, _smtp(grid, "inject-response")).verdict == "pass"


def test_verification_off_is_insecure_interception_and_the_interceptor_saw_the_credentials(grid: Grid) -> None:
    record = check(get_client("python-unsafe"), _smtp(grid, "intercept"))
    assert record.verdict == "insecure", record.explain()
    assert record.diagnosis is not None and record.diagnosis.failure_class == "tls-interception"
    assert record.wire is not None
    assert any(s["inner_credentials"] for s in record.wire["sessions"]), record.explain()


def test_expectations_say_what_a_secure_client_does(grid: Grid) -> None:
    python = get_client("python").profile
    for endpoint in grid.endpoints:
        attack = ATTACKS[str(endpoint.cell.network)]
        expected = expect(python, endpoint.cell)
        assert not expected.secure_overlap
        if attack.expected == "refuse":
            assert expected.outcome == attack.refusal and not expected.may_succeed
        else:
            assert expected.may_succeed
