"""Under pytest-xdist the workers share one grid: one container per server kind, whatever ``-n``.

Each scenario runs a real inner pytest with ``-n`` workers against real Postfix and Dovecot containers (and
embedded cells served by each worker), and checks from outside what the run did: which containers served
which test, which worker ran it, what each test received, and what is left afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_mailtls.runtime import docker_client, engine_problem, process_alive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(engine_problem() is not None, reason=f"no Docker engine: {engine_problem()}"),
]

# Three tests on the same three SMTP cells, plus IMAP and embedded cells: with -n 3 the workers use the
# same cells at the same time, so per-test capture is put to the test.
INNER = """
import json, os, smtplib, ssl, time, uuid
from email.message import EmailMessage

import pytest

RECORD = {record!r}


def _note(request, endpoint, **more):
    shared = getattr(request.config, "workerinput", {{}}).get("mailtls_shared") or {{}}
    daemon = None
    if shared:
        try:
            daemon = int(open(os.path.join(shared["dir"], "daemon.pid")).read())
        except OSError:
            pass
    line = {{"test": request.node.nodeid, "worker": os.getpid(), "cell": endpoint.id, "server": endpoint.server,
             "container": endpoint.extra.get("container"), "daemon": daemon, "dir": shared.get("dir"), **more}}
    with open(RECORD, "a") as fh:
        fh.write(json.dumps(line) + "\\n")


def _send(endpoint, subject):
    ctx = ssl.create_default_context(cafile=endpoint.ca_file)
    with smtplib.SMTP(endpoint.host, endpoint.port, timeout=20) as smtp:
        smtp.starttls(context=ctx)
        smtp.login(endpoint.username, endpoint.password)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = endpoint.address, endpoint.address, subject
        message.set_content("hello")
        smtp.send_message(message)


@pytest.mark.parametrize("round_", range(3))
@pytest.mark.mailtls(server=["postfix", "embedded"], service="submission", mode="starttls", cert="valid",
                     auth="default", policy=["modern", "intermediate", "tls12-only"])
def test_each_test_sees_its_own_mail_and_sessions(mailtls_server, request, round_):
    subject = f"{{request.node.nodeid}} {{uuid.uuid4()}}"
    _send(mailtls_server, subject)
    time.sleep(0.3)  # stay on the cell a while: a neighbour's test on it would show up now
    got = [m["Subject"] for m in mailtls_server.messages(count=1)]
    sessions = mailtls_server.sessions(wait=2)
    _note(request, mailtls_server, subjects=got, sessions=len(sessions))
    assert got == [subject]
    assert len(sessions) == 1 and sessions[0].starttls


@pytest.mark.mailtls(server="dovecot", service="imap", mode="starttls", cert="valid", auth="default",
                     policy="intermediate")
def test_imap(mailtls_server, request):
    _note(request, mailtls_server)
    {imap_body}
"""


def _run(folder: Path, *extra: str, imap_body: str = "pass", timeout: float = 300) -> tuple[int, str, list[dict]]:
    record = folder / "record.jsonl"
    (folder / "test_inner.py").write_text(textwrap.dedent(INNER).format(record=str(record), imap_body=imap_body))
    (folder / "conftest.py").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py",
         "--mailtls-servers", "postfix,dovecot,embedded", "--basetemp", str(folder / "base"), *extra],
        cwd=folder, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    lines = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, lines


def _containers_of(pid: int) -> list[str]:
    return [c["Id"] for c in docker_client().api.containers(all=True, filters={"label": f"pytest-mailtls.pid={pid}"})]


def _settled(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if not value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_workers_share_one_container_per_server_and_keep_capture_per_test(tmp_path: Path) -> None:
    code, out, lines = _run(tmp_path, "-n", "3")
    assert code == 0, out[-4000:]
    assert len(lines) == 3 * 6 + 1, lines  # every test ran and wrote its line
    workers = {line["worker"] for line in lines}
    assert len(workers) >= 2, "the run used more than one worker"
    by_server: dict[str, set[str]] = {}
    for line in lines:
        if line["server"] in ("postfix", "dovecot"):
            by_server.setdefault(line["server"], set()).add(line["container"])
    # One container per server kind for the whole run, used by every worker.
    assert {k: len(v) for k, v in by_server.items()} == {"postfix": 1, "dovecot": 1}, by_server
    postfix_workers = {line["worker"] for line in lines if line["server"] == "postfix"}
    assert len(postfix_workers) >= 2, "several workers used the one Postfix container"
    # Each test saw exactly its own message and its own connection (asserted inside, recorded here).
    assert all(line["sessions"] == 1 for line in lines if "sessions" in line)
    daemon = {line["daemon"] for line in lines} - {None}
    assert len(daemon) == 1, daemon
    [pid] = daemon
    # Removed when the run ended: the daemon, its containers, the run's directory.
    assert not process_alive(pid)
    assert _containers_of(pid) == []
    [directory] = {line["dir"] for line in lines}
    assert not Path(directory).exists()


def test_per_worker_grids_remain_available(tmp_path: Path) -> None:
    code, out, lines = _run(tmp_path, "-n", "2", "--mailtls-xdist-grid", "per-worker", "-k", "imap")
    assert code == 0, out[-4000:]
    assert all(line["daemon"] is None for line in lines)


def test_a_dead_worker_leaves_the_grid_to_the_others_and_nothing_behind(tmp_path: Path) -> None:
    # The IMAP test kills its worker mid-run; xdist replaces it and the others go on with the same grid.
    body = "import signal; os.kill(os.getpid(), signal.SIGKILL)"
    code, out, lines = _run(tmp_path, "-n", "2", imap_body=body)
    assert "crashed" in out or "node down" in out.lower(), out[-3000:]
    assert code == 1, out[-3000:]  # the crash is one failure; every other test passed
    assert "18 passed" in out, out[-3000:]
    [pid] = {line["daemon"] for line in lines} - {None}
    assert not process_alive(pid) and _containers_of(pid) == []


def test_a_killed_controller_takes_the_grid_with_it(tmp_path: Path) -> None:
    flag = tmp_path / "serving"
    record = tmp_path / "record.jsonl"
    body = f"open({str(flag)!r}, 'w').close(); time.sleep(300)"
    (tmp_path / "test_inner.py").write_text(textwrap.dedent(INNER).format(record=str(record), imap_body=body))
    (tmp_path / "conftest.py").write_text("")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_inner.py", "-k", "imap",
         "--mailtls-servers", "postfix,dovecot", "-n", "2", "--basetemp", str(tmp_path / "base")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not flag.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert flag.exists(), "the inner test ran with the shared grid up"
        [line] = [json.loads(x) for x in record.read_text().splitlines()]
        pid = line["daemon"]
        assert _containers_of(pid), "the daemon serves"
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The daemon sees its controller gone (within a quarter second) and removes its containers.
    assert _settled(lambda: process_alive(pid), 30) is False
    assert _containers_of(pid) == []
    assert not Path(line["dir"]).exists(), "the daemon removed the run's directory (keys included)"


GUESS_TEST = """
import json, os

import pytest


def _ppid(pid):
    return int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])


@pytest.mark.mailtls(server="postfix", service="submission", cert="valid", policy={policies!r})
def test_serves(mailtls_server, request):
    shared = request.config.workerinput["mailtls_shared"]
    daemon = int(open(os.path.join(shared["dir"], "daemon.pid")).read())
    with open({record!r}, "a") as fh:
        fh.write(json.dumps({{"daemon": daemon, "parent": _ppid(daemon), "controller": os.getppid()}}) + "\\n")
"""


def test_the_next_run_starts_the_last_runs_grid_before_its_workers_and_restarts_when_it_needs_more(
    tmp_path: Path,
) -> None:
    """The controller starts the grid the previous run needed (pytest's cache) before any worker has booted;
    a run that needs a cell outside that guess stops the guessed grid and starts the right one. (A cold
    run's daemon is the controller's too: its head start.)"""
    record = tmp_path / "record.jsonl"

    def run(policies: list[str]) -> list[dict]:  # type: ignore[type-arg]
        record.unlink(missing_ok=True)
        (tmp_path / "test_guess.py").write_text(
            textwrap.dedent(GUESS_TEST).format(policies=policies, record=str(record))
        )
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "test_guess.py", "--mailtls-servers", "postfix",
             "-n", "2", "--basetemp", str(tmp_path / "base")],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0 and " passed" in proc.stdout, (proc.stdout + proc.stderr)[-3000:]
        return [json.loads(line) for line in record.read_text().splitlines()]

    cold = run(["modern"])  # no guess: the controller's head start serves (test_xdist_head_start.py)
    assert {line["parent"] == line["controller"] for line in cold} == {True}, "cold: the head start"
    warm = run(["modern"])
    assert {line["parent"] == line["controller"] for line in warm} == {True}, "warm: the controller did"
    more = run(["modern", "intermediate"])  # a cell the guess lacks: restarted by a worker, every test passes
    assert {line["parent"] == line["controller"] for line in more} == {False}, more
    assert len({line["daemon"] for line in more}) == 1
