"""docs/ci.md: the GitHub Actions and GitLab CI configurations hold only steps that are exercised here.

A step is the README's set-up command or a line of ``.ci/run`` (both run by CI on this machine), the
README's test command with pytest options that exist, or one of the image-cache lines, which the
integration test below runs as written against the engine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_mailtls.backends import docker_servers
from pytest_mailtls.runtime import engine_problem

from .blocks import ROOT, blocks, commands, run_env

CI_MD = ROOT / "docs" / "ci.md"
IMAGE_CACHE = ("docker load", "mailtls images build", "docker save")


def _configs() -> dict[str, Any]:
    found = {b.argument: yaml.safe_load(b.text) for b in blocks(CI_MD) if b.marker == "ci"}
    assert set(found) == {"github", "gitlab"}, found.keys()
    return found


def _steps(name: str, config: dict[str, Any]) -> list[str]:
    if name == "github":
        steps = [step for job in config["jobs"].values() for step in job["steps"]]
        return [line for step in steps if "run" in step for line in commands(step["run"])]
    jobs = [job for job in config.values() if isinstance(job, dict) and "script" in job]
    return [line for job in jobs for key in ("before_script", "script", "after_script") for line in job.get(key, [])]


def _normal(line: str) -> str:
    return " ".join(line.split())


def _known() -> set[str]:
    """The README's set-up commands (each part of an ``&&`` chain) and the command lines of ``.ci/run``."""
    [setup] = [b for b in blocks(ROOT / "README.md") if b.marker == "setup"]
    known = {_normal(part) for line in commands(setup.text) for part in line.split("&&")}
    known |= {_normal(line) for line in commands((ROOT / ".ci" / "run").read_text())}
    return known


def _readme_test_command() -> str:
    [setup] = [b for b in blocks(ROOT / "README.md") if b.marker == "setup"]
    [command] = [line for line in commands(setup.text) if line.startswith("python -m pytest")]
    return _normal(command)


def test_both_configurations_run_the_same_steps() -> None:
    configs = _configs()
    assert _steps("github", configs["github"]) == _steps("gitlab", configs["gitlab"])


def test_every_step_is_one_that_runs_here() -> None:
    known = _known()
    readme_tests = _readme_test_command()
    pytest_help = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], cwd=ROOT, env=run_env(), capture_output=True, text=True, timeout=120
    ).stdout
    for name, config in _configs().items():
        steps = _steps(name, config)
        assert len(steps) >= 7, steps
        for line in steps:
            if _normal(line) in known or any(c in line for c in IMAGE_CACHE):
                continue
            if line.startswith("python -m pytest"):
                assert _normal(line).startswith(readme_tests), f"{name}: `{line}` is not the README's `{readme_tests}`"
                for option in line[len(readme_tests) :].split():
                    flag = option.split("=", 1)[0]
                    assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", pytest_help), f"{name}: pytest has no {flag}"
                continue
            pytest.fail(
                f"docs/ci.md ({name}): `{line}` is neither in the README's set-up, nor in .ci/run, nor run here"
            )
    for image_line in IMAGE_CACHE:
        assert any(image_line in line for line in _steps("github", _configs()["github"])), image_line


def test_the_configurations_keep_what_the_page_promises() -> None:
    configs = _configs()
    github, gitlab = configs["github"], configs["gitlab"]
    [job] = github["jobs"].values()
    uses = {step.get("uses", "").split("@")[0]: step for step in job["steps"]}
    restore, save = uses["actions/cache/restore"]["with"], uses["actions/cache/save"]["with"]
    assert restore["path"] == save["path"] == ".mailtls-images.tar" and restore["restore-keys"] == "mailtls-images-"
    assert save["key"] == "mailtls-images-${{ hashFiles('.mailtls-images.list') }}"  # the content tags
    uploads = [step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact")]
    paths = {p for step in uploads for p in step["with"]["path"].split()}
    assert {"mailtls-report", "junit.xml", "mailtls-report/junit.xml"} <= paths
    assert all(step.get("if") == "always()" for step in uploads)
    [gitlab_job] = [job for job in gitlab.values() if isinstance(job, dict) and "script" in job]
    assert gitlab_job["image"].endswith("-bookworm")  # Debian: start-engine.sh installs the engine with apt
    assert gitlab_job["cache"]["paths"] == [".mailtls-images.tar"]
    assert gitlab_job["artifacts"]["when"] == "always" and "mailtls-report" in gitlab_job["artifacts"]["paths"]
    assert set(gitlab_job["artifacts"]["reports"]["junit"]) == {"junit.xml", "mailtls-report/junit.xml"}
    for name, config in configs.items():
        [tests] = [line for line in _steps(name, config) if line.startswith("python -m pytest")]
        assert re.search(r"-n \d", tests) and "--junit-xml=junit.xml" in tests  # xdist and the JUnit file


def _bash(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", line], cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"`{line}`: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.integration
def test_the_image_cache_lines_run_as_written(tmp_path: Path) -> None:
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    steps = _steps("gitlab", _configs()["gitlab"])
    load, build, save = (next(line for line in steps if marker in line) for marker in IMAGE_CACHE)
    _bash(load, tmp_path)  # no cache yet: nothing to load
    _bash(build, tmp_path)
    listed = (tmp_path / ".mailtls-images.list").read_text().split()
    # the base and one content tag per container server
    assert len(listed) == 1 + len(docker_servers()) and listed[0] == "debian:bookworm-slim", listed
    for tag in listed:
        inspect = subprocess.run(["docker", "image", "inspect", tag], capture_output=True, text=True)
        assert inspect.returncode == 0, f"{tag}: printed by `mailtls images build` but not an image: {inspect.stderr}"
    # Save the base and Postfix only (the whole set is about 1 GB): the line runs as written.
    keep = [tag for tag in listed if tag.startswith(("debian:", "mailtls-postfix:"))]
    (tmp_path / ".mailtls-images.list").write_text("\n".join(keep) + "\n")
    _bash(save, tmp_path)
    with tarfile.open(tmp_path / ".mailtls-images.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    saved = {tag for image in manifest for tag in image["RepoTags"]}
    assert saved == set(keep), saved
    loaded = _bash(load, tmp_path).stdout
    assert all(f"Loaded image: {tag}" in loaded for tag in keep), loaded
