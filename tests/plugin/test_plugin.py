"""The pytest plugin, driven through pytester: one test per configuration path.

Inner sessions that only collect run in-process; those that depend on the
environment (DOCKER_HOST) or serve real mail run in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mailtls.backends import docker_servers
from pytest_mailtls.grid import Grid
from pytest_mailtls.manifest import write_manifest
from pytest_mailtls.matrix import filter_cells, load_matrix

HAS_EMBEDDED = importlib.util.find_spec("pytest_mailtls.backends.embedded") is not None
needs_embedded = pytest.mark.skipif(
    not HAS_EMBEDDED, reason="pytest_mailtls/backends/embedded.py does not exist yet: nothing to serve with"
)
NO_ENGINE = "unix:///nonexistent/docker.sock"

SERVER_TEST = """
def test_cell(mailtls_server):
    pass
"""


def _expected(selection: str | None = None, servers: tuple[str, ...] = ("embedded",)) -> list[str]:
    return [c.id for c in load_matrix().cells(servers=servers, selection=selection)]


def _collected(result: pytest.RunResult, test: str = "test_cell") -> list[str]:
    """Parametrization ids of ``test`` from ``--collect-only -q`` output, in order."""
    pattern = re.compile(rf"::{test}\[(.+)\]$")
    return [m.group(1) for line in result.outlines if (m := pattern.search(line.strip()))]


def _collect(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("--collect-only", "-q", "-p", "no:cacheprovider", *args)


# --- selection: flag, ini, factory argument, and who wins ------------------------------------------


def test_flag_selects(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-servers", "embedded", "--mailtls-select", "quick")
    assert result.ret == pytest.ExitCode.OK
    assert _collected(result) == _expected("quick")


def test_ini_selects(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmailtls_select = modern-only\nmailtls_servers = embedded\n")
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester)
    assert result.ret == pytest.ExitCode.OK
    assert _collected(result) == _expected("modern-only")


def test_flag_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmailtls_select = modern-only\n")
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-servers", "embedded", "--mailtls-select", "quick")
    assert _collected(result) == _expected("quick")
    assert _expected("quick") != _expected("modern-only")


def test_default_selection_is_full(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-servers", "embedded")
    ids = _collected(result)
    assert ids == _expected()
    assert len(ids) >= 20
    assert all(i.startswith("embedded-") for i in ids)


def test_matrix_flag_uses_the_file(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml",
        mine="version: 1\npolicies:\n  only13: {min_version: TLSv1.3}\n"
        "grid:\n  - services: [smtps, submission]\n    modes: [implicit, starttls]\n    policies: [only13]\n",
    )
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-servers", "embedded", "--mailtls-matrix", "mine.yaml")
    assert _collected(result) == ["embedded-smtps-implicit-only13-valid", "embedded-submission-starttls-only13-valid"]


def test_select_unknown_is_an_error_naming_the_choices(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-servers", "embedded", "--mailtls-select", "quik")
    assert result.ret != pytest.ExitCode.OK
    assert _collected(result) == []
    output = result.stdout.str() + result.stderr.str()
    assert re.search(r"unknown selection 'quik'.*full, quick, modern-only", output), output


def test_bad_ready_timeout_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-servers", "embedded", "--mailtls-ready-timeout", "soon")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mailtls-ready-timeout / mailtls_ready_timeout must be a number*'soon'*"])


def test_unknown_server_flag_is_an_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-servers", "exim")
    assert result.ret != pytest.ExitCode.OK
    assert _collected(result) == []
    result.stdout.fnmatch_lines(["*unknown server 'exim'*"])


# --- a bad matrix: an error naming file and key, nothing started ------------------------------------

BAD_MATRIX = "version: 1\npolicies:\n  old: {min_version: TLSv1.3, max_version: TLSv1}\ngrid: []\n"


def test_bad_matrix_names_file_and_key_and_runs_nothing(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", bad=BAD_MATRIX)
    marker = pytester.path / "ran"
    pytester.makepyfile(f"def test_cell(mailtls_server):\n    open({str(marker)!r}, 'w').close()\n")
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--mailtls-servers", "embedded", "--mailtls-matrix", "bad.yaml"
    )
    assert result.ret in (pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERRUPTED)
    output = result.stdout.str() + result.stderr.str()
    assert "bad.yaml: policies.old: impossible version range" in output
    assert result.parseoutcomes().get("passed", 0) == 0
    assert not marker.exists()


def test_bad_matrix_is_a_clean_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", bad=BAD_MATRIX)
    pytester.makepyfile(SERVER_TEST)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", "--mailtls-servers", "embedded", "--mailtls-matrix", "bad.yaml"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: *bad.yaml: policies.old: impossible version range*"])
    assert "pluggy/_caller" not in result.stdout.str() + result.stderr.str()


# --- the marker -------------------------------------------------------------------------------------


def test_marker_narrows_cells(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mailtls(service="smtps", policy=["modern", "tls1[01]-only"])
        def test_cell(mailtls_server):
            pass

        def test_all(mailtls_server):
            pass
        """
    )
    result = _collect(pytester, "--mailtls-servers", "embedded")
    cells = load_matrix().cells(servers=["embedded"])
    expected = [c.id for c in filter_cells(cells, {"service": "smtps", "policy": ["modern", "tls1[01]-only"]})]
    assert expected == [
        "embedded-smtps-implicit-modern-valid",
        "embedded-smtps-implicit-tls10-only-valid",
        "embedded-smtps-implicit-tls11-only-valid",
    ]
    assert _collected(result) == expected
    assert _collected(result, "test_all") == _expected()
    result.stdout.fnmatch_lines([f"*{len(expected) + len(_expected())} tests collected*"])


def test_marker_on_a_class_applies_to_its_methods(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mailtls(mode="plain")
        class TestPlain:
            def test_cell(self, mailtls_server):
                pass
        """
    )
    result = _collect(pytester, "--mailtls-servers", "embedded")
    assert _collected(result) == [
        c.id for c in filter_cells(load_matrix().cells(servers=["embedded"]), {"mode": "plain"})
    ]


def test_marker_value_matching_no_cell_here_skips_with_a_reason(pytester: pytest.Pytester) -> None:
    # imap is a real service of the matrix; the embedded backend just does not serve it.
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mailtls(service="imap")
        def test_cell(mailtls_server):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--mailtls-servers", "embedded")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*no cell of selection default on servers embedded matches*"])


@pytest.mark.parametrize(
    ("marker", "key", "allowed"),
    [
        (
            'policy="modrn"',
            "policy='modrn'",
            "Allowed: modern, tls13-aes256, intermediate, tls12-only, legacy, *, none",
        ),
        ('cert=["valid", "expird"]', "cert='expird'", "Allowed: valid, ecdsa-p256, expired, *, none"),
        ('service="smtp*", auth="mtsl"', "auth='mtsl'", "Allowed: default, open, cleartext-auth, mtls"),
        ('id="postfix-submission-starttls-modrn-*"', "id='postfix-submission-starttls-modrn-*'", "*mailtls cells*"),
    ],
    ids=["policy", "one of a list", "auth", "id glob"],
)
def test_marker_value_naming_nothing_in_the_matrix_is_a_collection_error(
    pytester: pytest.Pytester, marker: str, key: str, allowed: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.mailtls({marker})
        def test_cell(mailtls_server):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--mailtls-servers", "embedded")
    assert result.ret == pytest.ExitCode.INTERRUPTED  # a collection error stops the run
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [f"test_marker_value_naming_nothing_in_the_matrix_is_a_collection_error.py::test_cell: "
         f"@pytest.mark.mailtls({key}): no * of the matrix (*matrix.yaml) matches. {allowed}"]
    )  # fmt: skip
    assert "Traceback" not in result.stdout.str()


def test_marker_without_an_engine_skips_with_the_engine_reason(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mailtls(service="imaps", policy="modern")
        def test_cell(mailtls_server):
            pass
        """
    )
    result = pytester.runpytest_subprocess("-rs")  # servers auto: only the embedded backend, which has no IMAP
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        [f"SKIPPED * no embedded cell matches; {', '.join(docker_servers())} need a Docker engine: none answers at "
         f"{NO_ENGINE} (no such socket): start one or set DOCKER_HOST, or use --mailtls-servers embedded"]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        (
            'colour="red"',
            "*::test_cell: @pytest.mark.mailtls: unknown key 'colour'. Allowed: server, service, protocol*",
        ),
        ('"modern"', "*the mailtls marker takes keyword arguments only*"),
    ],
    ids=["unknown key", "positional"],
)
def test_bad_marker_is_an_error(pytester: pytest.Pytester, marker: str, message: str) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.mailtls({marker})
        def test_cell(mailtls_server):
            pass
        """
    )
    result = _collect(pytester, "--mailtls-servers", "embedded")
    assert result.ret != pytest.ExitCode.OK
    assert _collected(result) == []
    result.stdout.fnmatch_lines([message])


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.mailtls(server=, service=, protocol=, mode=, policy=, cert=, auth=, id=)*"]
    )


# --- no Docker engine ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("problem", "line"),
    [
        (
            "no Docker engine answers at unix:///var/run/docker.sock (DOCKER_HOST is unset): Error while fetching "
            "server API version: ('Connection aborted.', PermissionError(13, 'Permission denied')). Run as root ...",
            "none answers at unix:///var/run/docker.sock (DOCKER_HOST unset; permission denied): run as root or join "
            "the docker group, or use --mailtls-servers embedded",
        ),
        (
            "no Docker engine answers at DOCKER_HOST=tcp://127.0.0.1:2375: Error while fetching server API version: "
            "HTTPConnectionPool(...): Connection refused. Start an engine ...",
            "none answers at tcp://127.0.0.1:2375 (connection refused): start one or set DOCKER_HOST, or use "
            "--mailtls-servers embedded",
        ),
        (
            "DOCKER_HOST=tcp://build:2375 is an engine on build, not on this machine: pytest-mailtls bind-mounts ...",
            "DOCKER_HOST=tcp://build:2375 is not on this machine: unset it or point it at a local socket, or use "
            "--mailtls-servers embedded",
        ),
    ],
    ids=["permission", "refused", "remote"],
)
def test_the_engine_problem_in_one_line_names_the_cause_and_its_own_fix(problem: str, line: str) -> None:
    from pytest_mailtls.factories import engine_problem_line

    assert engine_problem_line(problem) == line


def test_container_cells_skip_without_an_engine_and_say_how_to_fix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    pytester.makepyfile(SERVER_TEST)
    result = pytester.runpytest_subprocess("-rs", "--mailtls-servers", "postfix", "--mailtls-select", "quick")
    expected = _expected("quick", ("postfix",))
    result.assert_outcomes(skipped=len(expected))
    reason = (
        f"postfix needs a Docker engine: none answers at {NO_ENGINE} (no such socket): start one or set DOCKER_HOST, "
        "or use --mailtls-servers embedded"
    )
    result.stdout.fnmatch_lines([f"SKIPPED [[]{len(expected)}[]] *{reason}"])
    skipped = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert len(skipped) == 1 and len(skipped[0]) < 250  # one short line with the fix, not a paragraph
    # The engine's full explanation is said once, in the header.
    assert len([line for line in result.outlines if line.startswith("mailtls: no Docker engine answers at")]) == 1


@pytest.mark.parametrize(
    ("args", "ini", "fragment"),
    [
        (["--mailtls-servers", "postfix", "--mailtls-require-docker"], "", "postfix needs a Docker engine: no Docker"),
        ([], "mailtls_require_docker = true\nmailtls_servers = postfix\n", "postfix needs a Docker engine: no Docker"),
        (["--mailtls-require-docker"], "", f"{', '.join(docker_servers())} need a Docker engine: only the embedded backend "
         "could serve; no Docker engine answers"),
    ],
    ids=["flag", "ini key", "auto would fall back to embedded"],
)  # fmt: skip
def test_require_docker_without_an_engine_is_a_usage_error_before_anything_runs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], ini: str, fragment: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    if ini:
        pytester.makeini("[pytest]\n" + ini)
    marker = pytester.path / "ran"
    pytester.makepyfile(f"def test_cell(mailtls_server):\n    open({str(marker)!r}, 'w').close()\n")
    result = pytester.runpytest_subprocess("--mailtls-select", "quick", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and f"ERROR: --mailtls-require-docker: {fragment}" in errors[0], result.errlines
    assert "Traceback" not in result.stderr.str()
    assert not marker.exists()


def test_require_docker_fails_a_run_whose_tests_skip_for_want_of_an_engine(pytester: pytest.Pytester) -> None:
    # The safety net for skips the plugin does not make itself (a test's own engine guard).
    pytester.makepyfile(
        """
        import pytest

        def test_guarded():
            pytest.skip("no Docker engine answers at unix:///x.sock")

        def test_other():
            pytest.skip("needs java")
        """
    )
    result = pytester.runpytest_subprocess("--mailtls-servers", "embedded", "--mailtls-require-docker")
    result.assert_outcomes(skipped=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["mailtls: --mailtls-require-docker: 1 test(s) skipped for want of a Docker engine*"])
    # Without the flag the same skips are fine.
    assert pytester.runpytest_subprocess("--mailtls-servers", "embedded").ret == pytest.ExitCode.OK


@needs_embedded
def test_require_docker_with_xdist_counts_the_workers_skips(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(4))
        def test_guarded(n):
            pytest.skip("no Docker engine answers")
        """
    )
    result = pytester.runpytest_subprocess("-n", "2", "--mailtls-servers", "embedded", "--mailtls-require-docker")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["mailtls: --mailtls-require-docker: 4 test(s) skipped for want of a Docker engine*"])


def test_auto_falls_back_to_embedded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    pytester.makepyfile(SERVER_TEST)
    result = pytester.runpytest_subprocess("--collect-only", "-q", "--mailtls-select", "quick")
    assert _collected(result) == _expected("quick")


def test_auto_fallback_is_said_once(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    pytester.makepyfile(SERVER_TEST + SERVER_TEST.replace("test_cell", "test_other"))
    result = pytester.runpytest_subprocess("--collect-only", "-q", "--mailtls-select", "quick")
    notes = [line for line in result.outlines if "serving the grid with the embedded backend" in line]
    assert len(notes) == 1
    assert notes[0].startswith("mailtls: No Docker engine is reachable: serving the grid with the embedded backend")


# --- fixtures are documented ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "scope"),
    [
        ("mailtls_server", None),
        ("mailtls_ca", "session"),
        ("mailtls_matrix", "session"),
        ("mailtls_grid", "session"),
        ("mailtls_manifest", "session"),
        ("mailtls_config", "session"),
    ],
)
def test_fixtures_are_documented(pytester: pytest.Pytester, name: str, scope: str | None) -> None:
    result = pytester.runpytest("--fixtures", "-p", "no:cacheprovider")
    lines = result.outlines
    heads = [i for i, line in enumerate(lines) if line.split(" ")[0] == name]
    assert len(heads) == 1, f"{name} not listed by pytest --fixtures"
    head = lines[heads[0]]
    assert "plugin.py" in head or "factories.py" in head  # mailtls_grid = mailtls_proc(), made in factories.py
    if scope:
        assert f"[{scope} scope]" in head
    doc = lines[heads[0] + 1]
    assert doc.startswith("    ") and doc.strip() and "no docstring" not in doc


# --- a manifest of servers already running -------------------------------------------------------------


def _records(first_port: int) -> list[dict[str, object]]:
    cells = load_matrix().cells(servers=["james"], selection="quick")[:3]
    return [
        {
            "id": c.id,
            "server": c.server,
            "service": c.service.name,
            "protocol": str(c.protocol),
            "mode": str(c.mode),
            "policy": c.policy.to_json() if c.policy else None,
            "cert": str(c.cert) if c.cert else None,
            "client_cert": c.auth.client_cert,
            "host": "127.0.0.1",
            "port": first_port + i,
            "server_hostname": "localhost",
            "ca_file": "/nonexistent/ca.pem",
            "auth": c.auth.to_json(username="u", password="p"),
        }
        for i, c in enumerate(cells)
    ]


def test_manifest_flag_parametrizes_from_the_manifest(pytester: pytest.Pytester) -> None:
    # A hand-written manifest (no owner record): its first port must answer.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        records = _records(listener.getsockname()[1])
        pytester.makefile(".json", manifest=json.dumps({"version": 1, "cells": records}))
        pytester.makepyfile(SERVER_TEST)
        result = _collect(pytester, "--mailtls-manifest", "manifest.json")
    assert _collected(result) == [r["id"] for r in records]


def _usage_error(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), result.errlines
    return errors[0]


def test_manifest_flag_with_a_missing_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SERVER_TEST)
    result = _collect(pytester, "--mailtls-manifest", "gone.json")
    assert (
        _usage_error(result)
        == "ERROR: gone.json: no such manifest; start servers with `mailtls up --manifest gone.json`"
    )


def test_a_stale_manifest_stops_the_run_before_any_test(pytester: pytest.Pytester) -> None:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(proc.stdout)
    with socket.create_server(("127.0.0.1", 0)) as listener:  # even with a port that answers (reused by another)
        doc = {"version": 1, "owner": {"pid": dead, "start": "1", "host": socket.gethostname(), "user": "u",
               "command": "mailtls up"}, "cells": _records(listener.getsockname()[1])}  # fmt: skip
        pytester.makefile(".json", manifest=json.dumps(doc))
        marker = pytester.path / "ran"
        pytester.makepyfile(f"def test_cell(mailtls_server):\n    open({str(marker)!r}, 'w').close()\n")
        result = pytester.runpytest("-p", "no:cacheprovider", "--mailtls-manifest", "manifest.json")
    assert _usage_error(result) == (
        f"ERROR: manifest manifest.json was written by mailtls up (pid {dead}) which is no longer running; "
        "start them again with `mailtls up --manifest manifest.json`"
    )
    assert not marker.exists()


def test_noproc_fixture_with_a_stale_manifest_errors_in_one_line(pytester: pytest.Pytester) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
    pytester.makefile(".json", manifest=json.dumps({"version": 1, "cells": _records(port)}))
    pytester.makeconftest(
        "from pytest_mailtls import mailtls_noproc\nrunning = mailtls_noproc(manifest='manifest.json')\n"
    )
    pytester.makepyfile("def test_uses(running):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"manifest manifest.json: its first cell * at 127.0.0.1:{port} does not answer*"])
    assert "Traceback" not in result.stdout.str() and "raise " not in result.stdout.str()


# --- end to end with the embedded backend ----------------------------------------------------------------

SEND_AND_READ = """
import pytest
from pytest_mailtls.connect import open_client

CELL = "embedded-submission-starttls-intermediate-valid"


@pytest.mark.mailtls(id=CELL)
def test_send(mailtls_server):
    assert mailtls_server.id == CELL
    client = open_client(mailtls_server)
    client.login(mailtls_server.username, mailtls_server.password)
    client.sendmail(mailtls_server.address, ["rcpt@mailtls.test"], "Subject: through the plugin\\r\\n\\r\\nhello\\r\\n")
    client.quit()
    messages = mailtls_server.messages()
    assert [m["Subject"] for m in messages] == ["through the plugin"]
    assert messages[0]["X-Original-To"] == "rcpt@mailtls.test"


@pytest.mark.mailtls(id=CELL)
def test_mail_is_cleared_between_tests(mailtls_server):
    assert mailtls_server.messages() == []


@pytest.mark.mailtls(id="embedded-smtp-plain-open")
def test_fails_with_the_server_log(mailtls_server):
    client = open_client(mailtls_server)
    client.noop()
    client.quit()
    assert False, "deliberate failure"
"""


@needs_embedded
def test_end_to_end_with_the_embedded_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(SEND_AND_READ)
    result = pytester.runpytest_subprocess("-rA", "--mailtls-servers", "embedded")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: deliberate failure",
            "*- mailtls server log (embedded-smtp-plain-open) -*",
            "*embedded-smtp-plain-open*",
        ]
    )
    # -rA shows the sections of passing tests too: only the failing one carries a server log
    assert "mailtls server log (embedded-submission-starttls-intermediate-valid)" not in result.stdout.str()


@needs_embedded
def test_warnings_as_errors_do_not_break_readiness(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nfilterwarnings = error\n")
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mailtls(id="embedded-submission-starttls-intermediate-valid")
        def test_cell(mailtls_server):
            assert mailtls_server.port > 0
        """
    )
    result = pytester.runpytest_subprocess("--mailtls-servers", "embedded", "--mailtls-ready-timeout", "1")
    result.assert_outcomes(passed=1)


FACTORY_CONFTEST = """
from pytest_mailtls import mailtls_proc

quick_grid = mailtls_proc(servers=["embedded"], select="quick", scope="module")
flag_grid = mailtls_proc(servers=["embedded"], where={"service": "smtps"}, scope="module")
"""


@needs_embedded
def test_factory_argument_wins_over_flag(pytester: pytest.Pytester) -> None:
    quick, modern = _expected("quick"), _expected("modern-only")
    modern_smtps = [
        c.id
        for c in filter_cells(load_matrix().cells(servers=["embedded"], selection="modern-only"), {"service": "smtps"})
    ]
    pytester.makeconftest(FACTORY_CONFTEST)
    pytester.makepyfile(
        f"""
        def test_argument_wins(quick_grid):
            assert [c.id for c in quick_grid.cells] == {quick!r}
            served = {{e.id for e in quick_grid.endpoints}}
            assert served == set({quick!r}) - set(quick_grid.skipped)
            assert served

        def test_flag_used_without_argument(flag_grid):
            assert [c.id for c in flag_grid.cells] == {modern_smtps!r}
        """
    )
    assert quick != modern
    result = pytester.runpytest_subprocess("--mailtls-select", "modern-only")
    result.assert_outcomes(passed=2)


CELL_CONFTEST = """
from pytest_mailtls import mailtls_cell, mailtls_proc

smtps_grid = mailtls_proc(servers=["embedded"], where={"service": "smtps"}, scope="module")
smtps_server = mailtls_cell("smtps_grid")
"""


@needs_embedded
def test_a_cell_fixture_runs_a_test_once_per_cell_of_its_own_grid(pytester: pytest.Pytester) -> None:
    """mailtls_cell binds a per-cell fixture to any grid fixture (as mailtls_server is bound to mailtls_grid):
    parametrized over that grid's cells, narrowed by the marker, with the plugin's diagnostics on failure."""
    smtps = [c.id for c in filter_cells(load_matrix().cells(servers=["embedded"]), {"service": "smtps"})]
    modern = [
        c.id for c in filter_cells(load_matrix().cells(servers=["embedded"]), {"service": "smtps", "policy": "modern"})
    ]
    assert smtps and modern and len(modern) < len(smtps)
    pytester.makeconftest(CELL_CONFTEST)
    pytester.makepyfile(
        """
        import smtplib
        import pytest

        def test_each(request, smtps_server, smtps_grid):
            assert smtps_server.service == "smtps"
            assert smtps_server.id == request.node.callspec.id
            assert smtps_server.id in {e.id for e in smtps_grid.endpoints}

        @pytest.mark.mailtls(policy="modern")
        def test_marked(smtps_server):
            assert smtps_server.cell.policy.name == "modern"

        @pytest.mark.mailtls(policy="modern", cert="valid")
        def test_fails_with_its_sessions(smtps_server):
            with smtplib.SMTP_SSL(smtps_server.host, smtps_server.port, context=smtps_server.client_context()) as s:
                s.ehlo("diagnosed.example")
            assert False, "on purpose"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--mailtls-select", "full", "-rA")
    out = result.stdout.str()
    outcomes = result.parseoutcomes()
    # Cells the embedded backend cannot serve on this host's OpenSSL (its grid says which) skip, with the reason.
    skips = [line for line in result.outlines if line.startswith("SKIPPED")]
    assert all(": embedded-smtps-" in line for line in skips), skips  # "<cell>: <why this host cannot>"
    assert outcomes.get("failed") == 1, outcomes  # test_fails_with_its_sessions on its one cell
    assert outcomes["passed"] + len(skips) == len(smtps) + len(modern), outcomes  # test_each + test_marked
    assert "mailtls sessions (embedded-smtps-implicit-modern-valid)" in out, out[-3000:]
    assert "diagnosed.example" in out  # the test's own EHLO, as the wire showed it


@needs_embedded
def test_a_cell_fixture_bound_to_something_else_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest
        from pytest_mailtls import mailtls_cell

        @pytest.fixture
        def not_a_grid():
            return 1

        wrong_server = mailtls_cell("not_a_grid")
        """
    )
    pytester.makepyfile("def test_x(wrong_server):\n    pass\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'wrong_server' is bound to 'not_a_grid', which is not a grid fixture*"])
    assert "Traceback" not in result.stdout.str()


@needs_embedded
def test_manifest_flag_serves_running_servers(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """The no-process path: servers started here, the inner session only reads their manifest."""
    cells = [c for c in load_matrix().cells(servers=["embedded"]) if c.id == "embedded-smtp-plain-open"]
    with Grid(cells, workdir=tmp_path / "grid") as grid:
        manifest = write_manifest(tmp_path / "manifest.json", grid.endpoints)
        pytester.makepyfile(
            """
            from pytest_mailtls.connect import open_client

            def test_cell(mailtls_server):
                client = open_client(mailtls_server)
                client.sendmail("a@mailtls.test", ["b@mailtls.test"], "Subject: via manifest\\r\\n\\r\\nhi\\r\\n")
                client.quit()
            """
        )
        result = pytester.runpytest_subprocess("--mailtls-manifest", str(manifest))
        result.assert_outcomes(passed=1)
        assert [m["Subject"] for m in grid.endpoints[0].messages()] == ["via manifest"]


def test_inner_sessions_see_the_plugin(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        textwrap.dedent(
            """
            def test_plugin_loaded(pytestconfig):
                assert pytestconfig.pluginmanager.has_plugin("mailtls")
            """
        )
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_mailtls_check_passes_a_safe_client_and_reports_an_unsafe_one(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.mailtls(service="smtps", policy="intermediate", cert=["valid", "expired"], auth="default")
        def test_safe(mailtls_check):
            record = mailtls_check("python")
            assert record.verdict in ("pass", "refused-correctly")

        @pytest.mark.mailtls(service="smtps", policy="intermediate", cert="expired")
        def test_unsafe(mailtls_check):
            mailtls_check("python-unsafe")
        """
    )
    result = pytester.runpytest_subprocess("--mailtls-servers", "embedded", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*mailtls diagnosis (embedded-smtps-implicit-intermediate-expired)*",
            "*insecure*certificate-expired*",
            "*remedy:*",
            "*mailtls server log (embedded-smtps-implicit-intermediate-expired)*",
        ]
    )
    # Only this test's connection: the earlier test on the same cell is not in the section.
    section = result.stdout.str().split("mailtls server log")[1]
    assert "SSLV3_ALERT_CERTIFICATE_EXPIRED" not in section


def test_a_guard_that_skips_with_the_engine_paragraph_shows_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    pytester.makepyfile(
        """
        import pytest
        from pytest_mailtls.runtime import engine_problem

        @pytest.mark.parametrize("n", range(3))
        def test_guarded(n):
            problem = engine_problem()
            assert problem and len(problem) > 300  # the engine's paragraph
            pytest.skip(problem)
        """
    )
    result = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(
        [f"SKIPPED [[]3[]] *: no Docker engine: none answers at {NO_ENGINE} (no such socket): start one or set "
         "DOCKER_HOST, or use --mailtls-servers embedded"]
    )  # fmt: skip
    full = [line for line in result.outlines if line.startswith("mailtls: container tests skipped: no Docker engine")]
    assert len(full) == 1 and "dockerd" in full[0]  # the paragraph, once


def test_xdist_workers_take_the_controllers_server_choice_and_ask_no_engine(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The controller asks the engine once (here: none answers, so auto means embedded) and hands the choice to
    the workers: none of them imports the Docker SDK to ask again (0.5 s each), and all serve the same cells."""
    monkeypatch.setenv("DOCKER_HOST", NO_ENGINE)
    pytester.makeconftest(
        """
        import os, sys
        from pathlib import Path

        def pytest_collection_finish(session):
            if hasattr(session.config, "workerinput"):
                choice = session.config.workerinput.get("mailtls_server_choice", {}).get("servers")
                Path(f"worker-{os.getpid()}.txt").write_text(f"docker-imported={'docker' in sys.modules} choice={choice}")
        """
    )
    pytester.makepyfile(SERVER_TEST)
    result = pytester.runpytest_subprocess("-n", "2", "--mailtls-select", "quick")
    assert result.ret == pytest.ExitCode.OK, result.outlines[-20:]
    seen = [p.read_text() for p in pytester.path.glob("worker-*.txt")]
    assert len(seen) == 2 and set(seen) == {"docker-imported=False choice=['embedded']"}
