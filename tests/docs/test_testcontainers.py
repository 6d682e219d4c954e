"""pytest_mailtls.testcontainers: the testcontainers-style API, run for real (its README examples included)."""

from __future__ import annotations

import os
import smtplib
import subprocess
import sys

import pytest

from pytest_mailtls.errors import MailTLSError
from pytest_mailtls.runtime import docker_client, engine_problem
from pytest_mailtls.testcontainers import MailTLSGrid, PostfixContainer

from .blocks import EXAMPLES, ROOT

needs_engine = pytest.mark.skipif(engine_problem() is not None, reason=f"no Docker engine: {engine_problem()}")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def test_the_embedded_grid_follows_the_testcontainers_conventions() -> None:
    with MailTLSGrid(["embedded"], service="submission", mode="starttls", cert="valid", auth="default") as grid:
        assert grid.get_container_host_ip() == "127.0.0.1"
        port = grid.get_exposed_port(587)
        assert port == grid.get_exposed_port("submission") == grid.endpoints[0].port
        assert grid.get_connection_url(587) == grid.endpoints[0].url
        cell = grid.find(policy="modern")[0]
        with smtplib.SMTP(cell.host, cell.port, local_hostname="client.mailtls.test", timeout=10) as smtp:
            smtp.starttls(context=grid.client_context())
            assert smtp.sock is not None and smtp.sock.version() == "TLSv1.3"  # type: ignore[attr-defined]
        with pytest.raises(MailTLSError, match="no served cell of service 'imaps'"):
            grid.get_exposed_port(993)
    with pytest.raises(MailTLSError, match="not started"):
        grid.endpoints  # noqa: B018 -- stopped: one clear error, not an AttributeError


def test_a_selection_that_matches_nothing_is_one_clear_error() -> None:
    with pytest.raises(MailTLSError, match="no cell of postfix matches"):
        PostfixContainer(policy="no-such-policy")


@needs_engine
def test_the_unittest_example_runs_and_leaves_no_container() -> None:
    result = _run("-m", "unittest", "-v", str(EXAMPLES / "unittest_testcontainers.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ran 2 tests" in result.stderr and "OK" in result.stderr, result.stderr


@needs_engine
def test_the_script_example_prints_what_each_cell_accepts() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "script_testcontainers.py")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines == {
        "dovecot-imaps-implicit-modern-valid": "TLSv1.3",
        "dovecot-imaps-implicit-tls12-only-valid": "TLSv1.2",
    }
    left = docker_client().api.containers(all=True, filters={"label": f"pytest-mailtls.pid={proc.pid}"})
    assert left == [], "the script's container is gone when it ends"
