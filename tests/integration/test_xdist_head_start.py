"""The head start of a cold pytest-xdist run: the controller starts the grid daemon in *prepare* mode before
any worker has booted (no pytest cache to guess the cells from); the daemon makes the session's keys and
waits; the first worker's request goes to it, no second daemon starts.

The first tests drive :class:`SharedRun` and a real daemon process directly on embedded cells (no engine
needed); the others run a real inner ``pytest -n 2`` on real Postfix containers and look from outside.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_mailtls import shared as shared_module
from pytest_mailtls.runtime import docker_client, engine_problem, process_alive
from pytest_mailtls.selection import resolve
from pytest_mailtls.shared import SharedRun, start_shared_dir, stop_shared_dir

pytestmark = [pytest.mark.integration]

needs_engine = pytest.mark.skipif(engine_problem() is not None, reason=f"no Docker engine: {engine_problem()}")

EMBEDDED = {"matrix": None, "select": None, "servers": ["embedded"], "ready_timeout": 30.0}


def _until(check, timeout: float = 20.0):  # type: ignore[no-untyped-def]
    """``check()`` once it is true, or its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def _pid(directory: Path, name: str) -> int | None:
    try:
        return int((directory / name).read_text())
    except (OSError, ValueError):
        return None


def _log(directory: Path) -> str:
    try:
        return (directory / "daemon.log").read_text()
    except OSError:
        return ""


@pytest.fixture
def run_dir():  # type: ignore[no-untyped-def]
    """A run's directory as the controller makes it (private, registered with the reaper)."""
    directory = start_shared_dir()
    yield directory
    for name in ("daemon.pid", "prepared.pid"):  # whatever a failed test left running
        pid = _pid(directory, name)
        if pid is not None and process_alive(pid):
            os.kill(pid, signal.SIGKILL)
    stop_shared_dir(directory)


def _embedded_cells(n: int = 2) -> list[str]:
    return [c.id for c in resolve(servers="embedded", where={"policy": "modern", "cert": "valid"}).cells[:n]]


def test_a_prepared_daemon_takes_the_first_request_and_no_second_daemon_starts(run_dir: Path) -> None:
    shared = SharedRun(run_dir, os.getpid())
    assert shared.prepare(EMBEDDED)
    prepared = _pid(run_dir, "prepared.pid")
    assert prepared is not None and _pid(run_dir, "daemon.pid") == prepared
    assert not shared.prepare(EMBEDDED), "one head start per run"
    assert _until(lambda: "waiting for the request" in _log(run_dir)), _log(run_dir)
    cells = _embedded_cells()
    grid = shared.attach(cells, **EMBEDDED)
    assert _pid(run_dir, "daemon.pid") == prepared, "the prepared daemon serves: no second daemon"
    assert sorted(e.id for e in grid.endpoints) == sorted(cells)
    # The CA the daemon's servers present is the one every worker of the run opens.
    ca = shared.pki().ca_file.read_bytes()
    assert {Path(e.ca_file).read_bytes() for e in grid.endpoints} == {ca}
    stop_shared_dir(run_dir)
    assert not process_alive(prepared) and not run_dir.exists()


def test_a_request_while_the_daemon_still_makes_keys_is_served(run_dir: Path) -> None:
    shared = SharedRun(run_dir, os.getpid())
    settings = {**EMBEDDED, "servers": ["postfix", "embedded"]} if engine_problem() is None else EMBEDDED
    assert shared.prepare(settings)
    prepared = _pid(run_dir, "prepared.pid")
    cells = _embedded_cells(1)
    shared.request(cells, **settings)  # at once: the daemon is still booting or making keys
    shared._wait(30)
    assert _pid(run_dir, "daemon.pid") == prepared
    stop_shared_dir(run_dir)
    assert not process_alive(prepared)


def test_a_dead_prepared_daemon_is_replaced_by_the_request(run_dir: Path) -> None:
    shared = SharedRun(run_dir, os.getpid())
    assert shared.prepare(EMBEDDED)
    prepared = _pid(run_dir, "prepared.pid")
    assert prepared is not None
    os.kill(prepared, signal.SIGKILL)
    assert _until(lambda: not process_alive(prepared))
    grid = shared.attach(_embedded_cells(1), **EMBEDDED)
    daemon = _pid(run_dir, "daemon.pid")
    assert daemon is not None and daemon != prepared and grid.endpoints
    stop_shared_dir(run_dir)
    assert not process_alive(daemon) and not run_dir.exists()


def test_a_run_without_container_tests_sends_the_prepared_daemon_away(run_dir: Path) -> None:
    shared = SharedRun(run_dir, os.getpid())
    assert shared.prepare(EMBEDDED)
    prepared = _pid(run_dir, "prepared.pid")
    assert prepared is not None
    shared.unneeded()
    assert _until(lambda: not process_alive(prepared), 10), _log(run_dir)
    assert "head start: unneeded" in _log(run_dir)
    # A request after all (no worker does that, every worker collects the same tests): a new daemon serves.
    grid = shared.attach(_embedded_cells(1), **EMBEDDED)
    assert _pid(run_dir, "daemon.pid") != prepared and grid.endpoints
    stop_shared_dir(run_dir)
    assert not run_dir.exists()


def test_a_prepared_daemon_whose_controller_died_removes_the_run(run_dir: Path) -> None:
    controller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        shared = SharedRun(run_dir, controller.pid)
        assert shared.prepare(EMBEDDED)
        prepared = _pid(run_dir, "prepared.pid")
        assert prepared is not None
        assert _until(lambda: "waiting for the request" in _log(run_dir)), _log(run_dir)
    finally:
        controller.kill()
        controller.wait()
    assert _until(lambda: not process_alive(prepared), 10)
    assert not run_dir.exists(), "the orphaned daemon removed the run's directory (keys included)"


def test_a_signal_while_keys_are_made_stops_the_daemon_at_the_next_key(run_dir: Path) -> None:
    settings = {**EMBEDDED, "servers": ["postfix"]} if engine_problem() is None else EMBEDDED
    shared = SharedRun(run_dir, os.getpid())
    assert shared.prepare(settings)
    prepared = _pid(run_dir, "prepared.pid")
    assert prepared is not None
    assert _until(lambda: "head start:" in _log(run_dir)), _log(run_dir)
    started = time.monotonic()
    stop_shared_dir(run_dir)  # SIGTERM, waits until it is gone
    assert time.monotonic() - started < 10  # one key at most (a loaded machine)
    assert not process_alive(prepared) and not run_dir.exists()


def test_prepare_mode_takes_only_what_names_it() -> None:
    """The daemon's usage line names the mode (the plugin starts it so)."""
    assert shared_module.main(["--prepare"]) == 2


# --------------------------------------------------------------------------- real -n 2 runs on Postfix

INNER = """
import json, os, smtplib, ssl

import pytest

RECORD = {record!r}


def _ppid(pid):
    return int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])


@pytest.mark.mailtls(server={server!r}, service="submission", mode="starttls", cert="valid", auth="default",
                     policy=["modern", "intermediate"])
@pytest.mark.parametrize("round_", range(2))
def test_serves(mailtls_server, mailtls_ca, request, round_):
    shared = request.config.workerinput["mailtls_shared"]
    directory = shared["dir"]
    names = sorted(os.listdir(directory))
    daemon = prepared = None
    if "daemon.pid" in names:
        daemon = int(open(os.path.join(directory, "daemon.pid")).read())
    if "prepared.pid" in names:
        prepared = int(open(os.path.join(directory, "prepared.pid")).read())
    # A real handshake that verifies the server with the CA this worker trusts.
    with smtplib.SMTP(mailtls_server.host, mailtls_server.port, timeout=20) as smtp:
        smtp.starttls(context=mailtls_ca.client_context())
    line = {{"worker": os.getpid(), "controller": os.getppid(), "dir": directory, "daemon": daemon,
             "prepared": prepared, "parent": _ppid(daemon) if daemon else None, "server": mailtls_server.server,
             "container": mailtls_server.extra.get("container"), "ca": open(mailtls_ca.ca_file).read(),
             "ca_served": open(mailtls_server.ca_file).read()}}
    with open(RECORD, "a") as fh:
        fh.write(json.dumps(line) + "\\n")
"""


def _write(folder: Path, server: str) -> Path:
    record = folder / "record.jsonl"
    (folder / "test_inner.py").write_text(textwrap.dedent(INNER).format(record=str(record), server=server))
    (folder / "conftest.py").write_text("")
    return record


def _inner_command(tmp_path: Path, servers: str) -> list[str]:
    """The inner session: ``test_inner.py`` under ``-n 2`` with ``--mailtls-servers servers``, no pytest cache."""
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py",
            "--mailtls-servers", servers, "-n", "2", "--basetemp", str(tmp_path / "base")]  # fmt: skip


def _run_inner(tmp_path: Path, servers: str, *, cells: str) -> list[dict[str, Any]]:
    """Run the inner session on ``cells``' server to completion; its four tests pass; what they recorded."""
    record = _write(tmp_path, cells)
    proc = subprocess.run(_inner_command(tmp_path, servers), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "4 passed" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
    return [json.loads(x) for x in record.read_text().splitlines()]


def _containers_of(pid: int) -> list[str]:
    return [c["Id"] for c in docker_client().api.containers(all=True, filters={"label": f"pytest-mailtls.pid={pid}"})]


@needs_engine
def test_a_cold_run_is_served_by_the_head_start_and_leaves_nothing(tmp_path: Path) -> None:
    lines = _run_inner(tmp_path, "postfix", cells="postfix")
    assert len({line["worker"] for line in lines}) == 2, "both workers ran tests"
    [daemon] = {line["daemon"] for line in lines}
    assert {line["prepared"] for line in lines} == {daemon}, "the head start's daemon served: no second one"
    assert {line["parent"] for line in lines} == {lines[0]["controller"]}, "the controller started it"
    assert len({line["container"] for line in lines}) == 1, "one Postfix container for the run"
    assert len({line["ca"] for line in lines} | {line["ca_served"] for line in lines}) == 1, "one CA"
    assert not process_alive(daemon) and _containers_of(daemon) == []
    assert not Path(lines[0]["dir"]).exists()


@needs_engine
def test_an_embedded_only_session_starts_no_daemon(tmp_path: Path) -> None:
    lines = _run_inner(tmp_path, "embedded", cells="embedded")
    assert {(line["daemon"], line["prepared"]) for line in lines} == {(None, None)}


@needs_engine
def test_a_session_whose_tests_need_no_container_sends_the_head_start_away(tmp_path: Path) -> None:
    """Postfix is selected (the controller starts a head start) but the tests take embedded cells only."""
    lines = _run_inner(tmp_path, "postfix,embedded", cells="embedded")
    [prepared] = {line["prepared"] for line in lines}
    assert prepared is not None
    assert {line["daemon"] for line in lines} == {prepared}, "no daemon besides the head start"
    assert not process_alive(prepared) and _containers_of(prepared) == []
    assert not Path(lines[0]["dir"]).exists()


def _prepared_daemons(controller: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pytest_mailtls.shared" in argv and b"--prepare" in argv and str(controller).encode() in argv:
            found.append(int(entry.name))
    return found


@needs_engine
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_controller_stopped_during_the_head_start_leaves_nothing(tmp_path: Path, sig: signal.Signals) -> None:
    _write(tmp_path, "postfix")
    # Workers that take long to collect: the head start is all there is when the controller goes.
    (tmp_path / "conftest.py").write_text("import time\ntime.sleep(30)\n")
    proc = subprocess.Popen(
        _inner_command(tmp_path, "postfix"),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        daemons = _until(lambda: _prepared_daemons(proc.pid), 60)
        assert daemons, "the controller started a head start"
        [daemon] = daemons
        argv = Path(f"/proc/{daemon}/cmdline").read_bytes().split(b"\0")
        directory = Path(argv[argv.index(b"--prepare") + 1].decode())
        assert _until(lambda: "head start:" in _log(directory), 30), _log(directory)
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, signal.SIGKILL)  # the controller and its workers; the daemon has its own session
        else:
            proc.send_signal(sig)  # as a Ctrl-C or a `kill` reaches the controller
        try:
            proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):  # workers a dead controller left sleeping in conftest
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.communicate()
    assert _until(lambda: not process_alive(daemon), 30), f"daemon {daemon} still runs"
    assert _containers_of(daemon) == []
    assert _until(lambda: not directory.exists(), 10), f"{directory} is left"
