"""The README and docs/*.md as executable documentation.

Every Python block is a file of docs/examples/ quoted verbatim (or marked ``not-run`` with a reason), and
those files run here: the example tests on the embedded backend always and on Postfix and James when an
engine answers, the example scripts against servers that ``mailtls up`` started. Every ``mailtls``
command in a shell or CI block parses with the real parser, every option of a synopsis exists, the
README's ``<!-- run -->`` lines run as written, and the ``--command`` placeholders, ``--version`` and
the README's imports agree with the code.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import pytest_mailtls
from pytest_mailtls.clients.command import PLACEHOLDERS, CommandClient
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.runtime import engine_problem

from .blocks import (
    EXAMPLES,
    ROOT,
    SHELL_LANGS,
    Block,
    all_blocks,
    commands,
    mailtls_commands,
    options,
    parse_mailtls,
    run_env,
    subcommands,
    sync,
)

#: Blocks marked not-run: illustrations that cannot run as written. Keep this small.
MAX_NOT_RUN = 3

#: The example test functions, each of which must pass on every cell it selects.
EXAMPLE_TESTS = {
    "test_send_report.py": ["test_sends_on_every_modern_server", "test_refuses_bad_certificates"],
    "test_wire.py": ["test_uses_tls13_and_never_sends_the_password_in_clear"],
    "test_check.py": ["test_my_client"],
    "test_own_grid.py": ["test_refuses_servers_below_tls12", "test_sends_through_running_servers"],
}

#: Example tests bound to a grid of their own, and the servers that grid has (docs/examples/conftest.py).
EXAMPLE_SERVERS = {"test_refuses_servers_below_tls12": ("postfix-", "embedded-")}


def _python_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang == "python"]


# --- every Python block is an example file, verbatim ---------------------------------------------------


def test_every_python_block_is_an_example_file_quoted_verbatim_or_marked_not_run() -> None:
    blocks = _python_blocks()
    assert len(blocks) >= 8, [b.where for b in blocks]
    unmarked = [b.where for b in blocks if b.marker not in ("example", "not-run")]
    assert not unmarked, f"Python blocks that are neither <!-- example: FILE --> nor <!-- not-run: why -->: {unmarked}"
    for block in blocks:
        if block.marker == "not-run":
            assert block.argument, f"{block.where}: say why it does not run: <!-- not-run: why -->"
            continue
        path = ROOT / block.argument
        assert path.parent == EXAMPLES and path.is_file(), f"{block.where}: {block.argument} is not in docs/examples/"
    stale = sync(write=False)
    assert not stale, f"quoted examples differ from their files at {stale}: run python tests/docs/blocks.py --write"
    not_run = [b.where for b in blocks if b.marker == "not-run"]
    assert len(not_run) <= MAX_NOT_RUN, f"too many Python blocks that do not run: {not_run}"


def test_every_example_file_is_quoted_or_linked() -> None:
    text = "".join(path.read_text(encoding="utf-8") for path in {b.path for b in all_blocks()})
    quoted = {b.argument for b in all_blocks() if b.marker == "example"}
    for path in sorted(EXAMPLES.glob("*.py")):
        name = f"docs/examples/{path.name}"
        assert name in quoted or f"]({name})" in text, f"{name} is neither quoted nor linked from the docs"


def test_what_the_examples_import_from_pytest_mailtls_is_exported() -> None:
    sources = [(b.where, b.text) for b in _python_blocks()] + [(p.name, p.read_text()) for p in EXAMPLES.glob("*.py")]
    seen = set()
    for where, source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module == "pytest_mailtls":
                for alias in node.names:
                    seen.add(alias.name)
                    assert alias.name in pytest_mailtls.__all__, f"{where}: {alias.name} is not in pytest_mailtls"
    assert {"command_client", "mailtls_proc", "mailtls_noproc", "read_manifest", "get_client"} <= seen


# --- the example tests, run -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """docs/examples/ copied to a temp dir, beside the manifest of a ``mailtls up`` serving the embedded
    backend's quick selection (which the manifest examples read), stopped at the end."""
    folder = tmp_path_factory.mktemp("examples")
    for path in EXAMPLES.glob("*.py"):
        (folder / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    log = (folder / "up.log").open("w")
    argv = [sys.executable, "-m", "pytest_mailtls", "up", "--servers", "embedded", "--select", "quick"]
    up = subprocess.Popen([*argv, "--manifest", "manifest.json"], cwd=folder, env=run_env(), stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while "serving until" not in (folder / "up.log").read_text():
            assert up.poll() is None, f"mailtls up ended: {(folder / 'up.log').read_text()}"
            assert time.monotonic() < deadline, f"mailtls up not ready in 60 s: {(folder / 'up.log').read_text()}"
            time.sleep(0.2)
        yield folder
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=30)
        log.close()


def _run_examples(folder: Path, *args: str) -> dict[str, dict[str, str]]:
    """Run the example tests; each test id's outcome (``passed``, or the failure, error or skip message)."""
    junit = folder / f"junit-{len(list(folder.glob('junit-*')))}.xml"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}", *args]
    done = subprocess.run(argv, cwd=folder, env=run_env(), capture_output=True, text=True, timeout=1500)
    assert junit.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    outcomes: dict[str, dict[str, str]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1] + ".py"
        problem = next(iter(case), None)
        outcome = "passed" if problem is None else f"{problem.tag}: {problem.get('message', '')[:500]}"
        outcomes.setdefault(module, {})[case.get("name", "")] = outcome
    # Without curl (the README's second mailtls_check client) that check skips, as curl's other tests do.
    tolerated = "skipped: client curl unavailable" if shutil.which("curl") is None else "passed"
    bad = {
        f"{m}::{n}": o
        for m, tests in outcomes.items()
        for n, o in tests.items()
        if o != "passed" and not o.startswith(tolerated)
    }
    assert not bad and done.returncode == 0, f"{bad}\n{done.stdout[-4000:]}"
    return outcomes


def _cells_of(outcomes: dict[str, dict[str, str]], module: str, test: str) -> set[str]:
    return {re.sub(rf"^{test}(\[(.*)\])?$", r"\2", name) for name in outcomes.get(module, {}) if name.startswith(test)}


def _check_every_example_ran(outcomes: dict[str, dict[str, str]], server_prefixes: tuple[str, ...]) -> None:
    for module, tests in EXAMPLE_TESTS.items():
        for test in tests:
            cells = _cells_of(outcomes, module, test)
            assert cells, f"{module}::{test} did not run"
            parametrized = cells - {""}
            for prefix in server_prefixes if parametrized else ():
                if prefix not in EXAMPLE_SERVERS.get(test, (prefix,)):
                    continue
                assert any(c.startswith(prefix) for c in parametrized), f"{module}::{test}: no {prefix} cell ran"


def test_the_examples_pass_on_the_embedded_backend(examples: Path) -> None:
    outcomes = _run_examples(examples, "--mailtls-servers", "embedded")
    _check_every_example_ran(outcomes, ("embedded-",))
    # The README's first example selects exactly the cells that want a password after TLS.
    modern = _cells_of(outcomes, "test_send_report.py", "test_sends_on_every_modern_server")
    assert modern and all(not c.endswith(("-open", "-mtls")) for c in modern), modern


@pytest.mark.integration
def test_the_examples_pass_on_postfix_and_james(examples: Path) -> None:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    outcomes = _run_examples(examples)  # auto: the container servers
    _check_every_example_ran(outcomes, ("postfix-", "james-"))


def _script(folder: Path, *argv: str) -> str:
    done = subprocess.run(
        [sys.executable, *argv], cwd=folder, env=run_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"{argv}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_manifest_examples_run_against_mailtls_up(examples: Path) -> None:
    manifest = json.loads((examples / "manifest.json").read_text())
    ids = [c["id"] for c in manifest["cells"]]
    lines = _script(examples, "read_manifest.py").splitlines()
    assert [line.split()[0] for line in lines] == ids

    out = _script(examples, "certify_running.py")
    assert f"[{len(ids)}/{len(ids)}]" in out
    report = json.loads((examples / "out" / "report.json").read_text())
    assert report["summary"]["total"] == len(ids) and report["summary"]["insecure"] == 0

    out = _script(examples, "verify_running.py")
    assert "all cells match their declaration" in out

    [cell] = [c for c in manifest["cells"] if c["id"] == "embedded-submission-starttls-intermediate-valid"]
    out = _script(examples, "probe_port.py", f"{cell['host']}:{cell['port']}", cell["server_hostname"], cell["ca_file"])
    assert "['TLSv1.2', 'TLSv1.3']" in out.splitlines()[-2]


# --- shell blocks --------------------------------------------------------------------------------------


def _shell_blocks() -> list[Block]:
    return [b for b in all_blocks() if b.lang in SHELL_LANGS]


def test_every_mailtls_command_in_the_docs_parses() -> None:
    import yaml

    checked = 0
    for block in all_blocks():
        if block.marker == "synopsis" or block.lang not in (*SHELL_LANGS, "yaml"):
            continue
        if block.lang == "yaml":  # CI configurations; the matrix schema in docs/matrix.md is not one
            texts = list(_ci_texts(yaml.safe_load(block.text))) if re.search(r"\b(run|script):", block.text) else []
        else:
            texts = [block.text]
        for text in texts:
            for line in commands(text):
                for words in mailtls_commands(line) if "[" not in line else ():
                    problem = parse_mailtls(words)
                    assert problem is None, f"{block.where}: `{shlex.join(words)}`: {problem}"
                    checked += 1
    assert checked >= 10


def _ci_texts(node: object) -> Iterator[str]:
    """Every ``run:`` and ``script:`` text of a CI configuration, however deep."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("run", "script", "before_script", "after_script"):
                yield from ([value] if isinstance(value, str) else value)
            else:
                yield from _ci_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _ci_texts(item)


def test_every_synopsis_names_real_commands_and_options() -> None:
    parsers = subcommands()
    lines = [
        (b.where, line)
        for b in _shell_blocks()
        for line in commands(b.text)
        if line.startswith("mailtls ") and (b.marker == "synopsis" or "[" in line)
    ]
    assert len(lines) >= 10
    for where, line in lines:
        words = line.split()
        command = "" if words[1].startswith("-") else words[1]
        assert command in parsers, f"{where}: no command `mailtls {command}`"
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", line.split("#")[0]):
            assert option in options(parsers[command]), f"{where}: `mailtls {command}` has no option {option}"
    synopsis = [b for b in _shell_blocks() if b.marker == "synopsis"]
    listed = {line.split()[1] for b in synopsis for line in commands(b.text)}
    assert set(parsers) - {""} <= listed, f"commands missing from the README synopsis: {set(parsers) - listed}"


def test_the_readme_run_lines_run_as_written(tmp_path: Path) -> None:
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    [block] = [b for b in _shell_blocks() if b.marker == "run" and b.path.name == "README.md"]
    lines = list(commands(block.text))
    assert len(lines) >= 4
    for line in lines:
        done = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=run_env(), capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, (
            f"{block.where}: `{line}`: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
        if line == "mailtls --version":
            assert done.stdout == f"mailtls {pytest_mailtls.__version__}\n"
    report = json.loads((tmp_path / "mailer-report" / "report.json").read_text())
    summary = report["summary"]
    assert summary["pass"] > 0 and summary["refused-correctly"] > 0
    assert summary["incompatible"] == 0 and summary["insecure"] == 0, summary


def test_the_setup_commands_parse() -> None:
    [block] = [b for b in _shell_blocks() if b.marker == "setup"]
    lines = list(commands(block.text))
    assert len(lines) == 2 and lines[1].startswith("python -m pytest")
    assert [shlex.join(w) for w in mailtls_commands(lines[0])] == [
        "mailtls certify --client python --report mailtls-report"
    ]


def test_benchmark_commands_name_real_scripts_and_options() -> None:
    """Read, never run: a benchmark started with --help may just run (and take minutes)."""
    lines = [
        (b.where, line) for b in _shell_blocks() for line in commands(b.text) if line.startswith("python benchmarks/")
    ]
    assert lines
    for where, line in lines:
        script = ROOT / line.split()[1]
        assert script.is_file(), f"{where}: {script.relative_to(ROOT)} does not exist"
        declared = set(re.findall(r"add_argument\(\s*[\"'](--[\w-]+)", script.read_text(encoding="utf-8")))
        for option in re.findall(r"(?<![\w-])--[a-z][\w-]*", line.split("#")[0]):
            assert option in declared, f"{where}: {script.name} declares no option {option}"


# --- the command line agrees with the docs ---------------------------------------------------------------


def _help(*argv: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", *argv, "--help"], env=run_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())


def test_certify_help_lists_every_placeholder_and_each_one_is_filled(tmp_path: Path) -> None:
    text = _help("certify")
    certify_md = (ROOT / "docs" / "certify.md").read_text()
    for name in PLACEHOLDERS:
        assert f"{{{name}}}" in text, f"mailtls certify --help does not list {{{name}}}"
        assert f"`{{{name}}}`" in certify_md, f"docs/certify.md does not list {{{name}}}"
    pki = SessionPKI(tmp_path / "pki")
    cell = next(c for c in load_matrix().cells(servers=["embedded"]) if c.auth.client_cert)
    files = pki.client_files()
    endpoint = Endpoint(
        cell=cell, host="127.0.0.1", port=2525, server_hostname=pki.server_hostname, ca_file=str(pki.ca_file),
        username="u@mailtls.test", password="p", client_cert_file=str(files.cert_file),
        client_key_file=str(files.key_file),
    )  # fmt: skip
    argv = CommandClient("client " + " ".join(f"{{{name}}}" for name in PLACEHOLDERS)).argv(endpoint)
    assert all(argv[1:]) and len(argv) == len(PLACEHOLDERS) + 1, argv


def test_version_is_the_package_version_and_pyproject_reads_it() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", "--version"], env=run_env(), capture_output=True, text=True
    )
    assert (done.returncode, done.stdout) == (0, f"mailtls {pytest_mailtls.__version__}\n")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", pytest_mailtls.__version__)
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" in project["project"]["dynamic"] and "version" not in project["project"]
    assert project["tool"]["hatch"]["version"]["path"] == "pytest_mailtls/__init__.py"
