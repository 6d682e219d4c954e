"""Nothing outlives a run: Ctrl-C, SIGTERM, a second Ctrl-C during teardown, or SIGKILL of `mailtls up`, of pytest
and of one xdist worker. Containers, the run's network and its registered temp dirs are gone afterwards: at
once, or (after SIGKILL, which no process survives to act on) once the next run's reaper has run.

Processes are started with SIGINT restored to its default: a background job of a non-interactive shell
starts with SIGINT ignored, and a Python started that way would ignore Ctrl-C (FIELD-NOTES).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.runtime import docker_client, engine_problem

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(engine_problem() is not None, reason=f"no Docker engine: {engine_problem()}"),
]

QUICK_POSTFIX = ["--servers", "postfix", "--select", "quick"]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _spawn(args: list[str], **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_default_sigint, **kwargs
    )  # type: ignore[call-overload]


def _up(manifest: Path, *selection: str, publish: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ, "MAILTLS_PUBLISH_PORTS": "1"} if publish else None
    return _spawn([sys.executable, "-m", "pytest_mailtls", "up", *selection, "--manifest", str(manifest)], env=env)


def _containers_of(pid: int) -> list[str]:
    # The low-level list: the high-level one inspects each container and fails on one removed meanwhile.
    found = docker_client().api.containers(all=True, filters={"label": f"pytest-mailtls.pid={pid}"})
    return [(c.get("Names") or [c["Id"]])[0].lstrip("/") for c in found]


def _has_network(pid: int) -> bool:
    """Whether ``pid`` registered the network its containers need: sealed containers (a local engine) have none."""
    return bool(_networks_of(pid)) is not runtime.sealed_routing()


def _networks_of(pid: int) -> list[str]:
    return [n["Name"] for n in docker_client().api.networks(filters={"label": f"pytest-mailtls.pid={pid}"})]


def _dirs_of(pid: int) -> list[Path]:
    """The temp dirs ``pid`` registered (the runtime's per-user index names them with their owner)."""
    index = runtime._index_dir(create=False)
    found = []
    for item in index.glob("*.json") if index else []:
        try:
            record = json.loads(item.read_text())
        except (OSError, ValueError):
            continue
        if record.get("pid") == str(pid):
            found.append(Path(record["path"]))
    return found


def _wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def _left(pid: int, dirs: list[Path]) -> dict[str, list[str]]:
    return {
        "containers": _containers_of(pid),
        "networks": _networks_of(pid),
        "dirs": [str(d) for d in dirs if d.exists()],
    }


NOTHING: dict[str, list[str]] = {"containers": [], "networks": [], "dirs": []}


def _settled(pid: int, dirs: list[Path], timeout: float = 40) -> dict[str, list[str]]:
    """What is left of ``pid`` once the janitor it handed its containers to is done (``timeout`` at most)."""
    deadline = time.monotonic() + timeout
    while (left := _left(pid, dirs)) != NOTHING and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_signal_while_serving_removes_everything(tmp_path: Path, signum: signal.Signals) -> None:
    manifest = tmp_path / "manifest.json"
    proc = _up(manifest, *QUICK_POSTFIX)
    try:
        _wait_for(manifest.exists, 120, "the manifest (all cells ready)")
        dirs = _dirs_of(proc.pid)
        assert _containers_of(proc.pid) and _has_network(proc.pid) and dirs, "a serving `mailtls up` registers all"
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (130, -signum, 128 + signum), (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    assert _left(proc.pid, dirs) == NOTHING  # removed before the process ended, no janitor needed


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_start_interrupted_after_one_second_exits_within_two_and_leaves_nothing(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """The full default grid (Postfix, Dovecot and James: 186 cells) takes 8-20 s to start here; interrupted
    after 1 s, `mailtls up` is gone within 2 s and leaves nothing."""
    spawned = time.monotonic()
    proc = _up(tmp_path / "manifest.json")
    try:
        # 1 s into the start, or once the grid exists if Python's imports take longer on a loaded machine
        # (a Ctrl-C while the interpreter imports the package is Python's to report, not ours).
        _wait_for(lambda: _dirs_of(proc.pid), 60, "the grid's work dir")
        time.sleep(max(0.0, 1.0 - (time.monotonic() - spawned)))
        dirs = _dirs_of(proc.pid)
        sent = time.monotonic()
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 2.0, f"exited {took:.2f} s after the signal"
    assert proc.returncode in (130, -signum, 128 + signum), (proc.returncode, err[-2000:])
    assert "Traceback" not in err, err[-3000:]
    assert not (tmp_path / "manifest.json").exists()
    assert _settled(proc.pid, [*dirs, *_dirs_of(proc.pid)]) == NOTHING


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_start_interrupted_while_its_containers_start_exits_at_once(tmp_path: Path, signum: signal.Signals) -> None:
    """Interrupted once its first container exists (the engine removes a published port in about 50 ms, one
    after another: 9 s for the full grid), `mailtls up` still exits within 2 s; its detached janitor removes
    the containers and the network, and the next run's reaper anything a start thread wrote late."""
    proc = _up(tmp_path / "manifest.json")
    try:
        _wait_for(lambda: _containers_of(proc.pid), 120, "the first container")
        dirs = _dirs_of(proc.pid)
        sent = time.monotonic()
        proc.send_signal(signum)
        _out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert took < 2.0, f"exited {took:.2f} s after the signal"
    assert "Traceback" not in err, err[-3000:]
    left = _settled(proc.pid, dirs)
    assert left["containers"] == [] and left["networks"] == [], left
    runtime._reap_dirs(lambda line: None)  # what the next run does first
    assert _left(proc.pid, dirs) == NOTHING


def test_a_second_ctrl_c_during_teardown_still_removes_everything(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    # Published ports make the teardown last: sealed containers go in a fraction of a second.
    proc = _up(manifest, "--servers", "postfix,dovecot", "--select", "quick", publish=True)
    try:
        _wait_for(manifest.exists, 120, "the manifest (all cells ready)")
        dirs = _dirs_of(proc.pid)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)  # teardown under way: removing two containers with 31 published ports takes seconds
        proc.send_signal(signal.SIGINT)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "still removing servers" in err, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert _left(proc.pid, dirs) == NOTHING


def test_sigkill_of_mailtls_up_is_cleaned_by_the_next_run(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    proc = _up(manifest, *QUICK_POSTFIX)
    try:
        _wait_for(manifest.exists, 120, "the manifest (all cells ready)")
        dirs = _dirs_of(proc.pid)
        keys = [p for d in dirs for p in d.rglob("key.pem")]
        assert keys and all(p.stat().st_mode & 0o777 == 0o600 for p in keys), "keys are the owner's alone"
        assert _containers_of(proc.pid) and _has_network(proc.pid)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    # (Under xdist another worker's run may reap first: either way, a next run removed everything.)
    runtime.reap_orphans()  # what the next run (or `mailtls reap`) does first
    assert _left(proc.pid, dirs) == NOTHING


INNER_TEST = """
import os, signal, time
import pytest

@pytest.mark.mailtls(service="submission", policy="intermediate", cert="valid", mode="starttls")
def test_serves(mailtls_server, tmp_path_factory):
    assert mailtls_server.port
    {body}
"""


def _pytest(folder: Path, body: str, *extra: str) -> subprocess.Popen[str]:
    (folder / "test_inner.py").write_text(textwrap.dedent(INNER_TEST.format(body=body)))
    (folder / "conftest.py").write_text("")
    return _spawn(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py",
         "--mailtls-servers", "postfix", "--mailtls-select", "quick", "--basetemp", str(folder / "base"), *extra],
        cwd=folder,
    )  # fmt: skip


def test_sigkill_of_pytest_is_cleaned_by_the_next_run(tmp_path: Path) -> None:
    flag = tmp_path / "serving"
    proc = _pytest(tmp_path, f"open({str(flag)!r}, 'w').close(); time.sleep(300)")
    try:
        _wait_for(flag.exists, 120, "the inner test to run with its server up")
        dirs = _dirs_of(proc.pid)
        assert len(dirs) == 2, dirs  # the grid's work dir and the session PKI, in pytest's basetemp
        assert _containers_of(proc.pid) and _has_network(proc.pid)
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    runtime.reap_orphans()
    assert _left(proc.pid, dirs) == NOTHING


def test_a_killed_xdist_worker_is_cleaned_before_the_session_ends(tmp_path: Path) -> None:
    pids = tmp_path / "worker.pid"
    body = f"open({str(pids)!r}, 'w').write(str(os.getpid())); time.sleep(0.5); os.kill(os.getpid(), signal.SIGKILL)"
    proc = _pytest(tmp_path, body, "-n", "1", "--max-worker-restart", "0")
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    worker = int(pids.read_text())
    assert "crashed" in out + err or "node down" in (out + err).lower(), (out + err)[-2000:]
    # The controller removed the dead worker's containers, network and dirs before it ended.
    left = _settled(worker, [], timeout=30)  # the controller hands nothing to a janitor: this is immediate
    assert left == NOTHING, (left, (out + err)[-2000:])
    assert [d for d in (tmp_path / "base").rglob("mailtls-*") if d.is_dir()] == []


def test_ctrl_c_twice_in_pytest_still_removes_everything(tmp_path: Path) -> None:
    flag = tmp_path / "serving"
    proc = _pytest(tmp_path, f"open({str(flag)!r}, 'w').close(); time.sleep(300)")
    try:
        _wait_for(flag.exists, 120, "the inner test to run with its server up")
        dirs = _dirs_of(proc.pid)
        assert _containers_of(proc.pid) and _has_network(proc.pid) and len(dirs) == 2
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    # pytest's "interrupted", or (the second Ctrl-C landing in pytest's own report code) death by SIGINT:
    # either way the runtime's exit path removed what the teardown had not.
    assert proc.returncode in (2, -signal.SIGINT), (out + err)[-2000:]
    assert _containers_of(proc.pid) == [] and _networks_of(proc.pid) == []
    # pytest keeps its basetemp after an ordinary end; the dirs are no longer registered to anyone.
    assert all(not (d / runtime.DIR_MARKER).exists() for d in dirs)
    assert _dirs_of(proc.pid) == []


def test_sigterm_of_pytest_during_a_start_exits_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    """pytest has no SIGTERM handler of its own: the runtime's hands every container to the janitor, removes
    what it can within 1.5 s, deletes the temp dirs and lets the process die of the signal."""
    (tmp_path / "test_inner.py").write_text("def test_every_cell(mailtls_server):\n    pass\n")
    proc = _spawn(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py",
         "--mailtls-servers", "postfix,dovecot,james", "--mailtls-select", "quick",
         "--basetemp", str(tmp_path / "base")],
        cwd=tmp_path,
    )  # fmt: skip
    try:
        _wait_for(lambda: _containers_of(proc.pid), 120, "the first container")
        dirs = _dirs_of(proc.pid)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM
    assert took < 2.5, f"exited {took:.2f} s after SIGTERM"
    left = _settled(proc.pid, [])
    assert left == NOTHING, left
    # pytest's basetemp follows pytest's retention, as after any end the process lives to handle: the
    # grid's dirs there are no longer registered to anyone (no marker, no index entry).
    # Dirs outside it (James's build context, when the start was checking its image) are the reaper's.
    ours = [d for d in dirs if d.is_relative_to(tmp_path / "base")]
    assert len(ours) == 2 and all(not (d / runtime.DIR_MARKER).exists() for d in ours), dirs
    runtime._reap_dirs(lambda line: None)
    assert [d for d in _dirs_of(proc.pid) if d.exists()] == []
