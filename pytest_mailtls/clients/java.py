"""The Jakarta Mail client (Angus Mail 2.0.5 on the local JDK), driven by session properties.

The small Java program under ``clients/java/`` is built once per content hash
with ``mvn -q package`` into a user cache directory (dependencies from Maven
Central through the machine's own Maven settings). Each run writes a request
file of ``mail.*`` session properties and starts one JVM.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

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


class JakartaMailClient(Client):
    """Angus Mail in a JVM per session; the request is a properties file, the answer one JSON line."""

    def __init__(self, profile: ClientProfile, *, timeout: float = 60.0, progress: Progress = no_progress) -> None:
        self.profile = profile
        self.name = profile.name
        self.timeout = timeout
        self.progress = progress
        self._target: Path | None = None

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
        with tempfile.TemporaryDirectory(prefix="mailtls-java-") as tmp:
            work = Path(tmp)
            request = self._request(endpoint, work, message)
            (work / "hosts").write_text(f"{endpoint.host} {endpoint.server_hostname}\n")
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
