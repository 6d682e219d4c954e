"""Every certificate profile checked by a real TLS handshake on loopback.

A client that trusts the session CA must accept exactly the profiles that
verify, and fail the others with the matching OpenSSL verification error;
with verification off every profile must complete.
"""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pytest_mailtls.errors import MailTLSError
from pytest_mailtls.pki import SessionPKI, pkcs1_key_file
from pytest_mailtls.policy import CertProfile

# The OpenSSL verification message each faulty profile must produce.
EXPECTED_ERRORS = {
    CertProfile.EXPIRED: "certificate has expired",
    CertProfile.NOT_YET_VALID: "certificate is not yet valid",
    CertProfile.WRONG_HOST: "Hostname mismatch",
    CertProfile.SELF_SIGNED: "self-signed certificate",
    CertProfile.UNTRUSTED_CA: "unable to get local issuer certificate",
    CertProfile.MISSING_INTERMEDIATE: "unable to get local issuer certificate",
    CertProfile.WEAK_RSA_1024: "key too weak",
    CertProfile.SHA1_SIGNATURE: "digest algorithm too weak",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


def _serve_once(ctx: ssl.SSLContext) -> tuple[int, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run() -> None:
        with listener:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return port, thread


def _server_context(pki: SessionPKI, profile: CertProfile, *, client_ca: bool = False) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let the server load weak keys; the client judges
    files = pki.server_files(profile)
    ctx.load_cert_chain(files.cert_file, files.key_file)
    if client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(pki.client_ca_file)
    return ctx


def _handshake(port: int, ctx: ssl.SSLContext, hostname: str = "localhost") -> None:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as sock,
        ctx.wrap_socket(sock, server_hostname=hostname) as tls,
    ):
        tls.sendall(b"x")
        tls.recv(1)  # TLS 1.3 reports a rejected client certificate only on the first read


def _client(pki: SessionPKI) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_file))
    return ctx


@pytest.mark.parametrize("profile", [CertProfile.VALID, CertProfile.ECDSA_P256], ids=str)
def test_verifying_profiles_pass(pki: SessionPKI, profile: CertProfile) -> None:
    assert profile.verifies
    port, thread = _serve_once(_server_context(pki, profile))
    for name in ("localhost",):
        _handshake(port, _client(pki), name)
    thread.join(5)


@pytest.mark.parametrize("name", ["mail.mailtls.test", "127.0.0.1"])
def test_valid_cert_names(pki: SessionPKI, name: str) -> None:
    port, thread = _serve_once(_server_context(pki, CertProfile.VALID))
    _handshake(port, _client(pki), name)
    thread.join(5)


@pytest.mark.parametrize("profile", list(EXPECTED_ERRORS), ids=str)
def test_faulty_profiles_fail_with_their_error(pki: SessionPKI, profile: CertProfile) -> None:
    assert not profile.verifies and profile.failure
    port, thread = _serve_once(_server_context(pki, profile))
    with pytest.raises(ssl.SSLCertVerificationError, match=EXPECTED_ERRORS[profile]):
        _handshake(port, _client(pki))
    thread.join(5)


@pytest.mark.parametrize("profile", list(CertProfile), ids=str)
def test_every_profile_completes_without_verification(pki: SessionPKI, profile: CertProfile) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    port, thread = _serve_once(_server_context(pki, profile))
    _handshake(port, ctx)
    thread.join(5)


def test_key_types_and_signatures(pki: SessionPKI) -> None:
    def leaf(profile: CertProfile) -> x509.Certificate:
        return x509.load_pem_x509_certificates(pki.server_files(profile).cert_file.read_bytes())[0]

    assert isinstance(leaf(CertProfile.ECDSA_P256).public_key(), ec.EllipticCurvePublicKey)
    weak = leaf(CertProfile.WEAK_RSA_1024).public_key()
    assert isinstance(weak, rsa.RSAPublicKey) and weak.key_size == 1024
    assert leaf(CertProfile.SHA1_SIGNATURE).signature_hash_algorithm.name == "sha1"  # type: ignore[union-attr]
    assert (
        len(x509.load_pem_x509_certificates(pki.server_files(CertProfile.MISSING_INTERMEDIATE).cert_file.read_bytes()))
        == 1
    )


def test_mutual_tls_client_certificates(pki: SessionPKI) -> None:
    good = _client(pki)
    files = pki.client_files()
    good.load_cert_chain(files.cert_file, files.key_file)
    port, thread = _serve_once(_server_context(pki, CertProfile.VALID, client_ca=True))
    _handshake(port, good)
    thread.join(5)

    foreign = _client(pki)
    # Under TLS 1.3 the rejection comes after the handshake and may race the close; 1.2 rejects in it.
    foreign.maximum_version = ssl.TLSVersion.TLSv1_2
    ffiles = pki.foreign_client_files()
    foreign.load_cert_chain(ffiles.cert_file, ffiles.key_file)
    port, thread = _serve_once(_server_context(pki, CertProfile.VALID, client_ca=True))
    with pytest.raises(ssl.SSLError, match="alert unknown ca"):
        _handshake(port, foreign)
    thread.join(5)


def test_keys_stay_under_the_session_dir(pki: SessionPKI) -> None:
    for profile in CertProfile:
        files = pki.server_files(profile)
        assert Path(files.key_file).is_relative_to(pki.directory)
    assert not list(pki.directory.rglob("ca-key.pem")), "the CA key used for SHA-1 signing must not be left on disk"


# --- client key forms -------------------------------------------------------------------------


def test_client_key_is_pkcs8_with_a_pkcs1_twin(pki: SessionPKI) -> None:
    from cryptography.hazmat.primitives import serialization

    files = pki.client_files()
    assert files.key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert files.key_pkcs1_file is not None
    assert files.key_pkcs1_file.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    pkcs8 = serialization.load_pem_private_key(files.key_file.read_bytes(), password=None)
    pkcs1 = serialization.load_pem_private_key(files.key_pkcs1_file.read_bytes(), password=None)
    assert isinstance(pkcs8, rsa.RSAPrivateKey) and isinstance(pkcs1, rsa.RSAPrivateKey)
    assert pkcs8.private_numbers() == pkcs1.private_numbers()
    assert pkcs1_key_file(files.key_file) == files.key_pkcs1_file


@pytest.mark.parametrize("form", ["pkcs8", "pkcs1"])
def test_both_client_key_forms_complete_mutual_tls(pki: SessionPKI, form: str) -> None:
    files = pki.client_files()
    ctx = _client(pki)
    ctx.load_cert_chain(files.cert_file, files.key_file if form == "pkcs8" else files.key_pkcs1_file)
    port, thread = _serve_once(_server_context(pki, CertProfile.VALID, client_ca=True))
    _handshake(port, ctx)
    thread.join(5)


def test_pkcs1_twin_of_any_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (tmp_path / "client.key").write_bytes(pem)
    twin = pkcs1_key_file(tmp_path / "client.key")
    assert twin == tmp_path / "client-pkcs1.pem"
    assert twin.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert pkcs1_key_file(twin) == twin  # already PKCS#1
    ec_key = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "ec.key").write_bytes(
        ec_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    with pytest.raises(MailTLSError, match="PKCS#1 is an RSA key form"):
        pkcs1_key_file(tmp_path / "ec.key")


def test_command_template_placeholders_for_both_key_forms(pki: SessionPKI) -> None:
    from pytest_mailtls.clients.command import PLACEHOLDERS, CommandClient
    from pytest_mailtls.manifest import Endpoint
    from pytest_mailtls.matrix import load_matrix

    assert {"client_key", "client_key_pkcs1"} <= set(PLACEHOLDERS)
    cell = next(c for c in load_matrix().cells() if c.auth.client_cert)
    files = pki.client_files()
    endpoint = Endpoint(
        cell=cell,
        host="127.0.0.1",
        port=1,
        server_hostname="localhost",
        ca_file=str(pki.ca_file),
        username="u",
        password="p",
        mailbox="/tmp/none",
        client_cert_file=str(files.cert_file),
        client_key_file=str(files.key_file),
    )
    argv = CommandClient("client --key {client_key} --rsa-key {client_key_pkcs1}").argv(endpoint)
    assert argv == ["client", "--key", str(files.key_file), "--rsa-key", str(files.key_pkcs1_file)]
    # A template that does not ask for the PKCS#1 form never touches the key.
    from dataclasses import replace

    bare = replace(endpoint, client_key_file="/nonexistent/key.pem")
    assert CommandClient("client {host}").argv(bare) == ["client", "127.0.0.1"]
