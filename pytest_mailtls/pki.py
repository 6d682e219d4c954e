"""The session's throwaway PKI: a trustme CA plus the certificate faults trustme cannot make.

Everything is written under one directory (the session's temp dir) and made
lazily, once per profile. Valid certificates name ``server_hostname``
(``localhost`` by default), ``mail.mailtls.test`` and ``127.0.0.1``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import MailTLSError
from .policy import CertProfile

__all__ = [
    "CERT_FAULTS",
    "CertFault",
    "SessionPKI",
    "ServerCertFiles",
    "ClientCertFiles",
    "SERVER_NAMES",
    "WRONG_HOST",
    "PKCS1_KEY_NAME",
    "pkcs1_key_file",
    "session_intermediates",
]

#: Names every valid server certificate carries besides ``server_hostname``.
SERVER_NAMES = ("mail.mailtls.test", "127.0.0.1")
# RSA-2048 is the baseline (static-RSA ciphers and old clients need it); ECDSA is its own profile.
_RSA = trustme.KeyType.RSA

#: Files of a shared PKI (:meth:`SessionPKI.open_shared`): the CA's key, the lock, and the marker that
#: says a profile's files are complete.
CA_KEY_NAME = "ca-key.pem"
LOCK_NAME = ".lock"
MADE_MARKER = ".made"

#: The only name a ``wrong-host`` certificate carries.
WRONG_HOST = "wrong-host.mailtls.invalid"


@dataclass(frozen=True)
class CertFault:
    """What one certificate profile is, in one place: whether a verifying client accepts it, the failure
    class it must report otherwise, how the fault reads in a sentence, OpenSSL 3's verification error for
    it, and the highest OpenSSL security level at which a server can still present it. (How it is made is
    :meth:`SessionPKI._make_server`; what verify checks in the presented leaf is ``verify._cert_problems``.)
    """

    verifies: bool = False
    failure: str | None = None
    words: str = ""
    verify_errors: tuple[str, ...] = ()
    max_seclevel: int | None = None  # None: every level the policies use
    key_type: str = "rsa"
    #: The report's group for its cells (``policy.GROUPS``); empty: :attr:`report_group` decides.
    group: str = ""

    @property
    def report_group(self) -> str:
        """The group of the report's grid: :attr:`group` when set, else ``secure`` for a certificate that verifies,
        ``broken crypto`` for one a server can only present at a lowered OpenSSL security level (a weak key or
        signature), ``certificate validation`` for every other fault."""
        if self.group:
            return self.group
        if self.verifies:
            return "secure"
        return "broken crypto" if self.max_seclevel is not None else "certificate validation"


#: Every certificate profile's facts (checked by handshakes on OpenSSL 3.0; level 1 refuses SHA-1
#: signatures, level 2 also RSA keys under 2048 bits).
CERT_FAULTS: dict[CertProfile, CertFault] = {
    CertProfile.VALID: CertFault(verifies=True, words="a valid certificate"),
    CertProfile.ECDSA_P256: CertFault(verifies=True, words="a valid ECDSA P-256 certificate", key_type="ecdsa"),
    CertProfile.EXPIRED: CertFault(
        failure="certificate-expired", words="an expired certificate", verify_errors=("certificate has expired",)
    ),
    CertProfile.NOT_YET_VALID: CertFault(
        failure="certificate-not-yet-valid",
        words="a certificate that is not valid yet",
        verify_errors=("certificate is not yet valid",),
    ),
    CertProfile.WRONG_HOST: CertFault(
        failure="hostname-mismatch",
        words="a certificate for another host name",
        verify_errors=("Hostname mismatch", "IP address mismatch"),
    ),
    CertProfile.SELF_SIGNED: CertFault(
        failure="untrusted-certificate",
        words="a self-signed certificate",
        verify_errors=("self-signed certificate", "self signed certificate"),
    ),
    CertProfile.UNTRUSTED_CA: CertFault(
        failure="untrusted-certificate",
        words="a certificate from a CA the client does not trust",
        verify_errors=("unable to get local issuer certificate",),
    ),
    CertProfile.MISSING_INTERMEDIATE: CertFault(
        failure="incomplete-chain",
        words="its certificate without the intermediate CA",
        verify_errors=("unable to get local issuer certificate",),
    ),
    CertProfile.WEAK_RSA_1024: CertFault(
        failure="weak-key-or-signature",
        words="a certificate with a 1024-bit RSA key",
        verify_errors=("key too weak", "key too small"),
        max_seclevel=1,
    ),
    CertProfile.SHA1_SIGNATURE: CertFault(
        failure="weak-key-or-signature",
        words="a certificate signed with SHA-1",
        verify_errors=("digest algorithm too weak", "md too weak"),
        max_seclevel=0,
    ),
}


@dataclass(frozen=True)
class ServerCertFiles:
    """A server's key and the chain it presents (leaf first), as PEM files."""

    key_file: Path
    cert_file: Path

    @property
    def chain_file(self) -> Path:
        return self.cert_file


@dataclass(frozen=True)
class ClientCertFiles:
    """A client certificate for mutual TLS (chain PEM) and its key.

    ``key_file`` is PKCS#8 (``BEGIN PRIVATE KEY``), the form every TLS stack
    loads (Rust's native-tls and rustls-pemfile users take nothing else);
    ``key_pkcs1_file`` holds the same RSA key as PKCS#1 (``BEGIN RSA PRIVATE
    KEY``) for clients that want the traditional form.
    """

    key_file: Path
    cert_file: Path
    key_pkcs1_file: Path | None = None


class SessionPKI:
    """A CA trusted by clients, and server/client certificates for every profile.

    >>> pki = SessionPKI(tmp_path)
    >>> files = pki.server_files(CertProfile.EXPIRED)
    """

    def __init__(self, directory: str | Path, *, server_hostname: str = "localhost", shared: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        # Private: it holds every key of the session. Containers get copies (backends/container.copy_pki).
        self.directory.chmod(0o700)
        self.server_hostname = server_hostname
        self.ca_file = self.directory / "ca.pem"
        self._lock = threading.Lock()
        self._server: dict[CertProfile, ServerCertFiles] = {}
        self._clients: dict[str, ClientCertFiles] = {}
        # shared: several processes use this directory (the workers of a pytest-xdist run and the grid they
        # share). The first makes the CA and keeps its key beside it; the others load it; every certificate
        # is made once, under a file lock, and read back by the rest.
        self.shared = shared
        if not shared:
            self.ca = trustme.CA(organization_name="pytest-mailtls session CA", key_type=_RSA)
            self.ca.cert_pem.write_to_path(str(self.ca_file))
            return
        ca_key = self.directory / CA_KEY_NAME
        with self._file_lock():
            if ca_key.exists() and self.ca_file.exists():
                self.ca = trustme.CA.from_pem(self.ca_file.read_bytes(), ca_key.read_bytes())
            else:
                self.ca = trustme.CA(organization_name="pytest-mailtls session CA", key_type=_RSA)
                _write_private(ca_key, self.ca.private_key_pem.bytes())
                self.ca.cert_pem.write_to_path(str(self.ca_file))

    @classmethod
    def open_shared(cls, directory: str | Path, *, server_hostname: str = "localhost") -> SessionPKI:
        """The PKI in ``directory`` shared by several processes: made by the first, loaded by the others."""
        return cls(directory, server_hostname=server_hostname, shared=True)

    def _file_lock(self) -> contextlib.AbstractContextManager[object]:
        """Across processes for a shared PKI (certificates are made once), a no-op otherwise."""
        if not self.shared:
            return contextlib.nullcontext()
        import filelock

        return filelock.FileLock(str(self.directory / LOCK_NAME), mode=0o600)

    @property
    def client_ca_file(self) -> Path:
        """The CA servers trust for client certificates (the session CA)."""
        return self.ca_file

    def client_context(self) -> ssl.SSLContext:
        """A client ``ssl.SSLContext`` that trusts the session CA and checks host names."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def server_names(self) -> tuple[str, ...]:
        return (self.server_hostname, *SERVER_NAMES)

    # --- server certificates ---------------------------------------------------
    def server_files(self, profile: CertProfile | str) -> ServerCertFiles:
        """Key and presented chain for ``profile``, made on first use."""
        profile = CertProfile(profile)
        with self._lock:
            if profile not in self._server:
                with self._file_lock():
                    made = self.directory / str(profile) / MADE_MARKER
                    if self.shared and made.exists():  # another process of the run made it
                        folder = self.directory / str(profile)
                        self._server[profile] = ServerCertFiles(folder / "key.pem", folder / "chain.pem")
                    else:
                        self._server[profile] = self._make_server(profile)
                        if self.shared:
                            made.touch()
            return self._server[profile]

    def _make_server(self, profile: CertProfile) -> ServerCertFiles:
        now = dt.datetime.now(dt.UTC)
        names = self.server_names
        folder = self.directory / str(profile)
        folder.mkdir(exist_ok=True)
        key_file, cert_file = folder / "key.pem", folder / "chain.pem"
        match profile:
            case CertProfile.VALID:
                self._write_leaf(self.ca.issue_cert(*names, key_type=_RSA), folder)
            case CertProfile.ECDSA_P256:
                self._write_leaf(self.ca.issue_cert(*names, key_type=trustme.KeyType.ECDSA), folder)
            case CertProfile.EXPIRED:
                leaf = self.ca.issue_cert(
                    *names, key_type=_RSA, not_before=now - dt.timedelta(days=60), not_after=now - dt.timedelta(days=1)
                )
                self._write_leaf(leaf, folder)
            case CertProfile.NOT_YET_VALID:
                leaf = self.ca.issue_cert(
                    *names,
                    key_type=_RSA,
                    not_before=now + dt.timedelta(days=30),
                    not_after=now + dt.timedelta(days=400),
                )
                self._write_leaf(leaf, folder)
            case CertProfile.WRONG_HOST:
                self._write_leaf(self.ca.issue_cert(WRONG_HOST, key_type=_RSA), folder)
            case CertProfile.UNTRUSTED_CA:
                stranger = trustme.CA(organization_name="pytest-mailtls untrusted CA", key_type=_RSA)
                self._write_leaf(stranger.issue_cert(*names, key_type=_RSA), folder)
            case CertProfile.MISSING_INTERMEDIATE:
                intermediate = self.ca.create_child_ca(key_type=_RSA)
                leaf = intermediate.issue_cert(*names, key_type=_RSA)
                # Present the leaf alone: the intermediate clients would need is withheld.
                _write_private(key_file, leaf.private_key_pem.bytes())
                leaf.cert_chain_pems[0].write_to_path(str(cert_file))
                (folder / "intermediate.pem").write_bytes(intermediate.cert_pem.bytes())
            case CertProfile.SELF_SIGNED:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                cert = _builder(names, key.public_key(), _name(names[0]), now).sign(
                    key, hashes.SHA256()
                )  # issuer = subject
                _write_key_and_cert(key, [cert], key_file, cert_file)
            case CertProfile.WEAK_RSA_1024:
                key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
                cert = _builder(names, key.public_key(), self._ca_name(), now).sign(self._ca_key(), hashes.SHA256())
                _write_key_and_cert(key, [cert], key_file, cert_file)
            case CertProfile.SHA1_SIGNATURE:
                self._make_sha1(folder, names, now)
        key_file.chmod(0o600)  # never readable by others, even for the instant before a chmod
        cert_file.chmod(0o644)
        return ServerCertFiles(key_file, cert_file)

    def _write_leaf(self, leaf: trustme.LeafCert, folder: Path) -> None:
        _write_private(folder / "key.pem", leaf.private_key_pem.bytes())
        (folder / "chain.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))

    def _ca_key(self) -> rsa.RSAPrivateKey:
        key = serialization.load_pem_private_key(self.ca.private_key_pem.bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key

    def _ca_name(self) -> x509.Name:
        return x509.load_pem_x509_certificate(self.ca.cert_pem.bytes()).subject

    def _make_sha1(self, folder: Path, names: tuple[str, ...], now: dt.datetime) -> None:
        # cryptography refuses to sign with SHA-1, so the openssl command signs a SHA-256 template.
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(_name(names[0]))
            .add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        work = folder / "sha1-work"
        work.mkdir(exist_ok=True)
        ca_key = work / "ca-key.pem"
        _write_private(ca_key, self.ca.private_key_pem.bytes())
        (work / "request.pem").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        _write_key_and_cert(key, [], folder / "key.pem", None)
        cmd = [
            "openssl", "x509", "-req", "-in", str(work / "request.pem"), "-out", str(folder / "chain.pem"),
            "-CA", str(self.ca_file), "-CAkey", str(ca_key), "-sha1", "-copy_extensions", "copyall",
            "-set_serial", str(x509.random_serial_number()), "-days", "365",
        ]  # fmt: skip
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            raise MailTLSError(
                "the sha1-signature profile needs the `openssl` command: apt-get install openssl"
            ) from None
        except subprocess.CalledProcessError as exc:
            raise MailTLSError(f"openssl could not sign the sha1-signature certificate: {exc.stderr.strip()}") from None
        finally:
            ca_key.unlink(missing_ok=True)
            (work / "request.pem").unlink(missing_ok=True)
            work.rmdir()

    # --- client certificates ---------------------------------------------------
    def client_files(self) -> ClientCertFiles:
        """A client certificate issued by the session CA (servers trust it)."""
        return self._client("client", self.ca)

    def foreign_client_files(self) -> ClientCertFiles:
        """A client certificate from a CA no server trusts (for negative mTLS tests)."""
        return self._client("foreign-client", None)

    def _client(self, name: str, ca: trustme.CA | None) -> ClientCertFiles:
        with self._lock, self._file_lock():
            folder = self.directory / name
            if name not in self._clients and self.shared and (folder / MADE_MARKER).exists():
                self._clients[name] = ClientCertFiles(folder / "key.pem", folder / "chain.pem", folder / PKCS1_KEY_NAME)
            if name not in self._clients:
                issuer = ca or trustme.CA(organization_name="pytest-mailtls foreign CA", key_type=_RSA)
                leaf = issuer.issue_cert("tester@mailtls.test", common_name="tester", key_type=_RSA)
                folder.mkdir(exist_ok=True)
                self._write_leaf(leaf, folder)
                # trustme writes PKCS#1; clients get PKCS#8 as key.pem and PKCS#1 beside it.
                key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), password=None)
                assert isinstance(key, rsa.RSAPrivateKey)
                _write_key_and_cert(key, [], folder / "key.pem", None)
                pkcs1 = folder / PKCS1_KEY_NAME
                _write_private(pkcs1, _pkcs1(key))
                self._clients[name] = ClientCertFiles(folder / "key.pem", folder / "chain.pem", pkcs1)
                if self.shared:
                    (folder / MADE_MARKER).touch()
            return self._clients[name]


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` readable by its owner only (0600 from creation on, whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "wb") as out:
        out.write(data)


#: The file name of a client key's PKCS#1 twin, beside its PKCS#8 ``key.pem``.
PKCS1_KEY_NAME = "key-pkcs1.pem"


def _pkcs1(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )


def pkcs1_key_file(key_file: str | Path) -> Path:
    """The PKCS#1 form of the RSA key in ``key_file`` (PKCS#8 or PKCS#1 PEM).

    A :class:`SessionPKI` client key has its twin beside it already; for any
    other key the twin is written next to it (``<stem>-pkcs1.pem``) once.
    """
    path = Path(key_file)
    twin = path.with_name(PKCS1_KEY_NAME if path.name == "key.pem" else f"{path.stem}-pkcs1.pem")
    if twin.exists():
        return twin
    data = path.read_bytes()
    if b"BEGIN RSA PRIVATE KEY" in data:
        return path
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise MailTLSError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise MailTLSError(f"{path}: PKCS#1 is an RSA key form; this is a {type(key).__name__}")
    try:
        _write_private(twin, _pkcs1(key))
    except OSError as exc:
        raise MailTLSError(f"cannot write the PKCS#1 form of {path} to {twin}: {exc}") from None
    return twin


def session_intermediates(ca_file: str | Path) -> list[x509.Certificate]:
    """The intermediate CAs the session PKI whose root is ``ca_file`` made (and withholds from chains).

    Each lives next to the profile that uses it (``<pki dir>/<profile>/intermediate.pem``); verify compares
    a presented leaf's issuer with them to tell "issued by our intermediate" from "issued by a stranger".
    """
    found = []
    for path in sorted(Path(ca_file).parent.glob("*/intermediate.pem")):
        try:
            found.append(x509.load_pem_x509_certificate(path.read_bytes()))
        except (OSError, ValueError):
            continue
    return found


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pytest-mailtls"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _sans(names: tuple[str, ...]) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    return sans


def _builder(
    names: tuple[str, ...], public_key: object, issuer: x509.Name, now: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(_sans(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    )


def _write_key_and_cert(
    key: rsa.RSAPrivateKey, certs: list[x509.Certificate], key_file: Path, cert_file: Path | None
) -> None:
    _write_private(
        key_file,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    if cert_file is not None:
        cert_file.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
