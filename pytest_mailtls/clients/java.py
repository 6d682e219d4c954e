"""The Jakarta Mail client (Angus Mail 2.0.5 on the local JDK), driven by session properties.

The small Java program under ``clients/java/`` is built once per content hash
with ``mvn -q package`` into a user cache directory (dependencies from Maven
Central through the machine's own Maven settings). Each run writes a request
file of ``mail.*`` session properties. By default one long-lived JVM per client
object (``MailTlsClient --batch``, started on the first run) takes the request
paths on stdin and answers one JSON line each, so a cell costs no JVM start; a
JVM that dies is restarted once, then the client falls back to one JVM per cell
(also forced by ``PYTEST_MAILTLS_JAVA_BATCH=0``). A job past its deadline kills
the JVM; the next run starts a new one.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Any

from ..backends.base import Progress, no_progress
from ..errors import MailTLSError
from ..manifest import Endpoint
from ..oracle import ClientProfile
from ..policy import Mode
from .base import (
    Client,
    ClientResult,
    ClientUnavailable,
    OutgoingMessage,
    mask_secrets,
    run_command,
    wait_for_delivery,
)

__all__ = [
    "JakartaMailClient",
    "JAVA_PROFILES",
    "JavaBuildError",
    "build_java_client",
    "java_cache_dir",
    "session_properties",
]

SOURCE_DIR = Path(__file__).parent / "java"
_JDK_DEFAULT_VERSIONS = ("TLSv1.2", "TLSv1.3")
# JDK 17's jdk.tls.disabledAlgorithms removes these even when a client enables them explicitly.
_JDK_DISABLED = ("TLSv1", "TLSv1.1")
_KEYSTORE_SECRET = "mailtls"

JAVA_PROFILES: dict[str, ClientProfile] = {
    "jakarta-mail": ClientProfile(
        "jakarta-mail",
        family="java",
        versions=_JDK_DEFAULT_VERSIONS,
        disabled_versions=_JDK_DISABLED,
        description="Angus Mail 2.0.5: ssl.enable on implicit ports, starttls.enable+required elsewhere, "
        "checkserveridentity=true, a truststore made from the session CA",
    ),
    "jakarta-mail-tls1": ClientProfile(
        "jakarta-mail-tls1",
        family="java",
        versions=("TLSv1",),
        disabled_versions=_JDK_DISABLED,
        description="behaves like javax.mail 1.4.5 (only TLSv1 when ssl.protocols was unset): "
        "mail.<proto>.ssl.protocols=TLSv1 on JDK 17",
    ),
    "jakarta-mail-unsafe": ClientProfile(
        "jakarta-mail-unsafe",
        family="java",
        versions=_JDK_DEFAULT_VERSIONS,
        disabled_versions=_JDK_DISABLED,
        verify=False,
        check_hostname=False,
        description="mail.<proto>.ssl.trust=* and checkserveridentity=false: must be caught",
    ),
}


class JavaBuildError(MailTLSError):
    """Maven could not build the Java client."""


def java_cache_dir() -> Path:
    """Where built clients live: ``$XDG_CACHE_HOME/pytest-mailtls`` (default ``~/.cache/pytest-mailtls``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pytest-mailtls"


def _content_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "target" not in p.relative_to(folder).parts):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _missing_tools(*tools: str) -> str | None:
    missing = [t for t in tools if shutil.which(t) is None]
    if not missing:
        return None
    return (
        f"the Jakarta Mail client needs {' and '.join(missing)}: "
        "apt-get install openjdk-17-jdk-headless maven (Java 17+ and Maven 3)"
    )


def build_java_client(*, progress: Progress = no_progress, cache_dir: Path | None = None) -> Path:
    """The built client's ``target`` folder (``mailtls-client.jar`` + ``lib/``), building it on first use."""
    digest = _content_hash(SOURCE_DIR)
    root = (cache_dir or java_cache_dir()) / "java-client"
    target = root / digest / "target"
    if (target / "mailtls-client.jar").is_file() and (target / "lib").is_dir():
        return target
    problem = _missing_tools("java", "javac", "mvn")
    if problem is not None:
        raise ClientUnavailable(problem)
    root.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(root / f"{digest}.lock"), timeout=600):
        if (target / "mailtls-client.jar").is_file():
            return target  # another process built it meanwhile
        progress(f"building the Jakarta Mail client with Maven (once, into {root / digest})")
        work = Path(tempfile.mkdtemp(prefix=f"{digest}-", dir=root))
        try:
            shutil.copy2(SOURCE_DIR / "pom.xml", work / "pom.xml")
            shutil.copytree(SOURCE_DIR / "src", work / "src")
            try:
                proc = subprocess.run(
                    ["mvn", "-q", "-B", "package"], cwd=work, capture_output=True, text=True, timeout=900
                )
            except subprocess.TimeoutExpired:
                raise JavaBuildError(f"mvn package did not finish within 15 minutes in {work}") from None
            if proc.returncode != 0:
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
                raise JavaBuildError(
                    f"mvn -q package failed (exit {proc.returncode}) in {work}; Maven Central must be reachable "
                    f"(check ~/.m2/settings.xml or /etc/maven/settings.xml):\n{tail}"
                )
            if (root / digest).exists():  # a half-built folder from an interrupted run
                shutil.rmtree(root / digest)
            os.replace(work, root / digest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def session_properties(profile: ClientProfile, endpoint: Endpoint) -> dict[str, str]:
    """The ``mail.*`` session properties the profile stands for on ``endpoint``."""
    prefix = f"mail.{endpoint.protocol}"
    props = {
        f"{prefix}.connectiontimeout": "10000",
        f"{prefix}.timeout": "10000",
        # Angus otherwise retries a failed handshake with the JDK's default factory and reports that error instead.
        f"{prefix}.socketFactory.fallback": "false",
        f"{prefix}.ssl.checkserveridentity": str(profile.check_hostname and profile.verify).lower(),
    }
    if endpoint.mode is Mode.IMPLICIT and profile.implicit_tls:
        props[f"{prefix}.ssl.enable"] = "true"
    elif profile.starttls != "never":
        props[f"{prefix}.starttls.enable"] = "true"
        if profile.starttls == "required":
            props[f"{prefix}.starttls.required"] = "true"
    if tuple(profile.versions) != _JDK_DEFAULT_VERSIONS:
        props[f"{prefix}.ssl.protocols"] = " ".join(profile.versions)
    if profile.ciphers:
        props[f"{prefix}.ssl.ciphersuites"] = " ".join(profile.ciphers.replace(",", " ").split())
    if not profile.verify:
        props[f"{prefix}.ssl.trust"] = "*"
    if endpoint.protocol == "smtp":
        props["mail.smtp.auth"] = str(profile.sends_credentials).lower()
        props["mail.smtp.localhost"] = "mailtls.client"
    return props


class _BatchDied(Exception):
    """The batch JVM exited (or could not start) before answering."""


class _BatchTimeout(Exception):
    """The batch JVM did not answer a job within its deadline."""


def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    # A thread per JVM so that a job can wait for its answer with a deadline; None marks end of output.
    try:
        for line in stream:
            lines.put(line)
    except (OSError, ValueError):
        pass
    lines.put(None)


def _shutdown(proc: subprocess.Popen[str], log: IO[bytes], folder: Path) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()  # end of jobs: the JVM leaves its loop and exits
        proc.wait(timeout=2)
    except (OSError, ValueError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    log.close()
    shutil.rmtree(folder, ignore_errors=True)


class _BatchJVM:
    """One ``MailTlsClient --batch`` process: a request path per line in, one JSON result line out."""

    def __init__(self, classpath: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="mailtls-java-batch-"))
        # Rewritten before each job; the JVM re-reads it per lookup (address caching is off in batch mode).
        self.hosts = self.folder / "hosts"
        self.hosts.write_text("")
        self._log_path = self.folder / "stderr.log"
        log = self._log_path.open("wb")  # a file, not a pipe: a chatty JVM must never block on a full pipe
        try:
            self.proc = subprocess.Popen(
                [
                    "java",
                    f"-Djdk.net.hosts.file={self.hosts}",
                    "-XX:TieredStopAtLevel=1",  # many short sessions: C1 is warm quickly and costs little CPU
                    "-cp",
                    classpath,
                    "mailtls.MailTlsClient",
                    "--batch",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                encoding="utf-8",
                bufsize=1,
            )
        except OSError as exc:
            log.close()
            shutil.rmtree(self.folder, ignore_errors=True)
            raise _BatchDied(f"could not start java: {exc}") from None
        self._lines: queue.Queue[str | None] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=_pump, args=(self.proc.stdout, self._lines), daemon=True).start()
        # Stops the JVM at interpreter exit too; the finalizer holds no reference to self.
        self._finalizer = weakref.finalize(self, _shutdown, self.proc, log, self.folder)

    @property
    def pid(self) -> int:
        """The JVM's process id."""
        return self.proc.pid

    def job(self, request: Path, hosts: str, timeout: float) -> str:
        """The JSON answer to ``request``; raises ``_BatchTimeout`` or ``_BatchDied``."""
        self.hosts.write_text(hosts)
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(f"{request}\n")
            self.proc.stdin.flush()
        except (OSError, ValueError):
            raise _BatchDied(self._why_dead()) from None
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise _BatchTimeout from None
            if line is None:
                raise _BatchDied(self._why_dead())
            if line.startswith("{"):
                return line

    def _why_dead(self) -> str:
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        tail = self._log_path.read_text(errors="replace").strip()[-2000:] if self._log_path.exists() else ""
        return f"the batch JVM exited (status {code}): {tail or 'no output on stderr'}"

    def stop(self) -> None:
        """End the JVM (idempotent)."""
        self._finalizer()


class JakartaMailClient(Client):
    """Angus Mail driven by a request properties file, answered with one JSON line.

    ``batch`` (default: unless ``PYTEST_MAILTLS_JAVA_BATCH=0``) runs all cells through one long-lived JVM;
    call :meth:`close` when done (it also stops at interpreter exit).
    """

    _MAX_BATCH_STARTS = 2  # the first JVM and one restart after a crash; then one JVM per cell

    def __init__(
        self,
        profile: ClientProfile,
        *,
        timeout: float = 60.0,
        progress: Progress = no_progress,
        batch: bool | None = None,
    ) -> None:
        self.profile = profile
        self.name = profile.name
        self.timeout = timeout
        self.progress = progress
        self.batch = os.environ.get("PYTEST_MAILTLS_JAVA_BATCH", "1") != "0" if batch is None else batch
        self._target: Path | None = None
        self._jvm: _BatchJVM | None = None
        self._crashes = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        """Stop the batch JVM, if one runs; a later run starts a new one."""
        with self._lock:
            self._stop_jvm()

    def __enter__(self) -> JakartaMailClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _stop_jvm(self) -> None:
        if self._jvm is not None:
            self._jvm.stop()
            self._jvm = None

    def unavailable(self) -> str | None:
        problem = _missing_tools("java")
        if problem is not None:
            return problem
        try:
            self._build()
        except MailTLSError as exc:
            return str(exc)
        return None

    def _build(self) -> Path:
        if self._target is None:
            self._target = build_java_client(progress=self.progress)
        return self._target

    def run(self, endpoint: Endpoint, *, send: bool = True) -> ClientResult:
        try:
            target = self._build()
        except MailTLSError as exc:
            return ClientResult(ok=False, error_text=str(exc), exception_type=type(exc).__name__)
        message = OutgoingMessage.for_endpoint(endpoint, self.name) if send and endpoint.protocol == "smtp" else None
        with tempfile.TemporaryDirectory(prefix="mailtls-java-", ignore_cleanup_errors=True) as tmp:
            work = Path(tmp)
            request = self._request(endpoint, work, message)
            hosts = f"{endpoint.host} {endpoint.server_hostname}\n"
            if self.batch:
                with self._lock:
                    answer = self._run_batch(target, request, hosts)
                if answer is not None:
                    return self._result(endpoint, *answer, message)
            (work / "hosts").write_text(hosts)
            argv = [
                "java",
                f"-Djdk.net.hosts.file={work / 'hosts'}",  # dial the endpoint's IP, verify its host name
                "-XX:TieredStopAtLevel=1",  # one short session: start fast rather than run fast
                "-cp",
                f"{target / 'mailtls-client.jar'}{os.pathsep}{target / 'lib' / '*'}",
                "mailtls.MailTlsClient",
                str(request),
            ]
            try:
                code, out, err, seconds = run_command(argv, timeout=self.timeout)
            except ClientUnavailable as exc:
                return ClientResult(ok=False, error_text=str(exc), exception_type="ClientUnavailable")
        return self._result(endpoint, code, out, err, seconds, message)

    def _run_batch(self, target: Path, request: Path, hosts: str) -> tuple[int, str, str, float] | None:
        """``(code, out, err, seconds)`` as a per-cell JVM would give them, or ``None``: run this cell alone."""
        while self._crashes < self._MAX_BATCH_STARTS:
            start = time.monotonic()
            try:
                if self._jvm is None:
                    self._jvm = _BatchJVM(f"{target / 'mailtls-client.jar'}{os.pathsep}{target / 'lib' / '*'}")
                line = self._jvm.job(request, hosts, self.timeout)
            except _BatchTimeout:
                # A stuck session: kill the JVM with it (the next cell starts a new one), answer like a timed-out run.
                self._stop_jvm()
                note = f"\n[pytest-mailtls] timed out after {self.timeout:.0f} s"
                return 124, "", note, time.monotonic() - start
            except _BatchDied as exc:
                self._stop_jvm()
                self._crashes += 1
                self.progress(
                    f"{self.name}: {exc}; "
                    + ("restarting it" if self._crashes < self._MAX_BATCH_STARTS else "one JVM per cell")
                )
                continue
            try:
                ok = json.loads(line).get("ok") is True
            except json.JSONDecodeError:
                ok = False  # _result reports the unreadable answer
            return (0 if ok else 1), line, "", time.monotonic() - start
        self.batch = False
        return None

    def _request(self, endpoint: Endpoint, work: Path, message: OutgoingMessage | None) -> Path:
        p = self.profile
        fields: dict[str, str] = {
            "client.protocol": endpoint.protocol,
            "client.host": endpoint.server_hostname,
            "client.port": str(endpoint.port),
            "client.send": str(message is not None).lower(),
            **session_properties(p, endpoint),
        }
        if p.sends_credentials:
            fields["client.user"] = endpoint.username
            fields["client.password"] = endpoint.password
        if p.trusts_ca:
            fields["client.ca_file"] = endpoint.ca_file
        if message is not None:
            fields.update(
                {
                    "client.from": message.sender,
                    "client.to": message.recipient,
                    "client.subject": message.subject,
                    "client.message_id": message.message_id,
                }
            )
        if p.client_cert and endpoint.client_cert_file:
            fields["client.keystore"] = str(_keystore(endpoint, work / "client.p12"))
            fields["client.keystore_password"] = _KEYSTORE_SECRET
        path = work / "request.properties"
        path.write_text("".join(f"{_escape(k)}={_escape(v)}\n" for k, v in fields.items()), encoding="utf-8")
        return path

    def _result(
        self, endpoint: Endpoint, code: int, out: str, err: str, seconds: float, message: OutgoingMessage | None
    ) -> ClientResult:
        line = next((ln for ln in reversed(out.splitlines()) if ln.startswith("{")), "")
        try:
            data: dict[str, Any] = json.loads(line)
        except json.JSONDecodeError:
            text = (err or out).strip()[-2000:] or f"java exited with status {code} and printed nothing"
            return ClientResult(ok=False, error_text=text, exception_type="java", duration=seconds, exit_code=code)
        version, cipher = data.get("version"), data.get("cipher")
        transcript = mask_secrets("\n".join([*data.get("notes", []), str(data.get("transcript", ""))]), endpoint)
        ok = bool(data.get("ok"))
        error = ""
        if not ok:
            error = f"{data.get('exception')}: {data.get('error')}"
            error += "".join(f"\ncaused by {c}" for c in data.get("causes", []))
        elif message is not None:
            problem = wait_for_delivery(endpoint, message.message_id)
            if problem is not None:
                ok, error = False, problem
        return ClientResult(
            ok=ok,
            error_text=error,
            exception_type=str(data.get("exception") or ""),
            negotiated_version=version,
            cipher=cipher,
            duration=seconds,
            transcript=transcript[-20000:],
            tls=version is not None if ok or version else None,
            exit_code=code,
        )


def _keystore(endpoint: Endpoint, path: Path) -> Path:
    """A PKCS12 keystore with the endpoint's client certificate, for the JVM's KeyManager."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    assert endpoint.client_cert_file is not None
    certs = x509.load_pem_x509_certificates(Path(endpoint.client_cert_file).read_bytes())
    key = serialization.load_pem_private_key(
        Path(endpoint.client_key_file or endpoint.client_cert_file).read_bytes(), password=None
    )
    blob = pkcs12.serialize_key_and_certificates(
        b"client",
        key,  # type: ignore[arg-type]
        certs[0],
        certs[1:] or None,
        serialization.BestAvailableEncryption(_KEYSTORE_SECRET.encode()),
    )
    path.write_bytes(blob)
    return path


def _escape(text: str) -> str:
    # java.util.Properties syntax: backslash escapes, and keys/values on one line.
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace(":", "\\:").replace("=", "\\=")
