"""Unit tests of the Docker runtime that need no engine: hashing, mirrors, labels, messages."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.errors import EngineUnavailable, ImageBuildError, PortInUseError, ServerStartError

# --------------------------------------------------------------------------- image tags


def _recipe(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


RECIPE = {"Dockerfile": "FROM debian:bookworm-slim\nCOPY conf/main.cf /etc/x\n", "conf/main.cf": "a = 1\n"}


def test_tag_is_stable_and_shaped(tmp_path: Path) -> None:
    folder = _recipe(tmp_path / "a", RECIPE)
    tag = runtime.image_tag("postfix", folder, ["sha256:base"])
    assert re.fullmatch(r"mailtls-postfix:[0-9a-f]{12}", tag)
    assert runtime.image_tag("postfix", folder, ["sha256:base"]) == tag


def test_tag_ignores_creation_order_and_location(tmp_path: Path) -> None:
    first = _recipe(tmp_path / "first", RECIPE)
    second = _recipe(tmp_path / "second", dict(reversed(list(RECIPE.items()))))
    assert runtime.image_tag("postfix", first, ["b"]) == runtime.image_tag("postfix", second, ["b"])


@pytest.mark.parametrize(
    "change",
    ["content", "rename", "new-file", "exec-bit", "base-id"],
)
def test_tag_changes_with_any_input(tmp_path: Path, change: str) -> None:
    folder = _recipe(tmp_path / "r", RECIPE)
    before = runtime.image_tag("postfix", folder, ["sha256:base"])
    base = ["sha256:base"]
    if change == "content":
        (folder / "conf/main.cf").write_text("a = 2\n")
    elif change == "rename":
        (folder / "conf/main.cf").rename(folder / "conf/other.cf")
    elif change == "new-file":
        (folder / "entry.sh").write_text("")
    elif change == "exec-bit":
        (folder / "conf/main.cf").chmod(0o755)
    else:
        base = ["sha256:other"]
    assert runtime.image_tag("postfix", folder, base) != before


def test_tag_ignores_bytecode_caches(tmp_path: Path) -> None:
    folder = _recipe(tmp_path / "r", RECIPE)
    before = runtime.image_tag("james", folder, [])
    _recipe(folder, {"__pycache__/x.cpython-311.pyc": "junk", "tool.pyc": "junk"})
    assert runtime.image_tag("james", folder, []) == before


def test_tag_differs_per_server(tmp_path: Path) -> None:
    folder = _recipe(tmp_path / "r", RECIPE)
    assert (
        runtime.image_tag("postfix", folder, []).split(":")[1] == runtime.image_tag("dovecot", folder, []).split(":")[1]
    )
    assert runtime.image_tag("postfix", folder, []) != runtime.image_tag("dovecot", folder, [])


def test_base_images_of_a_dockerfile() -> None:
    text = (
        "# syntax comment\nFROM --platform=linux/amd64 debian:bookworm-slim AS build\nRUN make\n"
        "FROM build AS again\nfrom scratch\nFROM mailtls-extra:1\nFROM debian:bookworm-slim\n"
    )
    assert runtime._base_images(text) == ["debian:bookworm-slim", "mailtls-extra:1"]
    assert runtime._base_images("RUN echo FROM nowhere\n") == []


def test_containers_root_holds_every_recipe() -> None:
    # In a wheel the recipes live inside the package (hatch force-include); in a checkout beside it.
    package = Path(runtime.__file__).resolve().parent
    root = runtime.containers_root()
    assert root in (package / "containers", package.parent / "containers")
    assert (root / "base" / "make-base.sh").is_file()
    for server in ("postfix", "dovecot", "james"):
        assert (root / server / "Dockerfile").is_file(), server


def test_ensure_image_rejects_bad_names_and_missing_recipes(tmp_path: Path) -> None:
    with pytest.raises(ImageBuildError, match="invalid server name"):
        runtime.ensure_image("../etc", containers_dir=tmp_path)
    _recipe(tmp_path / "postfix", {"Dockerfile": "FROM debian:bookworm-slim\n"})
    with pytest.raises(ImageBuildError, match=r"no recipe for server 'dovecot'.*\['postfix'\]"):
        runtime.ensure_image("dovecot", containers_dir=tmp_path)


# --------------------------------------------------------------------------- image settings and sharing


def test_base_image_arg_is_resolved_and_overridden() -> None:
    text = "ARG MAILTLS_BASE_IMAGE=debian:bookworm-slim\nFROM ${MAILTLS_BASE_IMAGE} AS jre\nFROM jre\nFROM $OTHER\n"
    with pytest.raises(ImageBuildError, match="FROM \\$OTHER` names no image"):
        runtime._base_images(text)
    text = text.replace("FROM $OTHER\n", "")
    assert runtime._base_images(text) == ["debian:bookworm-slim"]
    assert runtime._base_images(text, {"MAILTLS_BASE_IMAGE": "reg.example:5000/debian:12", "UNUSED": "x"}) == [
        "reg.example:5000/debian:12"
    ]
    # An ARG after the first FROM belongs to a stage: a FROM cannot use it, so it is not passed.
    assert runtime._global_args("FROM a\nARG MAILTLS_BASE_IMAGE=b\n") == {}
    settings = runtime.ImageSettings(base="example.org/base:1")
    assert runtime._recipe_args(text, settings) == {"MAILTLS_BASE_IMAGE": "example.org/base:1"}
    assert runtime._recipe_args("FROM debian:bookworm-slim\n", settings) == {}


def test_every_server_recipe_starts_from_the_base_setting() -> None:
    # So MAILTLS_BASE_IMAGE / --base-image reaches every image, and the default stays debian:bookworm-slim.
    for server in ("postfix", "dovecot", "james"):
        text = (runtime.containers_root() / server / "Dockerfile").read_text()
        assert runtime._base_images(text) == [runtime.BASE_IMAGE], server
        args = runtime._recipe_args(text, runtime.ImageSettings(base="registry.example.org/mirror/debian:12"))
        assert runtime._base_images(text, args) == ["registry.example.org/mirror/debian:12"], server


@pytest.mark.parametrize(
    "ref",
    ["debian:bookworm-slim", "debian", "127.0.0.1:5000/library/debian:bookworm-slim", "reg.example/a/b_c:1.0-x",
     "localhost/base", "[::1]:5000/x:1", "debian@sha256:" + "0" * 64],
)  # fmt: skip
def test_image_references_accepted(ref: str) -> None:
    assert runtime.check_image_ref(f" {ref} ", "--base-image") == ref


@pytest.mark.parametrize("ref", ["", "Debian:12", "debian:", "debian bookworm", "http://x/debian", "-x:1"])
def test_image_references_rejected_in_one_line(ref: str) -> None:
    with pytest.raises(ImageBuildError) as info:
        runtime.check_image_ref(ref, "MAILTLS_BASE_IMAGE")
    assert str(info.value).startswith(f"MAILTLS_BASE_IMAGE={ref!r} is not an image reference") and "\n" not in str(
        info.value
    )


@pytest.mark.parametrize(
    ("text", "registry"),
    [("127.0.0.1:5000", "127.0.0.1:5000"), ("localhost:5000/", "localhost:5000"), ("localhost", "localhost"),
     ("registry.example.org/team/ci", "registry.example.org/team/ci"), ("[::1]:5000", "[::1]:5000"),
     ("docker.io/someone", "docker.io/someone")],
)  # fmt: skip
def test_registries_accepted(text: str, registry: str) -> None:
    assert runtime.check_registry(text, "--registry") == registry


def test_registries_rejected_say_how_to_write_them() -> None:
    with pytest.raises(ImageBuildError, match=r"without http:// \(the engine speaks HTTPS"):
        runtime.check_registry("http://127.0.0.1:5000", "--registry")
    # A bare name is a Docker Hub account to docker, not a registry host.
    for text in ("myregistry", "myregistry/team", "Reg.Example/UPPER", "127.0.0.1:5000/bad path"):
        with pytest.raises(ImageBuildError, match=r"is not a registry: write host\[:port\]\[/path\]"):
            runtime.check_registry(text, "--registry")


def test_shared_names_in_a_registry() -> None:
    assert (
        runtime.shared_ref("127.0.0.1:5000", "mailtls-postfix:0123456789ab")
        == "127.0.0.1:5000/mailtls-postfix:0123456789ab"
    )
    assert runtime.shared_ref("reg.example/team", "debian:bookworm-slim") == "reg.example/team/debian:bookworm-slim"
    assert runtime.shared_ref("reg.example", "docker.io/library/debian:12") == "reg.example/debian:12"
    assert runtime.shared_ref("reg.example", "mirror.corp:443/x/debian") == "reg.example/x/debian:latest"
    with pytest.raises(ImageBuildError, match="pinned by digest"):
        runtime.shared_ref("reg.example", "debian@sha256:" + "0" * 64)


def test_image_settings_from_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.BASE_ENV, raising=False)
    monkeypatch.delenv(runtime.REGISTRY_ENV, raising=False)
    assert runtime.image_settings() == runtime.ImageSettings(base="debian:bookworm-slim", registry=None, build=True)
    monkeypatch.setenv(runtime.BASE_ENV, "reg.example/debian:12")
    monkeypatch.setenv(runtime.REGISTRY_ENV, "127.0.0.1:5000")
    assert runtime.image_settings() == runtime.ImageSettings("reg.example/debian:12", "127.0.0.1:5000")
    with runtime.using_images(registry="reg.example/ci", build=False) as settings:
        assert settings == runtime.ImageSettings("reg.example/debian:12", "reg.example/ci", build=False)
        assert runtime.image_settings() is settings
        with runtime.using_images(base="debian:trixie-slim"):
            assert runtime.image_settings().base == "debian:trixie-slim"
            assert runtime.image_settings().registry == "127.0.0.1:5000"  # not inherited: the environment's
        assert runtime.image_settings() is settings
    assert runtime.image_settings().registry == "127.0.0.1:5000"
    monkeypatch.setenv(runtime.REGISTRY_ENV, "http://127.0.0.1:5000")
    with pytest.raises(ImageBuildError, match=f"^{runtime.REGISTRY_ENV}='http://127.0.0.1:5000': give the registry"):
        runtime.image_settings()
    with runtime.using_images(registry="127.0.0.1:5000"):  # a flag replaces a malformed environment value
        assert runtime.image_settings().registry == "127.0.0.1:5000"


def test_registry_failures_get_a_hint() -> None:
    assert "insecure-registries" in runtime._registry_hint(
        'Get "https://reg.example:5000/v2/": http: server gave HTTP response to HTTPS client', "reg.example:5000/t"
    )
    assert "`docker login reg.example`" in runtime._registry_hint("denied: requested access is denied", "reg.example")
    assert "answering at 127.0.0.1:1" in runtime._registry_hint(
        "dial tcp 127.0.0.1:1: connect: connection refused", "127.0.0.1:1"
    )
    assert runtime._registry_hint("something else", "r.example") == ""


def test_missing_debootstrap_says_why_the_pull_failed_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ImageBuildError) as info:
        runtime._debootstrap_binary("debian:bookworm-slim", "the engine could not pull it (no such host)")
    message = str(info.value)
    assert message.startswith("the base image debian:bookworm-slim is not in the engine, the engine could not pull it")
    assert "apt-get install debootstrap" in message and "registry-mirrors" in message and runtime.BASE_ENV in message


@pytest.mark.parametrize(
    ("argv", "expected"),
    [(["images", "pull"], "`mailtls images pull` needs a registry: --registry HOST[:PORT][/PATH]"),
     (["images", "push", "--registry", "https://reg.example"], "--registry='https://reg.example': give the registry"),
     (["images", "build", "--base-image", "Debian:12"], "--base-image='Debian:12' is not an image reference")],
)  # fmt: skip
def test_images_command_rejects_bad_settings_in_one_line(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_mailtls.cli import EXIT_USAGE, main

    monkeypatch.delenv(runtime.REGISTRY_ENV, raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # said before any engine is asked
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mailtls: error: {expected}") and "\n" not in err, err


# --------------------------------------------------------------------------- Debian mirror


def _apt(tmp_path: Path, sources_list: str = "", **parts: str) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text(sources_list)
    for name, text in parts.items():
        (apt / "sources.list.d" / name.replace("_", ".")).write_text(text)
    return apt


DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822(tmp_path: Path) -> None:
    apt = _apt(tmp_path, debian_sources=DEB822)
    assert runtime.find_debian_mirror(apt) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_list(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        "# deb http://old.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] https://mirror.example/debian/ bookworm main contrib\n",
    )
    assert runtime.find_debian_mirror(apt) == "https://mirror.example/debian"


def test_mirror_prefers_the_requested_suite(tmp_path: Path) -> None:
    apt = _apt(
        tmp_path,
        "deb http://trixie.example/debian trixie main\n",
        other_list="deb http://bookworm.example/debian bookworm main\n",
    )
    assert runtime.find_debian_mirror(apt, suite="bookworm") == "http://bookworm.example/debian"
    assert runtime.find_debian_mirror(apt, suite="trixie") == "http://trixie.example/debian"
    assert runtime.find_debian_mirror(apt, suite="forky") == "http://trixie.example/debian"  # any Debian archive


@pytest.mark.parametrize(
    "sources",
    [
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\nComponents: main\n",
        "Types: deb\nURIs: http://archive.ubuntu.example/ubuntu\nSuites: noble\nComponents: main\n",
        "Types: deb\nURIs: https://deb.nodesource.example/node_20.x\nSuites: nodistro\nComponents: main\n",
        "Types: deb\nEnabled: no\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n",
        "Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n",
        "Types: deb\nURIs: file:/srv/debian\nSuites: bookworm\nComponents: main\n",
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: contrib\n",
    ],
    ids=["security-only", "ubuntu", "third-party", "disabled", "source-only", "file-uri", "no-main"],
)
def test_no_mirror_from_unsuitable_sources(tmp_path: Path, sources: str) -> None:
    apt = _apt(tmp_path, debian_sources=sources)
    assert runtime.find_debian_mirror(apt) is None


def test_mirror_override_and_missing_mirror_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    apt = _apt(tmp_path, debian_sources=DEB822)
    monkeypatch.setenv(runtime.MIRROR_ENV, "http://override.example/debian/")
    assert runtime.debian_mirror(apt_dir=apt) == "http://override.example/debian"
    monkeypatch.delenv(runtime.MIRROR_ENV)
    assert runtime.debian_mirror(apt_dir=apt) == "http://mirror.example/debian"
    empty = _apt(tmp_path / "empty")
    with pytest.raises(ImageBuildError, match=runtime.MIRROR_ENV):
        runtime.debian_mirror(apt_dir=empty)


def test_suite_from_tag() -> None:
    assert runtime._suite_for("debian:bookworm-slim") == "bookworm"
    assert runtime._suite_for("debian:trixie") == "trixie"
    assert runtime._suite_for("my-base:latest") == "bookworm"


def test_missing_debootstrap_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.shutil, "which", lambda *a, **k: None)
    with pytest.raises(ImageBuildError, match="apt-get install debootstrap"):
        runtime._debootstrap_binary()


@pytest.mark.skipif(not Path("/usr/sbin/debootstrap").exists(), reason="debootstrap not installed here")
def test_debootstrap_found_outside_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert runtime._debootstrap_binary() == "/usr/sbin/debootstrap"


# --------------------------------------------------------------------------- labels, pids, ports


def test_labels_identify_process_session_and_host() -> None:
    labels = runtime.container_labels({"pytest-mailtls.server": "postfix"})
    assert labels["pytest-mailtls"] == "1"
    assert labels["pytest-mailtls.session"] == runtime.SESSION_ID
    assert re.fullmatch(r"[0-9a-f]{32}", runtime.SESSION_ID)
    assert labels["pytest-mailtls.pid"] == str(os.getpid())
    assert labels["pytest-mailtls.host"] == socket.gethostname()
    assert labels["pytest-mailtls.server"] == "postfix"
    assert labels["pytest-mailtls.pidstart"] == runtime._process_start(os.getpid()) != ""
    assert labels["pytest-mailtls.uid"] == str(os.getuid()) and labels["pytest-mailtls.user"]


def test_reserved_labels_cannot_be_overridden() -> None:
    with pytest.raises(ValueError, match="reserved"):
        runtime.container_labels({"pytest-mailtls.pid": "1"})


def test_pid_liveness() -> None:
    me = os.getpid()
    assert runtime.process_alive(me, runtime._process_start(me))
    assert runtime.process_alive(me, "")  # no start time recorded: trust the pid
    assert not runtime.process_alive(me, "1")  # same pid, other start time: a reused pid
    assert not runtime.process_alive(0, "") and not runtime.process_alive(-5, "")
    child = subprocess.Popen(["true"])
    child.wait()
    assert not runtime.process_alive(child.pid, "")


def test_a_zombie_counts_as_dead() -> None:
    """A child that exited but was not waited for (an xdist worker killed under a live controller) still has
    its pid, and kill(pid, 0) succeeds on it: the liveness check must read its state instead."""
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while (runtime._proc_stat(child.pid) or ["?"])[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        os.kill(child.pid, 0)  # the kernel still says the pid exists
        assert not runtime.process_alive(child.pid, runtime._process_start(child.pid))
    finally:
        child.wait()


def _owner(**changes: str) -> dict[str, str]:
    dead = subprocess.Popen(["true"])
    dead.wait()
    owner = {
        "session": "another-session",
        "pid": str(dead.pid),
        "pidstart": "",
        "uid": str(os.getuid()),
        "host": socket.gethostname(),
    }
    owner.update(changes)
    return owner


def test_orphans_are_only_dead_owners_of_this_user_on_this_host() -> None:
    me = str(os.getpid())
    assert runtime._orphan_owner(_owner()) is not None
    assert runtime._orphan_owner(_owner(pid=me)) is None  # alive
    assert runtime._orphan_owner(_owner(pid=me, pidstart="1")) is not None  # pid reused by another process
    assert runtime._orphan_owner(_owner(session=runtime.SESSION_ID)) is None  # this very process
    assert runtime._orphan_owner(_owner(host="elsewhere")) is None
    assert runtime._orphan_owner(_owner(uid=str(os.getuid() + 1))) is None  # another user's run: not ours
    assert runtime._orphan_owner(_owner(uid=str(os.getuid() + 1)), all_users=True) is not None
    no_uid = _owner()
    del no_uid["uid"]
    assert runtime._orphan_owner(no_uid) is None  # too old to say whose: left alone
    assert runtime._orphan_owner(_owner(pid="x")) is None


# --------------------------------------------------------------------------- registered temp dirs


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A system temp dir of the test's own, so the index and `mailtls-*` scan see only this test's dirs."""
    root = tmp_path / "systmp"
    root.mkdir()
    monkeypatch.setattr(runtime.tempfile, "gettempdir", lambda: str(root))
    return root


def test_a_registered_dir_names_its_owner_and_goes_with_it(private_tmp: Path) -> None:
    work = private_tmp / "mailtls-run"
    work.mkdir()
    runtime.register_dir(work, remove_at_exit=True)
    marker = json.loads((work / runtime.DIR_MARKER).read_text())
    assert marker["pid"] == str(os.getpid()) and marker["session"] == runtime.SESSION_ID
    assert marker["uid"] == str(os.getuid()) and marker["host"] == socket.gethostname()
    assert marker["pidstart"] == runtime._process_start(os.getpid()) and marker["path"] == str(work.resolve())
    assert (work / runtime.DIR_MARKER).stat().st_mode & 0o777 == 0o600
    index = runtime._index_dir(create=False)
    assert index is not None and index.stat().st_mode & 0o777 == 0o700 and len(list(index.iterdir())) == 1
    assert runtime._reap_dirs(lambda line: None) == []  # its owner (this process) is alive
    runtime.register_dir(work)  # a second user of the same dir
    runtime.release_dir(work)
    assert work.exists()
    runtime.release_dir(work)  # the last one: remove_at_exit deletes it
    assert not work.exists() and list(index.iterdir()) == []


def test_released_dir_that_is_kept_loses_its_marker(private_tmp: Path) -> None:
    kept = private_tmp / "kept"
    kept.mkdir()
    runtime.register_dir(kept)
    runtime.release_dir(kept)
    assert kept.exists() and not (kept / runtime.DIR_MARKER).exists()


def _dead_dir(root: Path, name: str, **owner: str) -> Path:
    """A dir registered by a process that has died, as a SIGKILLed run leaves it."""
    folder = root / name
    (folder / "pki").mkdir(parents=True)
    (folder / "pki" / "key.pem").write_text("secret")
    record = {**_owner(**owner), "path": str(folder.resolve())}
    (folder / runtime.DIR_MARKER).write_text(json.dumps(record))
    index = runtime._index_dir(create=True)
    assert index is not None
    runtime._index_entry(index, folder.resolve()).write_text(json.dumps(record))
    return folder


def test_the_reaper_removes_dirs_of_dead_runs_of_this_user_only(private_tmp: Path) -> None:
    elsewhere = private_tmp / "pytest-of-me" / "pytest-7"  # a pytest basetemp, found through the index
    elsewhere.mkdir(parents=True)
    dead = _dead_dir(private_tmp, "mailtls-dead")
    indexed = _dead_dir(elsewhere, "mailtls-servers0")
    other_user = _dead_dir(private_tmp, "mailtls-other", uid=str(os.getuid() + 1))
    other_host = _dead_dir(private_tmp, "mailtls-host", host="elsewhere")
    alive = _dead_dir(private_tmp, "mailtls-alive", pid=str(os.getpid()), pidstart=runtime._process_start(os.getpid()))
    unmarked = private_tmp / "mailtls-unmarked"
    unmarked.mkdir()
    lines: list[str] = []
    removed = runtime._reap_dirs(lines.append)
    assert sorted(removed) == sorted([str(dead.resolve()), str(indexed.resolve())])
    assert not dead.exists() and not indexed.exists()
    assert other_user.exists() and other_host.exists() and alive.exists() and unmarked.exists()
    assert len(lines) == 2 and "is gone" in lines[0]


def test_the_reaper_trusts_no_marker_that_names_another_dir(private_tmp: Path) -> None:
    victim = private_tmp / "precious"
    victim.mkdir()
    decoy = _dead_dir(private_tmp, "mailtls-decoy")
    record = json.loads((decoy / runtime.DIR_MARKER).read_text())
    (victim / runtime.DIR_MARKER).write_text(json.dumps(record))  # a copy claims "path": decoy
    index = runtime._index_dir(create=False)
    assert index is not None
    runtime._index_entry(index, victim.resolve()).write_text(json.dumps({**record, "path": str(victim)}))
    runtime._reap_dirs(lambda line: None)
    assert victim.exists() and not decoy.exists()


def test_an_index_that_is_not_ours_is_ignored(private_tmp: Path) -> None:
    index = private_tmp / f"pytest-mailtls-dirs-{os.getuid()}"
    index.mkdir(mode=0o777)
    index.chmod(0o777)  # writable by anyone: entries there could name any dir
    assert runtime._index_dir(create=False) is None


# --------------------------------------------------------------------------- signals during teardown


def test_signals_are_held_during_a_teardown_and_acted_on_after() -> None:
    said: list[str] = []
    previous = signal.getsignal(signal.SIGINT)
    done = []
    with pytest.raises(KeyboardInterrupt), runtime.signals_deferred(said.append):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with runtime.signals_deferred(said.append):  # nested: the outer one holds
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        done.append("teardown finished")
    assert done == ["teardown finished"]  # the Ctrl-Cs did not cut it short
    assert len(said) == 2 and "still removing" in said[0]
    assert signal.getsignal(signal.SIGINT) is previous


def test_published_ports_are_read_from_inspect_data() -> None:
    attrs = {
        "NetworkSettings": {
            "Ports": {
                "25/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}],
                "143/tcp": [{"HostIp": "0.0.0.0", "HostPort": "49154"}],
                "587/tcp": None,
            }
        }
    }
    assert runtime._published(attrs, [25, 143, 587, 993]) == {25: 49153}


def test_free_ports_are_distinct_and_bindable() -> None:
    ports = runtime.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_port_clash_is_both_start_and_port_error() -> None:
    err = runtime.PortClashError("taken", "log line")
    assert isinstance(err, ServerStartError)
    assert isinstance(err, PortInUseError)
    assert err.log == "log line"


# --------------------------------------------------------------------------- engine messages


@pytest.fixture
def fresh_engine_state(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(runtime, "_clients", {})
    runtime.engine_problem.cache_clear()
    yield
    runtime.engine_problem.cache_clear()


@pytest.mark.usefixtures("fresh_engine_state")
def test_no_engine_message_says_where_and_how(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    sock = tmp_path / "nothing.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")
    with pytest.raises(EngineUnavailable) as info:
        runtime.docker_client()
    message = str(info.value)
    assert f"DOCKER_HOST=unix://{sock}" in message
    assert "dockerd" in message and "bash .ci/run" in message and "--mailtls-servers embedded" in message
    problem = runtime.engine_problem()
    assert problem is not None and str(sock) in problem
    monkeypatch.delenv("DOCKER_HOST")
    assert runtime.engine_problem() == problem  # cached for the process


@pytest.mark.usefixtures("fresh_engine_state")
def test_default_socket_named_when_docker_host_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert runtime._engine_location() == "unix:///var/run/docker.sock (DOCKER_HOST is unset)"
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert runtime._engine_location() == "DOCKER_HOST=tcp://127.0.0.1:1"


def test_permission_problem_gets_its_own_hint() -> None:
    assert "docker` group" in runtime._engine_hint("('Connection aborted.', PermissionError(13, 'Permission denied'))")
    assert "docker` group" not in runtime._engine_hint("Connection refused")


def test_import_needs_no_docker_and_missing_sdk_is_explained() -> None:
    code = (
        "import sys; sys.modules['docker'] = None\n"
        "import pytest_mailtls.runtime as rt\n"
        "try:\n    rt.docker_client()\nexcept rt.EngineUnavailable as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert "pip install docker" in out.stdout


def test_stop_all_without_containers_is_a_no_op() -> None:
    runtime.stop_all()
    assert runtime.running_containers() == []


@pytest.mark.parametrize(
    ("docker_host", "remote"),
    [
        ("", None),
        ("unix:///var/run/docker.sock", None),
        ("tcp://127.0.0.1:2375", None),
        ("tcp://localhost:2376", None),
        ("tcp://[::1]:2375", None),
        ("tcp://build-host.example:2376", "build-host.example"),
        ("ssh://me@box", "box"),
        ("tcp://10.0.0.5:2376", "10.0.0.5"),
        ("tcp://[2001:db8::5]:2376", "2001:db8::5"),
    ],
)
def test_remote_engines_are_recognised(docker_host: str, remote: str | None) -> None:
    assert runtime._remote_engine(docker_host) == remote


def test_a_remote_engine_copies_files_and_dials_and_publishes_on_its_host(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (runtime.COPY_ENV, runtime.ENGINE_HOST_ENV, runtime.PUBLISH_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert (runtime.copies_files(), runtime.engine_host(), runtime.publish_address()) == (
        False,
        "127.0.0.1",
        "127.0.0.1",
    )
    monkeypatch.setenv(runtime.COPY_ENV, "1")  # any engine can be told to copy; a local one still publishes here
    assert (runtime.copies_files(), runtime.publish_address()) == (True, "127.0.0.1")
    monkeypatch.delenv(runtime.COPY_ENV)
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.214.9.2:2375")
    assert runtime.remote_engine() == "10.214.9.2" and runtime.copies_files() and not runtime.sealed_routing()
    assert (runtime.engine_host(), runtime.publish_address()) == ("10.214.9.2", "10.214.9.2")
    monkeypatch.setenv(runtime.ENGINE_HOST_ENV, "engine.example")  # NAT: dial one name, publish on another address
    monkeypatch.setenv(runtime.PUBLISH_ENV, "0.0.0.0")
    assert (runtime.engine_host(), runtime.publish_address()) == ("engine.example", "0.0.0.0")
    monkeypatch.setenv(runtime.PUBLISH_ENV, "the-engine")
    with pytest.raises(EngineUnavailable, match=r"MAILTLS_PUBLISH_ADDRESS='the-engine' is not an IP address"):
        runtime.publish_address()


def test_an_unresolvable_remote_engine_host_says_which_setting_to_give(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(runtime.PUBLISH_ENV, raising=False)
    monkeypatch.delenv(runtime.ENGINE_HOST_ENV, raising=False)
    monkeypatch.setenv("DOCKER_HOST", "ssh://ci@no-such-host.invalid")
    with pytest.raises(EngineUnavailable, match=r"cannot resolve the remote engine's host 'no-such-host.invalid'"):
        runtime.publish_address()


def test_an_archive_keeps_modes_owners_and_times_and_a_pull_mirrors_the_container(tmp_path: Path) -> None:
    import io
    import tarfile

    from pytest_mailtls import transfer

    src = tmp_path / "etc"
    (src / "tls").mkdir(parents=True)
    key = src / "tls" / "key.pem"
    key.write_bytes(b"secret")
    key.chmod(0o600)
    os.utime(key, (1_000_000_000, 1_000_000_000))
    with tarfile.open(fileobj=io.BytesIO(transfer.archive(src, "/mailtls/etc"))) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert list(members)[:2] == ["mailtls", "mailtls/etc"] and members["mailtls"].mode == 0o755
    kept = members["mailtls/etc/tls/key.pem"]
    assert (kept.mode, kept.uid, kept.mtime, kept.size) == (0o600, os.getuid(), 1_000_000_000, 6)
    with tarfile.open(fileobj=io.BytesIO(transfer.archive(key, "/mailtls/etc/tls/key.pem", parents=False))) as tar:
        assert tar.getnames() == ["key.pem"]  # extracted in the parent that exists: nothing else touched
    with pytest.raises(ValueError, match="absolute and plain"):
        transfer.archive(src, "/mailtls/../etc")

    class Engine:  # get_archive as the docker SDK's low-level client answers it: a tar of the path, in chunks
        def get_archive(self, container: str, path: str) -> tuple[list[bytes], dict[str, object]]:
            out = io.BytesIO()
            with tarfile.open(fileobj=out, mode="w") as tar:
                for name, data in (("Maildir/new/1.eml", b"one"), ("Maildir/cur/2.eml", b"two")):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
            return [out.getvalue()], {}

    host = tmp_path / "Maildir"
    (host / "new").mkdir(parents=True)
    (host / "new" / "gone.eml").write_bytes(b"cleared in the container")
    transfer.pull(Engine(), "c0ffee", "/mailtls/mail/Maildir", host)
    assert sorted(str(p.relative_to(host)) for p in host.rglob("*") if p.is_file()) == ["cur/2.eml", "new/1.eml"]
    assert not list(tmp_path.glob(".mailtls-pull-*"))  # the scratch folder went


def test_a_volume_name_is_per_run_and_per_folder(tmp_path: Path) -> None:
    from pytest_mailtls import transfer

    one, two = transfer.volume_name("a" * 32, tmp_path / "x"), transfer.volume_name("a" * 32, tmp_path / "y")
    assert one != two and one.startswith("mailtls-vol-aaaaaaaaaaaa-")
    assert transfer.volume_name("b" * 32, tmp_path / "x") != one


def test_only_fresh_temp_dirs_are_registered_for_deletion_after_a_crash(private_tmp: Path, tmp_path: Path) -> None:
    """A dead run's dirs are deleted whole: a work dir or PKI dir the caller passes is registered only when
    it is a fresh dir inside the system temp dir, never the temp dir itself or a folder of the user's."""
    from pytest_mailtls import grid
    from pytest_mailtls.pki import SessionPKI

    assert grid._disposable_workdir(private_tmp / "fresh")
    (private_tmp / "empty").mkdir()
    assert grid._disposable_workdir(private_tmp / "empty")
    (private_tmp / "used").mkdir()
    (private_tmp / "used" / "notes.txt").write_text("mine")
    assert not grid._disposable_workdir(private_tmp / "used")
    assert not grid._disposable_workdir(private_tmp)  # the system temp dir itself
    assert not grid._disposable_workdir(Path("/"))
    assert not grid._disposable_workdir(tmp_path / "outside")  # not inside the (patched) system temp dir
    pki = SessionPKI(private_tmp / "pki")
    assert grid._disposable_pki(pki)
    (pki.directory / "thesis.tex").write_text("mine")
    assert not grid._disposable_pki(pki)


def test_image_locks_live_in_one_private_folder_not_loose_in_the_temp_dir(private_tmp: Path) -> None:
    lock = runtime._lock("image-postfix/odd name")
    folder = Path(lock.lock_file).parent
    assert folder == private_tmp / f"pytest-mailtls-locks-{os.getuid()}"
    assert Path(lock.lock_file).name == "image-postfix_odd_name.lock"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    with lock:
        assert sorted(p.name for p in private_tmp.iterdir()) == [folder.name]  # nothing loose beside it


# --------------------------------------------------------------------------- testcontainers


def test_ryuk_is_off_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    """testcontainers' reaper is an image from Docker Hub: off by default, the user's own choice kept."""
    from testcontainers.core.config import testcontainers_config

    monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", None)
    monkeypatch.setattr(testcontainers_config, "tc_properties", {})
    monkeypatch.delenv("TESTCONTAINERS_RYUK_DISABLED", raising=False)
    runtime._no_ryuk()
    assert testcontainers_config.ryuk_disabled is True
    monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", None)
    monkeypatch.setenv("TESTCONTAINERS_RYUK_DISABLED", "false")
    runtime._no_ryuk()
    assert testcontainers_config.ryuk_disabled is False
    monkeypatch.setattr(testcontainers_config, "_ryuk_disabled", None)
    monkeypatch.delenv("TESTCONTAINERS_RYUK_DISABLED")
    monkeypatch.setattr(testcontainers_config, "tc_properties", {"ryuk.disabled": "false"})
    runtime._no_ryuk()
    assert testcontainers_config.ryuk_disabled is False


def test_tc_host_is_where_published_ports_are_dialled(monkeypatch: pytest.MonkeyPatch) -> None:
    from testcontainers.core.config import testcontainers_config

    monkeypatch.delenv(runtime.ENGINE_HOST_ENV, raising=False)
    monkeypatch.setenv("DOCKER_HOST", "tcp://10.214.9.2:2375")
    monkeypatch.setattr(testcontainers_config, "tc_host_override", "engine.example")
    assert runtime.engine_host() == "engine.example"
    monkeypatch.setenv(runtime.ENGINE_HOST_ENV, "nat.example")  # ours wins
    assert runtime.engine_host() == "nat.example"


def test_the_current_docker_context_names_the_engine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without DOCKER_HOST, the engine of the current docker context (`docker context use`) is the one used,
    as testcontainers resolves it: a remote one there means copy mode and dialling its host."""
    import hashlib
    import json

    meta = tmp_path / "contexts" / "meta" / hashlib.sha256(b"build").hexdigest()
    meta.mkdir(parents=True)
    endpoint = {"Host": "tcp://10.214.7.2:2376", "SkipTLSVerify": False}
    (meta / "meta.json").write_text(json.dumps({"Name": "build", "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "build"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    for name in (runtime.COPY_ENV, runtime.ENGINE_HOST_ENV, runtime.PUBLISH_ENV):
        monkeypatch.delenv(name, raising=False)
    assert runtime.remote_engine() == "10.214.7.2" and runtime.copies_files()
    assert runtime._engine_location() == "tcp://10.214.7.2:2376 (docker context or tc.host)"
