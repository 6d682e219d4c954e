"""No container survives Ctrl-C or SIGTERM, whether `mailtls up` is serving or still starting."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_mailtls.runtime import docker_client, engine_problem

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(engine_problem() is not None, reason=f"no Docker engine: {engine_problem()}"),
]


def _containers_of(pid: int) -> list[str]:
    found = docker_client().containers.list(all=True, filters={"label": f"pytest-mailtls.pid={pid}"})
    return [c.name for c in found]


def _up(manifest: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest_mailtls", "up", "--servers", "postfix", "--select", "quick",
         "--manifest", str(manifest)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_while_serving_removes_everything(tmp_path: Path, signum: signal.Signals) -> None:
    manifest = tmp_path / "manifest.json"
    proc = _up(manifest)
    try:
        _wait_for(manifest.exists, 120, "the manifest (all cells ready)")
        assert _containers_of(proc.pid), "a serving `mailtls up` runs a container"
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, -signum, 128 + signum), (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    assert _containers_of(proc.pid) == []


def test_ctrl_c_while_starting_removes_everything(tmp_path: Path) -> None:
    proc = _up(tmp_path / "manifest.json")
    try:
        # Interrupt as soon as the container exists, before its cells are ready.
        _wait_for(lambda: bool(_containers_of(proc.pid)), 120, "the container to be created")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "manifest.json").exists()
    assert _containers_of(proc.pid) == []
