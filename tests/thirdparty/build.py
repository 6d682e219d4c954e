"""Build the third-party client drivers that ``tests/integration/test_thirdparty.py`` certifies.

Each driver is a tiny program of ours around a mail library the project did not write (nodemailer from
the npm registry, Go's net/smtp, the genuine javax.mail 1.4.5 jar from Maven Central, lettre from
crates.io). Every driver takes the same nine arguments::

    HOST PORT SERVER_NAME CA_FILE PROTOCOL MODE USER PASSWORD ADDRESS

exits 0 when the server accepted its message, and prints the library's own error text on stderr
otherwise, so that ``mailtls certify --command`` can run it.

A build goes to ``$XDG_CACHE_HOME/pytest-mailtls/thirdparty/<driver>-<hash>/`` (default ``~/.cache``),
keyed by a hash of the driver's sources and of the toolchain's version, under a file lock (pytest-xdist
workers share it). After the first fetch every build works offline (npm's cache, Go's module cache, the
local Maven repository, Cargo's registry cache).

    python tests/thirdparty/build.py [NAME ...]     # build, and print each client's command template
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ARGUMENTS", "CLIENTS", "BuildError", "ThirdPartyClient", "build", "build_all", "cache_root", "template"]

HERE = Path(__file__).resolve().parent

#: The arguments every driver takes, as ``mailtls certify --command`` placeholders.
ARGUMENTS = "{host} {port} {server_hostname} {ca_file} {protocol} {mode} {user} {password} {address}"

#: Seconds one build may take before it is abandoned (a cold Rust build is the longest, about a minute).
BUILD_TIMEOUT = 600.0


class BuildError(Exception):
    """A driver's build failed although its toolchain is installed: the message carries the tool's output."""


def cache_root() -> Path:
    """Where built drivers live: ``$XDG_CACHE_HOME/pytest-mailtls/thirdparty`` (default ``~/.cache``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-mailtls" / "thirdparty"


def _run(argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run one build step; its output, or :class:`BuildError` with the output's tail."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"{shlex.join(argv)} (in {cwd}) took more than {BUILD_TIMEOUT:.0f} s") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
        raise BuildError(
            f"{shlex.join(argv)} (in {cwd}) failed with exit status {proc.returncode} "
            f"after {time.monotonic() - started:.0f} s:\n{tail}"
        )
    return proc.stdout


def _version(argv: list[str]) -> str:
    """A toolchain's version line (part of the cache key: a new toolchain builds anew)."""
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return (proc.stdout + proc.stderr).strip().splitlines()[0] if (proc.stdout + proc.stderr).strip() else ""


@dataclass(frozen=True)
class ThirdPartyClient:
    """One client of the corpus: a driver built from ``source`` and how to run it.

    ``command`` maps the built folder to the words that come before :data:`ARGUMENTS` in the template.
    """

    name: str
    family: str
    library: str
    source: str
    tools: tuple[str, ...]
    install: str
    version_of: tuple[str, ...]
    builder: Callable[[Path, Path], None]
    command: Callable[[Path], list[str]]
    description: str = ""
    #: The oldest toolchain that builds it: (major, minor) read from ``version_of``'s first version number.
    min_version: tuple[int, int] = (0, 0)
    #: What the client speaks (``mailtls certify --protocols``) and the server the test certifies it on.
    protocols: tuple[str, ...] = ("smtp",)
    server: str = "postfix"

    def unavailable(self) -> str | None:
        """Why this client cannot be built here (a missing tool and how to install it), or ``None``."""
        missing = [t for t in self.tools if shutil.which(t) is None]
        if missing:
            return f"{self.name}: {', '.join(missing)} not found on PATH: {self.install}"
        line = _version(list(self.version_of))
        found = re.search(r"(\d+)\.(\d+)", line.replace("go version go", ""))
        if found and (int(found.group(1)), int(found.group(2))) < self.min_version:
            wanted = ".".join(map(str, self.min_version))
            return f"{self.name}: {line!r} is older than {wanted}: {self.install}"
        return None

    def key(self) -> str:
        """A hash of the driver's sources and of the toolchain's version."""
        digest = hashlib.sha256()
        folder = HERE / self.source
        for path in sorted(folder.rglob("*")):
            rel = path.relative_to(folder)
            if path.is_file() and rel.parts[0] not in ("node_modules", "target"):
                digest.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
        digest.update(_version(list(self.version_of)).encode())
        return digest.hexdigest()[:16]


def _copy_sources(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("node_modules", "target"), dirs_exist_ok=True)


def _build_node(src: Path, out: Path) -> None:
    _copy_sources(src, out)
    # `npm ci` installs exactly the lock file; --prefer-offline takes npm's cache without asking the registry.
    _run(["npm", "ci", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error"], cwd=out)


def _go_builder(binary: str) -> Callable[[Path, Path], None]:
    def build_go(src: Path, out: Path) -> None:
        # go.sum pins every module; after the first fetch they come from Go's module cache (offline).
        # GOTOOLCHAIN=local: never download a toolchain.
        _run(
            ["go", "build", "-trimpath", "-o", str(out / binary), "."],
            cwd=src,
            env={"GOTOOLCHAIN": "local", "GOWORK": "off", "GOFLAGS": "-buildvcs=false -mod=readonly"},
        )

    return build_go


def _build_java(src: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="mailtls-javaxmail-") as tmp:
        work = Path(tmp)
        _copy_sources(src, work)
        _run(["mvn", "-q", "-B", "package"], cwd=work)
        shutil.copy2(work / "target" / "javaxmail-driver.jar", out / "javaxmail-driver.jar")
        shutil.copytree(work / "target" / "lib", out / "lib")
    shutil.copy2(src / "legacy-tls.security", out / "legacy-tls.security")


def _build_rust(src: Path, out: Path) -> None:
    # One target folder for every version of the driver: a change to main.rs rebuilds only the driver.
    target = cache_root() / "cargo-target"
    _run(["cargo", "build", "--locked", "--target-dir", str(target)], cwd=src)
    shutil.copy2(target / "debug" / "mailtls-lettre", out / "mailtls-lettre")


def _java(out: Path, *extra: str) -> list[str]:
    return ["java", *extra, "-cp", f"{out / 'javaxmail-driver.jar'}:{out / 'lib'}/*", "MailTlsJavaxMail"]


_NODE = dict(
    family="node",
    library="nodemailer 10.6.0 on Node.js",
    source="node",
    tools=("node", "npm"),
    install="the machine's Node.js 20+ with npm (Debian bookworm's nodejs 18 is too old for nodemailer 10)",
    version_of=("node", "--version"),
    min_version=(20, 0),
    builder=_build_node,
)
_JAVA = dict(
    family="java",
    library="javax.mail 1.4.5 (Maven Central javax.mail:mail:1.4.5)",
    source="java",
    tools=("java", "javac", "mvn"),
    install="apt-get install openjdk-17-jdk-headless maven",
    version_of=("java", "-version"),
    min_version=(17, 0),
    builder=_build_java,
)

CLIENTS: dict[str, ThirdPartyClient] = {
    c.name: c
    for c in (
        ThirdPartyClient(
            name="nodemailer",
            command=lambda out: ["node", str(out / "send.js")],
            description="nodemailer's defaults: STARTTLS when offered, CA from file, servername",
            **_NODE,  # type: ignore[arg-type]
        ),
        ThirdPartyClient(
            name="nodemailer-ignoretls",
            command=lambda out: ["node", str(out / "send.js"), "--ignore-tls"],
            description="nodemailer with ignoreTLS: true (never STARTTLS, even when offered)",
            **_NODE,  # type: ignore[arg-type]
        ),
        ThirdPartyClient(
            name="go-net-smtp",
            family="go",
            library="Go net/smtp + crypto/tls (standard library)",
            source="go-smtp",
            tools=("go",),
            install="the machine's Go 1.22+ (Debian bookworm's golang-go 1.19 is too old: the driver uses tls.VersionName)",
            version_of=("go", "version"),
            min_version=(1, 22),
            builder=_go_builder("gosmtp"),
            command=lambda out: [str(out / "gosmtp")],
            description="smtp.SendMail's steps with tls.Config{RootCAs, ServerName} and smtp.PlainAuth",
        ),
        ThirdPartyClient(
            name="javax-mail-1.4.5",
            command=lambda out: _java(out),
            description="javax.mail 1.4.5 with mail.smtp.ssl.protocols unset (TLSv1 only) on JDK 17's defaults",
            **_JAVA,  # type: ignore[arg-type]
        ),
        ThirdPartyClient(
            name="javax-mail-1.4.5-oldjvm",
            command=lambda out: _java(out, f"-Djava.security.properties={out / 'legacy-tls.security'}"),
            description="the same on a JVM whose java.security still allows TLSv1 and TLSv1.1",
            **_JAVA,  # type: ignore[arg-type]
        ),
        ThirdPartyClient(
            name="lettre",
            family="rust",
            library="lettre 0.11.23 with rustls 0.23 (ring) from crates.io",
            source="rust",
            tools=("cargo",),
            install="rustup's cargo 1.85+ (Debian bookworm's cargo is too old for lettre 0.11.23)",
            version_of=("rustc", "--version"),
            min_version=(1, 85),
            builder=_build_rust,
            command=lambda out: [str(out / "mailtls-lettre")],
            description="SmtpTransport: Tls::Wrapper on implicit cells, Tls::Required elsewhere; only the session CA",
        ),
        ThirdPartyClient(
            name="go-imap",
            family="go",
            library="github.com/emersion/go-imap/v2 v2.0.0-beta.8 on Go crypto/tls (Go module proxy)",
            source="go-imap",
            tools=("go",),
            install="the machine's Go 1.22+ (Debian bookworm's golang-go 1.19 is too old)",
            version_of=("go", "version"),
            min_version=(1, 22),
            builder=_go_builder("goimap"),
            command=lambda out: [str(out / "goimap")],
            description="imapclient.DialTLS on implicit cells, DialStartTLS elsewhere; LOGIN, SELECT INBOX, LOGOUT",
            protocols=("imap",),
            server="dovecot",
        ),
    )
}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(name: str, *, progress: Callable[[str], None] | None = None) -> Path:
    """The built folder of client ``name`` (built now unless the cache has it).

    Raises :class:`KeyError` for an unknown name and :class:`BuildError` when the build fails; call
    :meth:`ThirdPartyClient.unavailable` first to skip cleanly where a toolchain is missing.
    """
    client = CLIENTS[name]
    root = cache_root()
    out = root / f"{client.source}-{client.key()}"
    if (out / ".built").exists():
        return out
    with _locked(root / f"{client.source}.lock"):
        if (out / ".built").exists():  # another worker built it while we waited
            return out
        started = time.monotonic()
        if progress:
            progress(f"building {client.source} ({client.library}) into {out}")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        try:
            client.builder(HERE / client.source, out)
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        (out / ".built").write_text(f"{time.monotonic() - started:.1f} s\n")
        if progress:
            progress(f"built {client.source} in {time.monotonic() - started:.1f} s")
    return out


def build_all(
    names: list[str] | None = None, *, progress: Callable[[str], None] | None = None
) -> dict[str, Path | str | BuildError]:
    """Build several clients at once (each toolchain in its own thread: most of a cold build is waiting on one
    compiler while the others could run). Per name: the built folder, why it is unavailable, or the error."""
    from concurrent.futures import ThreadPoolExecutor

    names = names or list(CLIENTS)
    results: dict[str, Path | str | BuildError] = {}
    todo = []
    for name in names:
        why = CLIENTS[name].unavailable()
        if why:
            results[name] = why
        else:
            todo.append(name)

    def one(name: str) -> Path | BuildError:
        try:
            return build(name, progress=progress)
        except BuildError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=4) as pool:
        for name, result in zip(todo, pool.map(one, todo), strict=True):
            results[name] = result
    return {name: results[name] for name in names}


def template(name: str, out: Path) -> str:
    """The ``mailtls certify --command`` template of client ``name`` built in ``out``."""
    return shlex.join(CLIENTS[name].command(out)) + " " + ARGUMENTS


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(CLIENTS)
    unknown = [n for n in names if n not in CLIENTS]
    if unknown:
        print(f"unknown client(s) {', '.join(unknown)}; known: {', '.join(CLIENTS)}", file=sys.stderr)
        return 2
    started = time.monotonic()
    status = 0
    for name, result in build_all(names, progress=lambda line: print(line, file=sys.stderr)).items():
        if isinstance(result, Path):
            print(f"{name}: {template(name, result)}")
        elif isinstance(result, BuildError):
            print(f"{name}: {result}", file=sys.stderr)
            status = 1
        else:
            print(f"skipped: {result}", file=sys.stderr)
    print(f"{time.monotonic() - started:.1f} s", file=sys.stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
