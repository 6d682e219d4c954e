"""Command-line clients: a generic template, curl, openssl s_client, swaks and msmtp.

Each builds an argument vector (never a shell line) from the endpoint and its
profile, runs it with a deadline and reads the exit status and output.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import MailTLSError
from ..manifest import Endpoint
from ..oracle import ClientProfile
from ..pki import pkcs1_key_file
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
from .placeholders import PLACEHOLDERS

__all__ = [
    "CommandClient",
    "CurlClient",
    "OpenSSLClient",
    "SwaksClient",
    "MsmtpClient",
    "COMMAND_PROFILES",
    "PLACEHOLDERS",
    "TemplateError",
]

_ALL_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

COMMAND_PROFILES: dict[str, ClientProfile] = {
    # OpenSSL 3 at security level 2 sends TLSv1 in its range but cannot complete it: 1.2 and 1.3 are what works.
    "curl": ClientProfile("curl", family="curl", description="curl with --cacert and --ssl-reqd"),
    "openssl-s_client": ClientProfile(
        "openssl-s_client",
        family="openssl",
        scope="handshake",
        description="openssl s_client -verify_return_error -verify_hostname: the handshake alone",
    ),
    # swaks 20201014 verifies the chain (--tls-verify) but has no host name check (added in 20240103).
    "swaks": ClientProfile(
        "swaks", family="swaks", protocols=("smtp",), check_hostname=False, description="swaks --tls --tls-verify"
    ),
    # msmtp on Debian uses GnuTLS, whose NORMAL priorities still allow TLSv1 and TLSv1.1.
    "msmtp": ClientProfile(
        "msmtp", family="msmtp", protocols=("smtp",), versions=_ALL_VERSIONS, description="msmtp tls on, certcheck on"
    ),
}


class TemplateError(MailTLSError):
    """A command template is malformed or names an unknown placeholder."""


def _values(endpoint: Endpoint) -> dict[str, str]:
    return {
        "host": endpoint.host,
        "port": str(endpoint.port),
        "server_hostname": endpoint.server_hostname,
        "url": endpoint.url,
        "ca_file": endpoint.ca_file,
        "protocol": endpoint.protocol,
        "mode": str(endpoint.mode),
        "user": endpoint.username,
        "password": endpoint.password,
        "address": endpoint.address,
        "client_cert": endpoint.client_cert_file or "",
        # PKCS#8 (BEGIN PRIVATE KEY), which every TLS stack loads; the PKCS#1 twin for clients that want it.
        "client_key": endpoint.client_key_file or "",
    }


class _Values(dict[str, str]):
    """Placeholder values; the PKCS#1 key is made only when a template asks for it."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(_values(endpoint))
        self.key_file = endpoint.client_key_file

    def __missing__(self, key: str) -> str:
        if key != "client_key_pkcs1":
            raise KeyError(key)
        self[key] = str(pkcs1_key_file(self.key_file)) if self.key_file else ""
        return self[key]


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


class CommandClient(Client):
    """Any program: exit status 0 means the session worked.

    ``template`` is split like a shell line (no shell runs) and each word is
    filled in from :data:`PLACEHOLDERS` (``{host}``, ``{port}``, ``{ca_file}``, ...).
    """

    def __init__(
        self, template: str, *, name: str = "command", profile: ClientProfile | None = None, timeout: float = 60.0
    ) -> None:
        try:
            self.words = shlex.split(template)
        except ValueError as exc:
            raise TemplateError(f"command template {template!r}: {exc}") from None
        if not self.words:
            raise TemplateError("the command template is empty")
        fields = {f for w in self.words for f in re.findall(r"\{(\w*)[^}]*\}", w)}
        unknown = sorted(fields - set(PLACEHOLDERS))
        if unknown:
            raise TemplateError(
                f"command template names unknown placeholder(s) {', '.join(unknown)}; allowed: {', '.join(PLACEHOLDERS)}"
            )
        self.template = template
        self.name = name
        # Without a declared profile the oracle reads the client's capabilities from its own ClientHello.
        self.profile = profile or ClientProfile(name, family="command", description=template, declared=False)
        self.timeout = timeout

    def unavailable(self) -> str | None:
        return None if shutil.which(self.words[0]) else f"{self.words[0]!r} is not installed (not on PATH)"

    def argv(self, endpoint: Endpoint) -> list[str]:
        values = _Values(endpoint)
        return [w.format_map(values) for w in self.words]

    def run(self, endpoint: Endpoint, *, send: bool = True) -> ClientResult:
        argv = self.argv(endpoint)
        try:
            code, out, err, seconds = run_command(argv, timeout=self.timeout)
        except ClientUnavailable as exc:
            return ClientResult(ok=False, error_text=str(exc), exception_type="ClientUnavailable")
        transcript = mask_secrets(f"$ {shlex.join(argv)}\n{out}{err}", endpoint)
        error = "" if code == 0 else _tail(err + "\n" + out) or f"exit status {code}"
        return ClientResult(
            ok=code == 0,
            error_text=mask_secrets(error, endpoint),
            duration=seconds,
            transcript=transcript.strip(),
            exit_code=code,
        )


class _ToolClient(Client):
    """Shared run logic of the known command-line clients.

    A tool says how it is called (:meth:`argv`, or :meth:`command` when it needs more than an argument
    vector; :meth:`outgoing`, :meth:`stdin`) and how its output reads (:meth:`outcome`); :meth:`run` runs it
    and judges the result the same way for every tool.
    """

    program: str = ""
    #: Seconds the process gets beyond ``timeout`` (the tool's own deadline) before it is killed.
    grace: float = 5.0

    def __init__(self, profile: ClientProfile, *, timeout: float = 30.0) -> None:
        self.profile = profile
        self.name = profile.name
        self.timeout = timeout

    def unavailable(self) -> str | None:
        if shutil.which(self.program) is None:
            return f"{self.program!r} is not installed: apt-get install {self.program.split('-')[0]}"
        return None

    def argv(self, endpoint: Endpoint, message: OutgoingMessage | None = None) -> list[str]:
        """The argument vector for one session with ``endpoint`` (sending ``message``, if any)."""
        raise NotImplementedError

    @contextlib.contextmanager
    def command(self, endpoint: Endpoint, message: OutgoingMessage | None) -> Iterator[list[str]]:
        """The argument vector, valid while the block runs (a tool may need files that long)."""
        yield self.argv(endpoint, message)

    def outgoing(self, endpoint: Endpoint, send: bool) -> OutgoingMessage | None:
        """The message this run sends (``send``: whether the caller wants one sent)."""
        return OutgoingMessage.for_endpoint(endpoint, self.name) if send else None

    def stdin(self, endpoint: Endpoint, message: OutgoingMessage | None) -> bytes | None:
        """What the tool reads on its standard input: the message, where there is one."""
        return message.as_bytes() if message else None

    def outcome(self, code: int, out: str, err: str) -> tuple[str | None, str | None, str | None]:
        """The negotiated version and cipher the output names, and the lines that explain a failure
        (``None``: the output's tail)."""
        raise NotImplementedError

    def run(self, endpoint: Endpoint, *, send: bool = True) -> ClientResult:
        message = self.outgoing(endpoint, send)
        with self.command(endpoint, message) as argv:
            code, out, err, seconds = run_command(
                argv, stdin=self.stdin(endpoint, message), timeout=self.timeout + self.grace
            )
        version, cipher, error_lines = self.outcome(code, out, err)
        transcript = mask_secrets(f"$ {shlex.join(argv)}\n{out}\n{err}".strip(), endpoint)
        ok = code == 0
        error = ""
        if ok and message is not None:
            problem = wait_for_delivery(endpoint, message.message_id)
            if problem is not None:
                ok, error = False, problem
        elif not ok:
            error = error_lines if error_lines is not None else _tail(err + "\n" + out)
            error = error or f"exit status {code}"
        tls = version is not None or (None if not ok and version is None else False)
        return ClientResult(
            ok=ok,
            error_text=mask_secrets(error, endpoint),
            negotiated_version=version,
            cipher=cipher,
            duration=seconds,
            transcript=transcript[-20000:],
            tls=tls,
            exit_code=code,
        )


# --- curl -----------------------------------------------------------------------

_CURL_VERSION_FLAG = {"TLSv1": "--tlsv1.0", "TLSv1.1": "--tlsv1.1", "TLSv1.2": "--tlsv1.2", "TLSv1.3": "--tlsv1.3"}
_CURL_MAX = {"TLSv1": "1.0", "TLSv1.1": "1.1", "TLSv1.2": "1.2", "TLSv1.3": "1.3"}


class CurlClient(_ToolClient):
    """curl speaking smtp(s)/imap(s)/pop3(s) URLs."""

    program = "curl"

    def argv(self, endpoint: Endpoint, message: OutgoingMessage | None = None) -> list[str]:
        p = self.profile
        argv = ["curl", "-sS", "-v", "--max-time", str(int(self.timeout))]
        argv += ["--resolve", f"{endpoint.server_hostname}:{endpoint.port}:{endpoint.host}"]
        scheme = endpoint.protocol + ("s" if endpoint.mode is Mode.IMPLICIT and p.implicit_tls else "")
        url = f"{scheme}://{endpoint.server_hostname}:{endpoint.port}"
        if endpoint.mode is not Mode.IMPLICIT:
            argv += {"required": ["--ssl-reqd"], "opportunistic": ["--ssl"], "never": []}[p.starttls]
        if p.verify:
            argv += ["--cacert", endpoint.ca_file] if p.trusts_ca else []
        else:
            argv += ["--insecure"]
        versions = p.effective_versions or p.versions
        argv += [_CURL_VERSION_FLAG[versions[0]], "--tls-max", _CURL_MAX[versions[-1]]]
        ciphers = p.ciphers or ("DEFAULT:@SECLEVEL=0" if p.legacy else None)
        if ciphers:
            argv += ["--ciphers", p.cipher_string() if p.ciphers else ciphers]
        if p.client_cert and endpoint.client_cert_file:
            argv += [
                "--cert",
                endpoint.client_cert_file,
                "--key",
                endpoint.client_key_file or endpoint.client_cert_file,
            ]
        if p.sends_credentials and (endpoint.protocol != "smtp" or endpoint.auth.mechanisms):
            argv += ["--user", f"{endpoint.username}:{endpoint.password}"]
        if endpoint.protocol == "smtp":
            if message is not None:
                argv += ["--mail-from", message.sender, "--mail-rcpt", message.recipient, "--upload-file", "-"]
            else:
                argv += ["-X", "NOOP"]
        else:
            url += "/"  # LIST after login
        return [*argv, url]

    def outgoing(self, endpoint: Endpoint, send: bool) -> OutgoingMessage | None:
        return super().outgoing(endpoint, send and endpoint.protocol == "smtp")

    def outcome(self, code: int, out: str, err: str) -> tuple[str | None, str | None, str | None]:
        found = re.search(r"SSL connection using (\S+) / (\S+)", err)
        # Keep what the client said and what the server answered; drop what curl sent (it carries credentials).
        said = [ln for ln in err.splitlines() if not ln.startswith(("> ", "} [", "{ [")) and ln.strip()]
        return *_groups(found), "\n".join(said[-40:])


# --- openssl s_client ---------------------------------------------------------------

_S_CLIENT_NO = {"TLSv1": "-no_tls1", "TLSv1.1": "-no_tls1_1", "TLSv1.2": "-no_tls1_2", "TLSv1.3": "-no_tls1_3"}
_S_CLIENT_BYE = {"smtp": "QUIT\n", "imap": "a1 LOGOUT\n", "pop3": "QUIT\n"}


class OpenSSLClient(_ToolClient):
    """``openssl s_client``: the TLS handshake (after STARTTLS where the port needs it) and nothing else."""

    program = "openssl"
    grace = 0.0  # s_client has no deadline of its own: ``timeout`` is the whole session's

    def argv(self, endpoint: Endpoint, message: OutgoingMessage | None = None) -> list[str]:
        p = self.profile
        argv = ["openssl", "s_client", "-connect", f"{endpoint.host}:{endpoint.port}", "-brief"]
        argv += ["-servername", endpoint.server_hostname]
        if p.verify:
            argv += ["-verify_return_error"]
            if p.check_hostname:
                argv += ["-verify_hostname", endpoint.server_hostname]
            if p.trusts_ca:
                argv += ["-CAfile", endpoint.ca_file]
        if endpoint.mode is not Mode.IMPLICIT or not p.implicit_tls:
            argv += ["-starttls", endpoint.protocol]
        offered = p.effective_versions or p.versions
        argv += [flag for v, flag in _S_CLIENT_NO.items() if v not in offered]
        ciphers = p.cipher_string() if p.ciphers else ("DEFAULT:@SECLEVEL=0" if p.legacy else None)
        if ciphers:
            argv += ["-cipher", ciphers]
        if p.client_cert and endpoint.client_cert_file:
            argv += ["-cert", endpoint.client_cert_file, "-key", endpoint.client_key_file or endpoint.client_cert_file]
        return argv

    def outgoing(self, endpoint: Endpoint, send: bool) -> OutgoingMessage | None:
        return None  # the handshake alone

    def stdin(self, endpoint: Endpoint, message: OutgoingMessage | None) -> bytes | None:
        # One line for the server to answer: a TLS 1.3 client-certificate rejection arrives with the first read.
        return _S_CLIENT_BYE[endpoint.protocol].encode()

    def outcome(self, code: int, out: str, err: str) -> tuple[str | None, str | None, str | None]:
        version = re.search(r"Protocol version: (\S+)", err)
        cipher = re.search(r"Ciphersuite: (\S+)", err)
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("Requested Signature", "Peer "))]
        return version.group(1) if version else None, cipher.group(1) if cipher else None, "\n".join(lines[-30:])


# --- swaks --------------------------------------------------------------------------

_SWAKS_PROTOCOLS = {"TLSv1": "tlsv1", "TLSv1.1": "tlsv1_1", "TLSv1.2": "tlsv1_2", "TLSv1.3": "tlsv1_3"}


class SwaksClient(_ToolClient):
    """swaks: one SMTP transaction, STARTTLS or implicit TLS, AUTH where the cell offers it."""

    program = "swaks"

    def argv(self, endpoint: Endpoint, message: OutgoingMessage | None = None) -> list[str]:
        p = self.profile
        argv = ["swaks", "--server", endpoint.host, "--port", str(endpoint.port), "--timeout", str(int(self.timeout))]
        argv += ["--helo", "mailtls.client", "--to", endpoint.address, "--from", endpoint.address]
        if endpoint.mode is Mode.IMPLICIT and p.implicit_tls:
            argv += ["--tls-on-connect"]
        else:
            argv += {"required": ["--tls"], "opportunistic": ["--tls-optional-strict"], "never": []}[p.starttls]
        argv += ["--tls-sni", endpoint.server_hostname]
        if p.verify:
            argv += ["--tls-verify"] + (["--tls-ca-path", endpoint.ca_file] if p.trusts_ca else [])
        offered = p.effective_versions or p.versions
        argv += ["--tls-protocol", ",".join(_SWAKS_PROTOCOLS[v] for v in offered)]
        ciphers = p.cipher_string() if p.ciphers else ("DEFAULT:@SECLEVEL=0" if p.legacy else None)
        if ciphers:
            argv += ["--tls-cipher", ciphers]
        if p.client_cert and endpoint.client_cert_file:
            argv += ["--tls-cert", endpoint.client_cert_file, "--tls-key", endpoint.client_key_file or ""]
        auth = p.sends_credentials and bool(endpoint.auth.mechanisms)
        if auth:
            argv += ["--auth", "--auth-user", endpoint.username, "--auth-password", endpoint.password]
        if message is not None:
            argv += ["--header", f"Subject: {message.subject}", "--header", f"Message-Id: {message.message_id}"]
        else:
            argv += ["--quit-after", "AUTH" if auth else "EHLO"]
        return argv

    def stdin(self, endpoint: Endpoint, message: OutgoingMessage | None) -> bytes | None:
        return None  # swaks writes the message itself (its headers come from the arguments)

    def outcome(self, code: int, out: str, err: str) -> tuple[str | None, str | None, str | None]:
        found = re.search(r"TLS started with cipher (TLSv[\d.]+):([^:\s]+)", out + err)
        # Keep swaks' own remarks (===, ***) and the server's replies (<-, <~, <**); drop what it sent.
        said = [ln for ln in (out + "\n" + err).splitlines() if ln.lstrip().startswith(("***", "<", "==="))]
        return *_groups(found), "\n".join(said[-30:]) + f"\nswaks exit status {code}"


# --- msmtp --------------------------------------------------------------------------

_GNUTLS_VERSIONS = {"TLSv1": "TLS1.0", "TLSv1.1": "TLS1.1", "TLSv1.2": "TLS1.2", "TLSv1.3": "TLS1.3"}


class MsmtpClient(_ToolClient):
    """msmtp (GnuTLS): an account written to a private config file, the message on stdin."""

    program = "msmtp"

    def config(self, endpoint: Endpoint) -> str:
        p = self.profile
        implicit = endpoint.mode is Mode.IMPLICIT and p.implicit_tls
        tls = implicit or p.starttls != "never"
        lines = [
            "account default",
            f"host {endpoint.host}",
            f"port {endpoint.port}",
            f"from {endpoint.address}",
            f"tls {'on' if tls else 'off'}",
            f"tls_starttls {'off' if implicit else 'on'}",
            f"tls_certcheck {'on' if p.verify else 'off'}",
            f"tls_host_override {endpoint.server_hostname}",
            "timeout 20",
        ]
        if p.verify and p.trusts_ca:
            lines.append(f"tls_trust_file {endpoint.ca_file}")
        elif p.verify:
            lines.append("tls_trust_file system")
        if p.versions != _ALL_VERSIONS:
            allowed = ":".join(f"+VERS-{_GNUTLS_VERSIONS[v]}" for v in p.effective_versions or p.versions)
            lines.append(f"tls_priorities NORMAL:-VERS-ALL:{allowed}")
        if p.client_cert and endpoint.client_cert_file:
            lines += [f"tls_cert_file {endpoint.client_cert_file}", f"tls_key_file {endpoint.client_key_file}"]
        if p.sends_credentials and endpoint.auth.mechanisms:
            lines += ["auth on", f"user {endpoint.username}", f"password {endpoint.password}"]
        else:
            lines.append("auth off")
        return "\n".join(lines) + "\n"

    @contextlib.contextmanager
    def command(self, endpoint: Endpoint, message: OutgoingMessage | None) -> Iterator[list[str]]:
        """msmtp's arguments, with the account in a private config file that lives as long as the block."""
        fd, path = tempfile.mkstemp(prefix="mailtls-msmtp-", suffix=".conf")
        try:
            with os.fdopen(fd, "w") as fh:  # mkstemp makes it 0600, which msmtp insists on
                fh.write(self.config(endpoint))
            argv = ["msmtp", "-C", path, "-a", "default", "--debug"]
            yield argv + ([endpoint.address] if message is not None else ["--serverinfo"])
        finally:
            Path(path).unlink(missing_ok=True)

    def outcome(self, code: int, out: str, err: str) -> tuple[str | None, str | None, str | None]:
        params = re.search(r"\((TLS1\.\d)\)-(\S+)", out + err)
        version = {v: k for k, v in _GNUTLS_VERSIONS.items()}.get(params.group(1)) if params else None
        said = [ln for ln in err.splitlines() if ln.startswith("msmtp:")]
        return version, params.group(2) if params else None, "\n".join(said) or None


def _groups(found: re.Match[str] | None) -> tuple[str | None, str | None]:
    """Groups 1 and 2 of a match, or two ``None``."""
    return (found.group(1), found.group(2)) if found else (None, None)
