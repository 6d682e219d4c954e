"""The ``mailtls`` command, in-process through ``main(argv)`` and as real processes."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pytest_mailtls
from pytest_mailtls.cli import main
from pytest_mailtls.matrix import filter_cells, load_matrix

HAS_EMBEDDED = importlib.util.find_spec("pytest_mailtls.backends.embedded") is not None
needs_embedded = pytest.mark.skipif(
    not HAS_EMBEDDED, reason="pytest_mailtls/backends/embedded.py does not exist yet: nothing to serve with"
)


def _ids(stdout: str) -> list[str]:
    """Cell ids from the `cells` table (first column, after the two header lines)."""
    rows = stdout.split("\n\n")[0].splitlines()[2:]
    return [row.split()[0] for row in rows]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- cells ------------------------------------------------------------------------------------


def test_cells_lists_the_selection(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["cells", "--servers", "embedded", "--select", "quick"], capsys)
    expected = [c.id for c in load_matrix().cells(servers=["embedded"], selection="quick")]
    assert code == 0
    assert err == ""
    assert out.splitlines()[0].split() == ["CELL", "SERVICE", "MODE", "VERSIONS", "CERT", "AUTH"]
    assert _ids(out) == expected
    assert out.rstrip().endswith(f"{len(expected)} cells")
    assert "TLSv1.2..TLSv1.3" in out


def test_cells_default_selection_is_full(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["cells", "--servers", "embedded"], capsys)
    assert code == 0
    assert _ids(out) == [c.id for c in load_matrix().cells(servers=["embedded"])]


def test_cells_where_narrows_with_lists_and_globs(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cells", "--servers", "embedded", "--where", "service=smtps", "--where", "cert=expired,wrong-*"]
    code, out, _ = _run(argv, capsys)
    cells = load_matrix().cells(servers=["embedded"])
    expected = [c.id for c in filter_cells(cells, {"service": "smtps", "cert": ["expired", "wrong-*"]})]
    assert code == 0
    assert (
        _ids(out)
        == expected
        == [
            "embedded-smtps-implicit-intermediate-expired",
            "embedded-smtps-implicit-intermediate-wrong-host",
            "embedded-smtps-implicit-intermediate-wrong-eku",
        ]
    )


def test_cells_with_a_custom_matrix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    matrix = tmp_path / "m.yaml"
    matrix.write_text(
        "version: 1\npolicies:\n  only: {min_version: TLSv1.3}\n"
        "grid:\n  - services: [smtps]\n    modes: [implicit]\n    policies: [only]\n"
    )
    code, out, _ = _run(["cells", "--servers", "embedded", "--matrix", str(matrix)], capsys)
    assert code == 0
    assert _ids(out) == ["embedded-smtps-implicit-only-valid"]


# --- errors: one line on stderr, non-zero exit -------------------------------------------------


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mailtls: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("argv", "code", "fragments"),
    [
        (["--servers", "exim"], 1, ["unknown server 'exim'", "postfix, dovecot, james, courier, embedded"]),
        (["--where", "policy"], 1, ["--where 'policy'", "KEY=VALUE"]),
        (["--where", "policy="], 1, ["--where 'policy='", "KEY=VALUE"]),
        (["--where", "colour=red"], 2, ["cell filter: colour: unknown key", "server, service"]),
        (["--where", "policy=no-such-policy"], 1, ["matches no cell", "mailtls cells"]),
        (["--select", "quik"], 2, ["unknown selection 'quik'", "quick", "full"]),
    ],
    ids=["unknown server", "where without =", "where without value", "where unknown key", "no cell", "selection"],
)
def test_cells_errors(capsys: pytest.CaptureFixture[str], argv: list[str], code: int, fragments: list[str]) -> None:
    argv = ["cells", *argv] if "--servers" in argv else ["cells", "--servers", "embedded", *argv]
    got, out, err = _run(argv, capsys)
    line = _one_error_line(err)
    assert got == code
    assert out == ""
    for fragment in fragments:
        assert fragment in line


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("policies: [\n", ["malformed YAML at line 2, column 1"]),
        ("version: 1\npolicies:\n  p: {min_version: TLSv9}\n", ["policies.p.min_version", "'TLSv9'", "TLSv1.3"]),
    ],
    ids=["yaml", "key"],
)
def test_cells_malformed_matrix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, fragments: list[str]
) -> None:
    matrix = tmp_path / "bad.yaml"
    matrix.write_text(text)
    code, _, err = _run(["cells", "--servers", "embedded", "--matrix", str(matrix)], capsys)
    line = _one_error_line(err)
    assert code == 2
    assert str(matrix) in line
    for fragment in fragments:
        assert fragment in line


def test_missing_matrix_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["cells", "--servers", "embedded", "--matrix", str(tmp_path / "none.yaml")], capsys)
    assert code == 2
    assert f"{tmp_path / 'none.yaml'}: no such file" in _one_error_line(err)


def test_messages_without_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.json"
    code, out, err = _run(["messages", "--manifest", str(manifest), "--cell", "embedded-smtp-plain-open"], capsys)
    line = _one_error_line(err)
    assert code == 2
    assert out == ""
    assert str(manifest) in line
    assert f"mailtls up --manifest {manifest}" in line


def test_messages_of_an_unknown_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"version": 1, "cells": []}))
    code, _, err = _run(["messages", "--manifest", str(manifest), "--cell", "embedded-smtp-plain-open"], capsys)
    assert code == 2
    assert "no cell 'embedded-smtp-plain-open'" in _one_error_line(err)


def test_usage_errors_come_from_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["frobnicate"], capsys)
    assert code == 2
    assert "invalid choice: 'frobnicate'" in err
    code, _, err = _run(["messages"], capsys)
    assert code == 2
    assert "--cell" in err


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    for command in ("cells", "up", "messages", "images", "reap"):
        assert command in out


def test_reap_reports_a_count(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pytest_mailtls import runtime

    # Only the report is under test here: reaping itself needs an engine and other people's containers.
    monkeypatch.setattr(runtime, "reap_orphans", lambda **_: ["mailtls-postfix-1", "mailtls-dovecot-2"])
    code, out, _ = _run(["reap"], capsys)
    assert code == 0
    assert out.strip() == "removed 2 orphaned item(s) (containers, networks, volumes, temp dirs)"


def test_reap_without_an_engine_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", "reap"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(DOCKER_HOST="unix:///nonexistent/docker.sock"),
    )
    assert proc.returncode == 1
    assert "no Docker engine answers at DOCKER_HOST=unix:///nonexistent/docker.sock" in _one_error_line(proc.stderr)


# --- real processes -------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def test_python_dash_m(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", "cells", "--servers", "embedded"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    count = len(load_matrix().cells(servers=["embedded"]))
    assert count >= 20
    assert proc.stdout.rstrip().endswith(f"\n{count} cells")
    assert len(_ids(proc.stdout)) == count


def test_python_dash_m_error_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", "cells", "--servers", "embedded", "--select", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    _one_error_line(proc.stderr)


def _console_script() -> str:
    script = shutil.which("mailtls")
    if script is None:
        pytest.skip("the `mailtls` console script is not installed: pip install -e .")
    return script


def test_console_script(tmp_path: Path) -> None:
    proc = subprocess.run(
        [_console_script(), "cells", "--servers", "embedded", "--select", "modern-only"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert _ids(proc.stdout) == [c.id for c in load_matrix().cells(servers=["embedded"], selection="modern-only")]


def test_cells_needs_no_docker_engine(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", "cells", "--servers", "postfix", "--select", "quick"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(DOCKER_HOST="unix:///nonexistent/docker.sock"),
    )
    assert proc.returncode == 0, proc.stderr
    assert _ids(proc.stdout) == [c.id for c in load_matrix().cells(servers=["postfix"], selection="quick")]


def test_up_without_docker_for_container_servers_says_how_to_fix(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", "up", "--servers", "postfix", "--once", "--manifest", "m.json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=_env(DOCKER_HOST="unix:///nonexistent/docker.sock"),
    )
    assert proc.returncode == 1
    line = _one_error_line(proc.stderr)
    assert "postfix needs a Docker engine" in line
    assert "DOCKER_HOST=unix:///nonexistent/docker.sock" in line
    assert "--servers embedded" in line
    assert not (tmp_path / "m.json").exists()


@needs_embedded
def test_up_once_with_the_embedded_backend(tmp_path: Path) -> None:
    manifest = tmp_path / "out" / "manifest.json"
    proc = subprocess.run(
        [_console_script(), "up", "--servers", "embedded", "--select", "quick", "--once", "--manifest", str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    expected = [c.id for c in load_matrix().cells(servers=["embedded"], selection="quick")]
    records = json.loads(manifest.read_text())["cells"]
    assert [r["id"] for r in records] == expected
    assert all(r["host"] == "127.0.0.1" and r["port"] > 0 for r in records)
    assert len({r["port"] for r in records}) == len(records)
    for cell_id in expected:
        assert re.search(rf"^{re.escape(cell_id)}\s+127\.0\.0\.1:\d+", proc.stdout, re.M), cell_id
    assert f"{len(expected)} cells ready" in proc.stderr
    assert "manifest:" in proc.stderr


CELL = "embedded-smtp-plain-open"


def _cli(*argv: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )


def _up(manifest: Path, cwd: Path, *extra: str) -> subprocess.Popen[str]:
    argv = ["up", "--servers", "embedded", "--where", f"id={CELL}", "--manifest", str(manifest), *extra]
    return subprocess.Popen(
        [sys.executable, "-m", "pytest_mailtls", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(manifest: Path, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not manifest.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "mailtls up wrote no manifest"
        time.sleep(0.05)


@needs_embedded
def test_up_once_leaves_a_manifest_that_readers_call_stale(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    proc = _cli(
        "up", "--servers", "embedded", "--where", f"id={CELL}", "--once", "--manifest", str(manifest), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    pid = json.loads(manifest.read_text())["owner"]["pid"]
    started = time.monotonic()
    proc = _cli("messages", "--manifest", str(manifest), "--cell", CELL, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert _one_error_line(proc.stderr) == (
        f"mailtls: error: manifest {manifest} was written by mailtls up (pid {pid}) which is no longer running; "
        f"start them again with `mailtls up --manifest {manifest}`"
    )
    assert time.monotonic() - started < 10


@needs_embedded
def test_a_live_manifest_serves_readers_refuses_a_second_up_and_goes_stale_when_its_owner_stops(
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "manifest.json"
    first = _up(manifest, tmp_path)
    try:
        _wait_for(manifest, first)
        text = manifest.read_text()
        record = json.loads(text)["cells"][0]
        with smtplib.SMTP(record["host"], record["port"], timeout=10) as client:
            client.sendmail("a@mailtls.test", ["b@mailtls.test"], "Subject: while it runs\r\n\r\nhi\r\n")
        proc = _cli("messages", "--manifest", str(manifest), "--cell", CELL, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "Subject while it runs" in proc.stdout

        # A second run must not take the manifest of the first one over, and starts nothing.
        second = _cli("up", "--servers", "embedded", "--manifest", str(manifest), cwd=tmp_path)
        assert second.returncode == 2
        assert _one_error_line(second.stderr) == (
            f"mailtls: error: manifest {manifest} belongs to mailtls up (pid {first.pid}, "
            f"user {json.loads(text)['owner']['user']}, host {socket.gethostname()}), which is still running: "
            f"stop it (Ctrl-C, or `kill {first.pid}`) or choose another --manifest"
        )
        assert manifest.read_text() == text
    finally:
        first.terminate()
        first.communicate(timeout=30)
    stale = f"manifest {manifest} was written by mailtls up (pid {first.pid}) which is no longer running"
    for argv in (
        ["messages", "--manifest", str(manifest), "--cell", CELL],
        ["verify", "--manifest", str(manifest)],
        ["certify", "--client", "python", "--manifest", str(manifest), "--report", str(tmp_path / "r")],
    ):
        started = time.monotonic()
        proc = _cli(*argv, cwd=tmp_path)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert stale in _one_error_line(proc.stderr), argv
        assert time.monotonic() - started < 10, argv  # no cell was tried
    assert not (tmp_path / "r").exists()
    # Its owner is gone: a new run may replace it.
    proc = _cli(
        "up", "--servers", "embedded", "--where", f"id={CELL}", "--once", "--manifest", str(manifest), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(manifest.read_text())["owner"]["pid"] != first.pid


def test_up_refuses_to_overwrite_a_file_that_is_not_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    code, _, err = _run(["up", "--servers", "embedded", "--manifest", str(notes)], capsys)
    assert code == 2
    assert "refusing to overwrite it: choose another --manifest" in _one_error_line(err)
    assert notes.read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda d: (d / "report.html").write_text("x") and d / "report.html", "is an existing file, not a folder"),
        (lambda d: (d / "f").write_text("x") and d / "f" / "sub", "is a file, not a folder"),
        (lambda d: Path("/proc/mailtls-report"), "cannot write in /proc"),
    ],
    ids=["existing file", "below a file", "unwritable place"],
)
def test_certify_checks_the_report_folder_before_the_first_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, fragment: str
) -> None:
    report = make(tmp_path)  # type: ignore[operator]
    started = time.monotonic()
    code, out, err = _run(["certify", "--client", "python", "--servers", "embedded", "--report", str(report)], capsys)
    assert code == 2 and out == ""
    line = _one_error_line(err)
    assert line.startswith(f"mailtls: error: --report {report}: ") and fragment in line
    assert "choose another --report" in line
    assert time.monotonic() - started < 5  # nothing was started


def test_verify_checks_its_json_file_before_the_first_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(["verify", "--servers", "embedded", "--json", str(tmp_path)], capsys)
    assert code == 2
    assert "is a folder, not a file" in _one_error_line(err)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r.update(port="abc"), "port 'abc' is not a port number (1-65535)"),
        (lambda r: r.pop("mode"), "missing key 'mode'"),
    ],
)
def test_messages_of_a_malformed_manifest_names_file_and_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: object, fragment: str
) -> None:
    cell = next(c for c in load_matrix().cells(servers=["embedded"]) if c.id == CELL)
    record = {
        "id": CELL, "server": "embedded", "service": "smtp", "protocol": "smtp", "mode": "plain", "policy": None,
        "cert": None, "host": "127.0.0.1", "port": 2525, "server_hostname": "localhost", "ca_file": "/x",
        "auth": cell.auth.to_json(username="u", password="p"),
    }  # fmt: skip
    change(record)  # type: ignore[operator]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"version": 1, "cells": [record]}))
    code, _, err = _run(["messages", "--manifest", str(manifest), "--cell", CELL], capsys)
    assert code == 2
    line = _one_error_line(err)
    assert line.startswith(f"mailtls: error: {manifest}: cells[0] ('{CELL}') is malformed: ") and fragment in line


@pytest.mark.parametrize(
    "name",
    ["evil-->b", "a}", "mod ern", "a\nb", "-o smtpd_tls_security_level=none"],
    ids=["xml comment end", "brace", "space", "newline", "master.cf option"],
)
@pytest.mark.parametrize("command", ["up", "verify", "certify"])
def test_hostile_matrix_names_stop_every_command_in_one_line_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, command: str
) -> None:
    matrix = tmp_path / "hostile.yaml"
    matrix.write_text(
        f"policies:\n  {json.dumps(name)}: {{}}\ngrid:\n  - services: [smtp]\n    modes: [starttls]\n"
        f"    policies: [{json.dumps(name)}]\n"
    )
    argv = [command, "--servers", "embedded", "--matrix", str(matrix)]
    argv += {"up": ["--manifest", str(tmp_path / "m.json")], "certify": ["--client", "python"]}.get(command, [])
    started = time.monotonic()
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == ""
    line = _one_error_line(err)
    assert line.startswith(f"mailtls: error: {matrix}: policies[") and "is not allowed" in line
    assert r"[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9-]+)*" in line
    assert time.monotonic() - started < 5
    assert not (tmp_path / "m.json").exists()


def test_the_command_loads_only_what_its_subcommand_needs() -> None:
    """`mailtls --help`, `--version` and `probe` do not load the grid, the manifest models (pydantic), the
    backends, the report or the stdlib mail clients: importing those cost 0.3 s of every command's start
    (docs/speed.md)."""
    heavy = ["pytest_mailtls.manifest", "pytest_mailtls.grid", "pytest_mailtls.report", "pytest_mailtls.backends.base",
             "pydantic", "docker", "jinja2",
             # the stdlib mail clients and asyncio: 40 ms that a probe never uses (pytest_mailtls.stdclients)
             "smtplib", "imaplib", "poplib", "asyncio", "email.message"]  # fmt: skip
    script = (
        "import sys, contextlib\n"
        "from pytest_mailtls import cli\n"
        "with contextlib.suppress(SystemExit):\n"
        "    cli.main(['--help'])\n"
        "import pytest_mailtls.probe\n"
        f"print([m for m in {heavy!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout[-500:]


def test_library_modules_opt_out_of_assertion_rewriting() -> None:
    """pytest rewrites the asserts of every module of a plugin's distribution at import: for this package
    about 90 modules, recompiled in every process (each xdist worker, the grid daemon) wherever bytecode is
    not cached (PYTHONDONTWRITEBYTECODE, read-only installs). Library code asserts only types, so each module
    says PYTEST_DONT_REWRITE in its docstring: -n 4 took 8.5 CPU-s rewritten, 4.6 s not (docs/speed.md)."""
    import ast

    package = Path(pytest_mailtls.__file__).parent
    missing = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if "PYTEST_DONT_REWRITE" not in (ast.get_docstring(ast.parse(path.read_text())) or "")
    ]
    assert not missing, f"add PYTEST_DONT_REWRITE to the module docstring of: {missing}"
