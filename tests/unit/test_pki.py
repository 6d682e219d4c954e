"""Every certificate profile checked by a real TLS handshake on loopback.

A client that trusts the session CA must accept exactly the profiles that
verify, and fail the others with the matching OpenSSL verification error;
with verification off every profile must complete.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

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
    CertProfile.SHA1_INTERMEDIATE: "CA signature digest algorithm too weak",
    CertProfile.EXPIRED_INTERMEDIATE: "certificate has expired",
    CertProfile.WRONG_EKU: "unsuitable certificate purpose",
    CertProfile.NAME_CONSTRAINT_VIOLATION: "permitted subtree violation",
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    """Every profile made at once, as a grid's start makes them: most RSA keys come from the key pool."""
    made = SessionPKI(tmp_path_factory.mktemp("pki"))
    made.prepare(list(CertProfile), client=True)
    return made


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


@pytest.mark.parametrize("profile", [p for p in CertProfile if p.fault.verifies_by_default], ids=str)
def test_verifying_profiles_pass(pki: SessionPKI, profile: CertProfile) -> None:
    # revoked and no-san too: OpenSSL's defaults check no revocation and fall back to the subject CN
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


# --- the makers: each new fault has what it must, and nothing else wrong --------------------------------


def _chain(pki: SessionPKI, profile: CertProfile) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pki.server_files(profile).cert_file.read_bytes())


def _root(pki: SessionPKI) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pki.ca_file.read_bytes())


def test_every_profile_has_a_maker_and_a_check() -> None:
    import pytest_mailtls.pki as pki_module

    assert set(pki_module.CERT_FAULTS) == set(CertProfile)
    assert all(callable(f.make) and callable(f.check) for f in pki_module.CERT_FAULTS.values())


def test_no_san_has_the_name_only_in_the_subject_cn(pki: SessionPKI) -> None:
    (leaf,) = _chain(pki, CertProfile.NO_SAN)
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    # A client without CN fallback (RFC 9525) refuses it; Python's default falls back and accepts it.
    strict = _client(pki)
    strict.hostname_checks_common_name = False
    port, thread = _serve_once(_server_context(pki, CertProfile.NO_SAN))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(port, strict)
    thread.join(5)


def test_wrong_eku_is_client_auth_only(pki: SessionPKI) -> None:
    (leaf,) = _chain(pki, CertProfile.WRONG_EKU)
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert leaf.issuer == _root(pki).subject


def test_sha1_intermediate_signs_its_leaf_with_sha256(pki: SessionPKI) -> None:
    leaf, intermediate = _chain(pki, CertProfile.SHA1_INTERMEDIATE)
    assert intermediate.signature_hash_algorithm.name == "sha1"  # type: ignore[union-attr]
    assert leaf.signature_hash_algorithm.name == "sha256"  # type: ignore[union-attr]
    assert intermediate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.issuer == intermediate.subject and intermediate.issuer == _root(pki).subject
    leaf.verify_directly_issued_by(intermediate)
    # Only the intermediate's signature is weak: at security level 0 the chain verifies.
    lax = _client(pki)
    lax.set_ciphers("DEFAULT:@SECLEVEL=0")
    port, thread = _serve_once(_server_context(pki, CertProfile.SHA1_INTERMEDIATE))
    _handshake(port, lax)
    thread.join(5)


def test_expired_intermediate_under_a_valid_leaf(pki: SessionPKI) -> None:
    leaf, intermediate = _chain(pki, CertProfile.EXPIRED_INTERMEDIATE)
    now = dt.datetime.now(dt.UTC)
    assert intermediate.not_valid_after_utc < now < leaf.not_valid_after_utc
    assert leaf.not_valid_before_utc < now
    leaf.verify_directly_issued_by(intermediate)
    intermediate.verify_directly_issued_by(_root(pki))


def test_name_constraints_exclude_every_leaf_name(pki: SessionPKI) -> None:
    leaf, intermediate = _chain(pki, CertProfile.NAME_CONSTRAINT_VIOLATION)
    nc = intermediate.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical and nc.value.permitted_subtrees and not nc.value.excluded_subtrees
    permitted = {str(n.value) for n in nc.value.permitted_subtrees}
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = [str(v) for v in sans.get_values_for_type(x509.DNSName)]
    ips = sans.get_values_for_type(x509.IPAddress)
    assert names and not any(n == p or n.endswith("." + p) for n in names for p in permitted)
    assert ips and not any(
        ip in net.value for ip in ips for net in nc.value.permitted_subtrees if isinstance(net, x509.IPAddress)
    )
    leaf.verify_directly_issued_by(intermediate)


def test_bigger_keys(pki: SessionPKI) -> None:
    (rsa4096,) = _chain(pki, CertProfile.RSA_4096)
    key = rsa4096.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    (p384,) = _chain(pki, CertProfile.ECDSA_P384)
    ec_key = p384.public_key()
    assert isinstance(ec_key, ec.EllipticCurvePublicKey) and ec_key.curve.name == "secp384r1"
    assert CertProfile.ECDSA_P384.key_type == "ecdsa"


def _urls(leaf: x509.Certificate) -> tuple[str, str]:
    cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    crl = str(cdp[0].full_name[0].value)  # type: ignore[index]
    (responder,) = [str(d.access_location.value) for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]
    return crl, responder


def _ocsp_status(leaf: x509.Certificate, issuer: x509.Certificate, url: str) -> ocsp.OCSPCertStatus:
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    body = request.public_bytes(serialization.Encoding.DER)
    post = urllib.request.Request(url, data=body, headers={"Content-Type": "application/ocsp-request"})
    with urllib.request.urlopen(post, timeout=5) as answer:
        response = ocsp.load_der_ocsp_response(answer.read())
    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    issuer.public_key().verify(  # type: ignore[union-attr,call-arg]
        response.signature, response.tbs_response_bytes, padding.PKCS1v15(), response.signature_hash_algorithm
    )
    return response.certificate_status


def test_revoked_is_on_the_crl_and_revoked_by_ocsp(pki: SessionPKI, tmp_path: Path) -> None:
    (leaf,) = _chain(pki, CertProfile.REVOKED)
    root = _root(pki)
    crl_url, ocsp_url = _urls(leaf)
    assert crl_url.startswith("http://127.0.0.1:") and ocsp_url.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(crl_url, timeout=5) as answer:
        crl = x509.load_der_x509_crl(answer.read())
    assert crl.is_signature_valid(root.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
    assert _ocsp_status(leaf, root, ocsp_url) is ocsp.OCSPCertStatus.REVOKED
    # A client that loads the CRL refuses the certificate; the same client without it accepts it.
    (tmp_path / "crl.pem").write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    checking = _client(pki)
    checking.load_verify_locations(str(tmp_path / "crl.pem"))
    checking.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    port, thread = _serve_once(_server_context(pki, CertProfile.REVOKED))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate revoked"):
        _handshake(port, checking)
    thread.join(5)
    # The same CRL does not list a certificate it has not revoked.
    (valid,) = _chain(pki, CertProfile.VALID)[:1]
    assert crl.get_revoked_certificate_by_serial_number(valid.serial_number) is None


def test_revocation_unreachable_points_at_a_closed_port(pki: SessionPKI) -> None:
    (leaf,) = _chain(pki, CertProfile.REVOCATION_UNREACHABLE)
    for url in _urls(leaf):
        assert url.startswith("http://127.0.0.1:1/")
        with pytest.raises(urllib.error.URLError, match="refused"):
            urllib.request.urlopen(url, timeout=5)


def test_responder_stops_with_the_pki(tmp_path: Path) -> None:
    own = SessionPKI(tmp_path / "pki")
    (leaf,) = x509.load_pem_x509_certificates(own.server_files(CertProfile.REVOKED).cert_file.read_bytes())
    crl_url, _ = _urls(leaf)
    urllib.request.urlopen(crl_url, timeout=5).close()
    own.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(crl_url, timeout=5)


def test_every_key_is_made_once(pki: SessionPKI) -> None:
    # A pool that handed out one key twice would show up as two certificates of one public key.
    leaf_keys = [
        _chain(pki, p)[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        for p in CertProfile
    ]
    assert len(set(leaf_keys)) == len(leaf_keys)


def test_prepare_draws_keys_from_the_pool_and_ends_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mailtls import pki as pki_module

    pools: list[pki_module._KeyPool] = []
    taken: list[bool] = []
    real_init, real_take = pki_module._KeyPool.__init__, pki_module._KeyPool.take

    def init(self: pki_module._KeyPool, big: list[int], *, spares: int) -> None:
        real_init(self, big, spares=spares)
        pools.append(self)

    def take(self: pki_module._KeyPool, bits: int) -> object:
        key = real_take(self, bits)
        taken.append(key is not None)
        return key

    monkeypatch.setattr(pki_module._KeyPool, "__init__", init)
    monkeypatch.setattr(pki_module._KeyPool, "take", take)
    made = SessionPKI(tmp_path)
    made.prepare([CertProfile.RSA_4096, CertProfile.SELF_SIGNED, CertProfile.NO_SAN, CertProfile.WRONG_EKU])
    (pool,) = pools
    assert pool._process is None  # closed: its process is gone with prepare()
    assert any(taken), "no key came from the pool"
    (leaf,) = _chain(made, CertProfile.RSA_4096)
    key = leaf.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 4096
    assert made._pool is None  # later keys are made in-process again


def test_prepare_without_a_second_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mailtls import pki as pki_module

    monkeypatch.setattr(pki_module.sys, "executable", str(tmp_path / "no-python-here"))
    made = SessionPKI(tmp_path / "pki")
    made.prepare(list(CertProfile)[:5])
    for profile in list(CertProfile)[:5]:
        assert (made.server_files(profile).key_file).stat().st_mode & 0o777 == 0o600


def test_a_shared_pki_makes_the_revoked_profile_in_each_process(tmp_path: Path) -> None:
    # Its certificate names the revocation responder of the process that makes it: another process of the
    # run (a grid daemon that ended, a worker) must not hand this process a certificate whose responder is gone.
    import subprocess
    import sys

    shared = tmp_path / "pki"
    other = (
        "import sys; from pytest_mailtls.pki import SessionPKI; "
        "print(SessionPKI.open_shared(sys.argv[1]).server_files('revoked').cert_file)"
    )
    done = subprocess.run([sys.executable, "-c", other, str(shared)], capture_output=True, text=True, check=True)
    theirs = Path(done.stdout.strip())
    mine = SessionPKI.open_shared(shared)
    try:
        files = mine.server_files(CertProfile.REVOKED)
        assert files.cert_file != theirs and theirs.exists()
        assert mine.server_files(CertProfile.VALID).cert_file.parent == shared / "valid"  # the others are shared
        leaf = x509.load_pem_x509_certificates(files.cert_file.read_bytes())[0]
        root = x509.load_pem_x509_certificate(mine.ca_file.read_bytes())
        assert _ocsp_status(leaf, root, _urls(leaf)[1]) is ocsp.OCSPCertStatus.REVOKED  # this process answers
        old = x509.load_pem_x509_certificates(theirs.read_bytes())[0]
        with pytest.raises(urllib.error.URLError):  # the other process's responder ended with it
            _ocsp_status(old, root, _urls(old)[1])
    finally:
        mine.close()
