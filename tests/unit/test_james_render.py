"""James rendering without Docker: cell -> server entries, OpenSSL -> JSSE ciphers, keystores, training files."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
import struct
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from pytest_mailtls.backends import james
from pytest_mailtls.backends.james import (
    JDK_DEFAULT_SUITES,
    JSSE_SUITES,
    JSSE_TLS13_SUITES,
    cell_log_lines,
    cipher_plan,
    container_ports,
    host_maven_mirror,
    jks_keystore,
    jks_truststore,
    render,
    security_reenable,
    training_files,
    unsupported_reason,
)
from pytest_mailtls.errors import ServerStartError
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

REPO = Path(__file__).resolve().parents[2]
ALL_CELLS = load_matrix().cells(servers=["james"])
#: What James serves: every default cell but the NULL-encryption ones (JDK 17 keeps NULL disabled).
CELLS = [c for c in ALL_CELLS if not unsupported_reason(c)]
POLICIES = {c.policy.name: c.policy for c in CELLS if c.policy is not None}
KEYSTORES = {profile: f"/mailtls/tls/{profile}.keystore.jks" for profile in CertProfile}
DEFAULT = AuthPolicy("default")


def _cell(
    service: str = "submission",
    mode: Mode = Mode.STARTTLS,
    policy: TLSPolicy | None = None,
    cert: CertProfile | None = CertProfile.VALID,
    auth: AuthPolicy = DEFAULT,
) -> Cell:
    if mode is not Mode.PLAIN and policy is None:
        policy = POLICIES["intermediate"]
    if mode is Mode.PLAIN:
        cert = None
    return Cell("james", SERVICES[service], mode, policy, cert, auth)


def _render(cells: list[Cell], **kwargs: object) -> james.RenderedConfig:
    args: dict[str, object] = {
        "ports": container_ports(cells),
        "keystores": KEYSTORES,
        "truststore": "/mailtls/tls/client-ca.jks",
        "secret": "s3cret",
        "username": "tester@mailtls.test",
        "password": "pw",
    }
    args.update(kwargs)
    return render(cells, **args)  # type: ignore[arg-type]


def _servers(config: james.RenderedConfig) -> dict[int, ET.Element]:
    """Every server entry of every protocol file, by its port."""
    out: dict[int, ET.Element] = {}
    for name in ("smtpserver.xml", "imapserver.xml", "pop3server.xml"):
        root = ET.fromstring(config.files[f"conf/{name}"])
        for entry in root:
            bind = entry.findtext("bind")
            assert bind is not None
            out[int(bind.rsplit(":", 1)[1])] = entry
    return out


def _handlers(entry: ET.Element) -> list[str]:
    return [h.get("class", "") for h in entry.iter("handler")]


# --- what James can serve ------------------------------------------------------------


def test_every_default_james_cell_is_served_but_null_encryption_and_the_small_dh_group() -> None:
    assert len(ALL_CELLS) == 153 and len(CELLS) == 141
    refused = {c.id: unsupported_reason(c) for c in ALL_CELLS if unsupported_reason(c)}
    services = ("submission-starttls", "smtps-implicit", "imap-starttls", "imaps-implicit", "pop3-starttls")
    services += ("pop3s-implicit",)
    assert {c.split("-", 1)[1] for c in refused} == {
        f"{svc}-{policy}-valid" for svc in services for policy in ("null-cipher", "dhe-1024")
    }
    for cell_id, why in refused.items():
        reason = "NULL in jdk.tls.disabledAlgorithms" if "null-cipher" in cell_id else "JVM-wide"
        assert reason in str(why)


@pytest.mark.parametrize(
    ("cell", "words"),
    [
        (_cell(auth=AuthPolicy("cram", ("CRAM-MD5",))), "CRAM-MD5"),
        (_cell(auth=AuthPolicy("oauth", ("PLAIN", "LOGIN", "XOAUTH2"))), "XOAUTH2"),
        (_cell(auth=AuthPolicy("plain-only", ("PLAIN",))), "PLAIN and LOGIN together"),
        (_cell("imap", auth=AuthPolicy("open", (), required=False)), "password login"),
        (_cell("pop3", auth=AuthPolicy("anon", ("PLAIN", "LOGIN"), required=False)), "no anonymous access"),
        (_cell(policy=TLSPolicy("ccm", "TLSv1.3", ciphersuites="TLS_AES_128_CCM_SHA256")), "CCM"),
        (_cell(policy=TLSPolicy("camellia", "TLSv1.2", "TLSv1.2", ciphers="CAMELLIA128-SHA")), "CAMELLIA128-SHA"),
        (Cell("postfix", SERVICES["submission"], Mode.PLAIN, None, None, DEFAULT), "not postfix"),
    ],
    ids=["cram-md5", "xoauth2", "plain-only", "imap-no-login", "pop3-anonymous", "tls13-ccm", "camellia", "postfix"],
)
def test_unsupported_cells_say_why(cell: Cell, words: str) -> None:
    reason = unsupported_reason(cell)
    assert reason is not None and words in reason
    with pytest.raises(ValueError, match=cell.id):
        _render([cell])


def test_supported_twins_of_the_unsupported() -> None:
    assert unsupported_reason(_cell(auth=AuthPolicy("both", ("LOGIN", "PLAIN")))) is None
    assert (
        unsupported_reason(_cell(policy=TLSPolicy("gcm13", "TLSv1.3", ciphersuites="TLS_AES_128_GCM_SHA256"))) is None
    )
    assert unsupported_reason(_cell("smtp", auth=AuthPolicy("open", (), required=False))) is None


# --- ciphers -------------------------------------------------------------------------


def test_intermediate_maps_each_openssl_name_to_its_jsse_name() -> None:
    plan = cipher_plan(POLICIES["intermediate"])
    assert plan.missing == ()
    assert plan.tls13_suites == JSSE_TLS13_SUITES
    assert plan.tls12_suites == (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    )
    assert not plan.static_rsa


def test_single_static_rsa_cipher_needs_static_rsa_reenabled() -> None:
    plan = cipher_plan(POLICIES["tls12-single-cipher"])
    assert plan.suites == ("TLS_RSA_WITH_AES_256_GCM_SHA384",)
    assert plan.static_rsa


def test_tls13_only_policy_lists_tls13_suites_only() -> None:
    assert cipher_plan(POLICIES["modern"]).suites == JSSE_TLS13_SUITES


def test_policy_without_ciphers_gets_the_jdk_defaults_written_out() -> None:
    plan = cipher_plan(POLICIES["tls12-only"])
    assert plan.suites == JDK_DEFAULT_SUITES
    assert not plan.static_rsa  # the java.security override must not widen it


def test_legacy_reports_what_the_jvm_cannot_offer() -> None:
    plan = cipher_plan(POLICIES["legacy"])
    assert "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA" in plan.suites
    assert "TLS_RSA_WITH_AES_128_CBC_SHA" in plan.suites
    for name in ("DHE-RSA-CAMELLIA128-SHA", "ECDHE-ARIA128-GCM-SHA256", "ADH-AES128-SHA", "DHE-RSA-AES128-CCM"):
        assert name in plan.missing
    assert not set(plan.missing) & set(JSSE_SUITES)


def test_ccm_tls13_suite_is_reported_and_the_rest_kept() -> None:
    policy = TLSPolicy("mixed", "TLSv1.3", ciphersuites="TLS_AES_128_CCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")
    plan = cipher_plan(policy)
    assert plan.suites == ("TLS_CHACHA20_POLY1305_SHA256",)
    assert plan.missing == ("TLS_AES_128_CCM_SHA256",)


def test_jsse_table_names_ciphers_the_local_openssl_knows() -> None:
    assert set(james._expand_openssl(":".join(JSSE_SUITES))) == set(JSSE_SUITES)


def test_security_override_only_when_needed() -> None:
    modern = [c for c in CELLS if c.policy and c.policy.name in ("modern", "intermediate", "tls12-only")]
    assert security_reenable(modern) == ()
    legacy = [c for c in CELLS if c.policy and c.policy.name == "legacy"]
    assert security_reenable(legacy) == ("TLSv1", "TLSv1.1", "TLS_RSA_*")
    tls11 = [c for c in CELLS if c.policy and c.policy.name == "tls11-only"]
    assert security_reenable(tls11) == ("TLSv1.1",)
    single = [c for c in CELLS if c.policy and c.policy.name == "tls12-single-cipher"]
    assert security_reenable(single) == ("TLS_RSA_*",)
    assert "MAILTLS_REENABLE" not in _render(modern).environment
    assert _render(CELLS).environment["MAILTLS_REENABLE"] == "TLSv1 TLSv1.1 TLS_RSA_*"


# --- the rendered configuration -----------------------------------------------------


def test_every_cell_gets_its_own_server_entry() -> None:
    config = _render(CELLS)
    servers = _servers(config)
    assert sorted(servers) == container_ports(CELLS)
    for cell, port in zip(CELLS, container_ports(CELLS), strict=True):
        entry = servers[port]
        assert entry.tag == f"{cell.protocol}server"
        tls = entry.find("tls")
        assert tls is not None
        assert tls.get("socketTLS") == str(cell.mode is Mode.IMPLICIT).lower()
        assert tls.get("startTLS") == str(cell.mode in (Mode.STARTTLS, Mode.STARTTLS_REQUIRED)).lower()
        assert config.maildirs[cell.id] == str(port)


def test_every_tls_cell_lists_its_protocols_and_suites_explicitly() -> None:
    # The java.security override widens the JVM's defaults, so no TLS cell may rely on them.
    servers = _servers(_render(CELLS))
    for cell, port in zip(CELLS, container_ports(CELLS), strict=True):
        tls = servers[port].find("tls")
        assert tls is not None
        protocols = [p.text for p in tls.iter("protocol")]
        suites = [s.text for s in tls.iter("cipherSuite")]
        if cell.policy is None:
            assert protocols == [] and suites == [] and tls.find("keystore") is None
            continue
        assert protocols == list(cell.policy.versions)
        assert tuple(suites) == cipher_plan(cell.policy).suites
        assert tls.findtext("keystore") == f"file:///mailtls/tls/{cell.cert}.keystore.jks"
        assert tls.findtext("secret") == "s3cret"


def test_mutual_tls_cells_and_only_they_demand_a_client_certificate() -> None:
    servers = _servers(_render(CELLS))
    for cell, port in zip(CELLS, container_ports(CELLS), strict=True):
        client_auth = servers[port].find("tls/clientAuth")
        if cell.auth.client_cert:
            assert client_auth is not None
            assert client_auth.findtext("truststore") == "file:///mailtls/tls/client-ca.jks"
        else:
            assert client_auth is None


def test_smtp_auth_and_starttls_requirements() -> None:
    cells = [
        _cell("submission", Mode.STARTTLS),
        _cell("submission", Mode.STARTTLS_REQUIRED),
        _cell("smtp", Mode.PLAIN, auth=AuthPolicy("open", (), required=False)),
        _cell("submission", Mode.PLAIN, auth=AuthPolicy("cleartext-auth", tls_only=False)),
    ]
    starttls, required, mx, cleartext = (_servers(_render(cells))[p] for p in container_ports(cells))
    ext = "org.mailtls.james."
    assert starttls.findtext("auth/requireSSL") == "true" and starttls.findtext("auth/announce") == "always"
    # AUTH is answered by the extension before James' own AuthCmdHandler, which would log in (235) in clear.
    assert _handlers(starttls)[:3] == [
        ext + "RequireTlsAuthHandler",
        ext + "RequireAuthHook",
        ext + "MaildirCaptureHook",
    ]
    assert _handlers(required)[:4] == [
        ext + "RequireTlsAuthHandler",
        ext + "RequireTlsHook",
        ext + "RequireAuthHook",
        ext + "MaildirCaptureHook",
    ]
    assert _handlers(mx)[0] == ext + "NoAuthHandler"  # no AUTH at all, in clear or in TLS
    assert not {ext + "RequireTlsAuthHandler", ext + "NoAuthHandler"} & set(_handlers(cleartext))
    assert mx.findtext("auth/announce") == "never" and mx.findtext("auth/plainAuthEnabled") == "false"
    assert mx.findtext("authorizedAddresses") == "0.0.0.0/0"
    assert ext + "RequireAuthHook" not in _handlers(mx)
    assert cleartext.findtext("auth/requireSSL") == "false"
    assert starttls.findtext("authorizedAddresses") is None  # authenticated relaying only
    for entry in (starttls, required, mx, cleartext):
        assert _handlers(entry)[-1] == "org.apache.james.smtpserver.CoreCmdHandlerLoader"
        assert entry.findtext("verifyIdentity") == "false"


def test_imap_and_pop3_refuse_logins_before_tls_unless_cleartext() -> None:
    cleartext = AuthPolicy("cleartext-auth", tls_only=False)
    cells = [
        _cell("imap", Mode.STARTTLS),
        _cell("imap", Mode.PLAIN, auth=cleartext),
        _cell("imap", Mode.STARTTLS_REQUIRED, auth=cleartext),
        _cell("pop3", Mode.STARTTLS),
        _cell("pop3", Mode.PLAIN, auth=cleartext),
        _cell("pop3s", Mode.IMPLICIT, auth=cleartext),
    ]
    imap_tls, imap_plain, imap_required, pop_tls, pop_plain, pop_implicit = (
        _servers(_render(cells))[p] for p in container_ports(cells)
    )
    assert imap_tls.findtext("auth/requireSSL") == "true"
    assert imap_plain.findtext("auth/requireSSL") == "false"
    assert imap_required.findtext("auth/requireSSL") == "true"  # STARTTLS required wins over cleartext auth
    guard = "org.mailtls.james.RequireTlsLoginHandler"
    assert _handlers(pop_tls) == [guard, "org.apache.james.pop3server.core.CoreCmdHandlerLoader"]
    assert guard not in _handlers(pop_plain) and guard not in _handlers(pop_implicit)


@pytest.mark.parametrize(
    "name",
    [
        'evil--><smtpserver enabled="true"><bind>0.0.0.0:2525</bind></smtpserver><!--',
        "a</tls><tls>&amp;",
        "-",
    ],
)
def test_no_matrix_value_can_inject_configuration(name: str) -> None:
    # Validation refuses such names; the renderer must be safe on its own (issue 10): a value is only ever text.
    policy = replace(POLICIES["intermediate"], name=name)
    auth = AuthPolicy(name, tls_only=False)
    cells = [_cell("submission", Mode.STARTTLS, policy), _cell("imap", Mode.PLAIN, auth=auth)]
    config = _render(cells, secret=f"s<{name}>&", username=f"{name.replace(' ', '')}@x".replace("/", ""))
    for file in ("smtpserver.xml", "imapserver.xml", "pop3server.xml"):
        root = ET.fromstring(config.files[f"conf/{file}"])
        assert len(root) == sum(c.protocol + "server.xml" == file for c in cells)
    smtp = ET.fromstring(config.files["conf/smtpserver.xml"])[0]
    assert smtp.findtext("tls/secret") == f"s<{name}>&"
    assert [b.text for b in smtp.iter("bind")] == [f"0.0.0.0:{container_ports(cells)[0]}"]


def test_server_wide_files() -> None:
    config = _render(CELLS)
    for name, data in config.files.items():
        if name.endswith(".xml"):
            ET.fromstring(data)  # well-formed
    # Exactly what the servers James runs read (MailtlsJamesMain: no JMX, LMTP, ManageSieve or WebAdmin files).
    assert {name for name in config.files if name.startswith("conf/")} == {
        f"conf/{name}"
        for name in (
            "smtpserver.xml", "imapserver.xml", "pop3server.xml", "mailetcontainer.xml", "mailrepositorystore.xml",
            "domainlist.xml", "usersrepository.xml", "dnsservice.xml", "jmap.properties",
            "logback.xml",
        )
    }  # fmt: skip
    assert config.files["conf/jmap.properties"] == b"enabled=false\n"
    assert config.files["users/tester@mailtls.test"] == b"pw"  # the password, for MailtlsJamesMain
    mailets = ET.fromstring(config.files["conf/mailetcontainer.xml"])
    classes = [m.get("class") for m in mailets.iter("mailet")]
    assert "RemoteDelivery" not in classes and "LocalDelivery" in classes and "Null" in classes
    dns = ET.fromstring(config.files["conf/dnsservice.xml"])
    assert [s.text for s in dns.iter("server")] == ["127.0.0.1"] and dns.findtext("autodiscover") == "false"
    assert "-Xmx256m" in config.environment["MAILTLS_JAVA_OPTS"]


def test_java_options_sign_with_nss_and_keep_the_young_generation_small() -> None:
    options = _render([_cell()]).environment["MAILTLS_JAVA_OPTS"].split()
    # NSS signs the handshakes (MailtlsJamesMain reads the property); the file is the one the image copies.
    assert "-Dmailtls.rsa.provider=/opt/james/nss-rsa.cfg" in options
    recipe = REPO / "containers" / "james"
    assert "nss-rsa.cfg" in (recipe / "Dockerfile").read_text()
    assert (
        'getProperty("mailtls.rsa.provider"'
        in (recipe / "ext" / "src" / "org" / "mailtls" / "james" / "MailtlsJamesMain.java").read_text()
    )
    # One young generation size, the C1-only compiler and the serial collector stay as they were.
    assert [o for o in options if o.startswith("-Xmn")] == ["-Xmn24m"]
    assert {"-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xms64m", "-Xmx256m"} <= set(options)
    # The same options for the image build's training run, so its class-data-sharing archive holds NSS's classes.
    assert "-Dmailtls.rsa.provider=/opt/james/nss-rsa.cfg" in training_files()["environment"].decode()


def test_handler_chains_leave_out_the_jmx_statistics_handlers() -> None:
    config = _render([_cell(), _cell("pop3"), _cell("imap")])
    chains = [
        chain
        for name in ("smtpserver.xml", "pop3server.xml")
        for chain in ET.fromstring(config.files[f"conf/{name}"]).iter("handlerchain")
    ]
    assert len(chains) == 2 and all(chain.get("enableJmx") == "false" for chain in chains)
    # The handlers themselves are unchanged: the core commands are still loaded explicitly.
    assert any(h.get("class", "").endswith("smtpserver.CoreCmdHandlerLoader") for h in chains[0].iter("handler"))
    assert any(h.get("class", "").endswith("pop3server.core.CoreCmdHandlerLoader") for h in chains[1].iter("handler"))


def test_nss_provider_offers_rsa_signatures_with_sha2_only() -> None:
    # Everything else (ciphers, key exchange, digests, raw RSA, SHA-1 signatures of the legacy cells) stays
    # with the JDK's providers: a mechanism NSS does not list is never asked of it.
    text = (REPO / "containers" / "james" / "nss-rsa.cfg").read_text()
    body = text.split("enabledMechanisms", 1)[1]
    mechanisms = set(body[body.index("{") + 1 : body.index("}")].split())
    assert mechanisms == {
        "CKM_RSA_PKCS_PSS",
        "CKM_SHA256_RSA_PKCS_PSS",
        "CKM_SHA384_RSA_PKCS_PSS",
        "CKM_SHA512_RSA_PKCS_PSS",
        "CKM_SHA256_RSA_PKCS",
        "CKM_SHA384_RSA_PKCS",
        "CKM_SHA512_RSA_PKCS",
    }
    assert "nssDbMode = noDb" in text and "nssLibraryDirectory" not in text  # no key store; NSS from ld's path


def test_bare_user_name_turns_virtual_hosting_off() -> None:
    bare = _render([_cell()], username="alice", password='p:ss w0rd "q"')
    assert bare.files["users/alice"] == b'p:ss w0rd "q"'
    users = ET.fromstring(bare.files["conf/usersrepository.xml"])
    assert users.findtext("enableVirtualHosting") == "false"
    full = ET.fromstring(_render([_cell()]).files["conf/usersrepository.xml"])
    assert full.findtext("enableVirtualHosting") == "true"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ports": [10000, 10000]}, "distinct"),
        ({"ports": [10000]}, "2 cells but 1 ports"),
        ({"keystores": {}}, "no keystore"),
        ({"username": "a b"}, "user name"),
        ({"password": ""}, "password"),
    ],
    ids=["duplicate-port", "port-count", "no-keystore", "bad-user", "no-password"],
)
def test_render_refuses_bad_input(kwargs: dict[str, object], match: str) -> None:
    cells = [_cell(), _cell("imaps", Mode.IMPLICIT)]
    with pytest.raises(ValueError, match=match):
        _render(cells, **kwargs)


def test_mutual_tls_needs_a_truststore() -> None:
    mtls = _cell("smtps", Mode.IMPLICIT, auth=AuthPolicy("mtls", client_cert=True))
    with pytest.raises(ValueError, match="truststore"):
        _render([mtls], truststore=None)
    _render([_cell()], truststore=None)  # its twin without mutual TLS needs none


# --- key material --------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    return SessionPKI(tmp_path_factory.mktemp("pki"))


def _read_jks(data: bytes, password: str) -> list[tuple[int, str, bytes, list[bytes]]]:
    """The entries of a JKS file: (tag, alias, protected key or b"", certificates as DER); checks the digest."""
    body, digest = data[:-20], data[-20:]
    assert digest == hashlib.sha1(password.encode("utf-16-be") + b"Mighty Aphrodite" + body).digest()
    magic, version, count = struct.unpack(">III", body[:12])
    assert (magic, version) == (0xFEEDFEED, 2)
    pos = 12

    def take(n: int) -> bytes:
        nonlocal pos
        pos += n
        return body[pos - n : pos]

    def utf() -> str:
        return take(struct.unpack(">H", take(2))[0]).decode()

    def cert() -> bytes:
        assert utf() == "X.509"
        return take(struct.unpack(">I", take(4))[0])

    entries = []
    for _ in range(count):
        tag = struct.unpack(">I", take(4))[0]
        alias = utf()
        take(8)  # timestamp
        if tag == 1:
            key = take(struct.unpack(">I", take(4))[0])
            entries.append((tag, alias, key, [cert() for _ in range(struct.unpack(">I", take(4))[0])]))
        else:
            entries.append((tag, alias, b"", [cert()]))
    assert pos == len(body)
    return entries


def _recover(protected: bytes, password: str) -> bytes:
    """The PKCS#8 key in a JKS key entry, recovered as the JDK's KeyProtector.recover does."""
    algorithm = bytes.fromhex("300e060a2b060104012a021101010500")  # OID 1.3.6.1.4.1.42.2.17.1.1, NULL
    assert protected[0] == 0x30 and algorithm in protected
    blob = protected[protected.index(algorithm) + len(algorithm) :]
    assert blob[0] == 0x04
    header = 2 if blob[1] < 0x80 else 2 + (blob[1] & 0x7F)
    blob = blob[header:]
    salt, masked, check = blob[:20], blob[20:-20], blob[-20:]
    secret, stream, digest = password.encode("utf-16-be"), b"", salt
    while len(stream) < len(masked):
        digest = hashlib.sha1(secret + digest).digest()
        stream += digest
    key = bytes(a ^ b for a, b in zip(masked, stream, strict=False))
    assert hashlib.sha1(secret + key).digest() == check, "wrong password or a corrupt key"
    return key


@pytest.mark.parametrize("profile", [CertProfile.VALID, CertProfile.ECDSA_P256, CertProfile.MISSING_INTERMEDIATE])
def test_jks_keystore_holds_key_and_chain_as_presented(pki: SessionPKI, profile: CertProfile) -> None:
    files = pki.server_files(profile)
    data = jks_keystore(files.key_file.read_bytes(), files.cert_file.read_bytes(), "pw")
    [(tag, alias, protected, certs)] = _read_jks(data, "pw")
    chain = x509.load_pem_x509_certificates(files.cert_file.read_bytes())
    assert (tag, alias) == (1, "mailtls")
    assert certs == [c.public_bytes(serialization.Encoding.DER) for c in chain]
    key = serialization.load_der_private_key(_recover(protected, "pw"), None)
    original = serialization.load_pem_private_key(files.key_file.read_bytes(), None)
    assert key.private_numbers() == original.private_numbers()  # type: ignore[union-attr]
    with pytest.raises(AssertionError, match="wrong password"):
        _recover(protected, "wrong")
    again = jks_keystore(files.key_file.read_bytes(), files.cert_file.read_bytes(), "pw")
    assert again != data  # a fresh salt each time
    with pytest.raises(ValueError):
        jks_keystore(files.key_file.read_bytes(), b"", "pw")


def test_jks_truststore_layout_and_integrity(pki: SessionPKI) -> None:
    data = jks_truststore(pki.ca_file.read_bytes(), "pw")
    der = x509.load_pem_x509_certificate(pki.ca_file.read_bytes()).public_bytes(serialization.Encoding.DER)
    assert _read_jks(data, "pw") == [(2, "ca0", b"", [der])]
    with pytest.raises(AssertionError):
        _read_jks(data, "other")
    with pytest.raises(ValueError, match="no certificate"):
        jks_truststore(b"", "pw")


@pytest.mark.skipif(shutil.which("keytool") is None, reason="needs a JDK's keytool on the host")
@pytest.mark.parametrize("profile", [CertProfile.VALID, CertProfile.ECDSA_P256, CertProfile.MISSING_INTERMEDIATE])
def test_java_reads_both_stores_as_james_does(pki: SessionPKI, tmp_path: Path, profile: CertProfile) -> None:
    """The JDK itself opens both stores with the JKS type, as James does, and recovers the key and the chain
    (copied into a PKCS12 file that ``cryptography`` reads back)."""
    files = pki.server_files(profile)
    (tmp_path / "k.jks").write_bytes(jks_keystore(files.key_file.read_bytes(), files.cert_file.read_bytes(), "pw"))
    (tmp_path / "t.jks").write_bytes(jks_truststore(pki.ca_file.read_bytes(), "pw"))

    def keytool(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["keytool", *args], capture_output=True, text=True, timeout=60)

    def listing(store: str, password: str) -> subprocess.CompletedProcess[str]:
        return keytool("-list", "-storetype", "JKS", "-keystore", str(tmp_path / store), "-storepass", password)

    keys, trust = listing("k.jks", "pw"), listing("t.jks", "pw")
    assert keys.returncode == 0 and "PrivateKeyEntry" in keys.stdout, keys.stdout + keys.stderr
    assert trust.returncode == 0 and "trustedCertEntry" in trust.stdout, trust.stdout + trust.stderr
    assert listing("t.jks", "wrong").returncode != 0  # the integrity check is real
    assert listing("k.jks", "wrong").returncode != 0

    def export(key_password: str) -> subprocess.CompletedProcess[str]:
        return keytool(
            "-importkeystore", "-noprompt", "-srckeystore", str(tmp_path / "k.jks"), "-srcstoretype", "JKS",
            "-srcstorepass", "pw", "-srcalias", "mailtls", "-srckeypass", key_password,
            "-destkeystore", str(tmp_path / f"{key_password}.p12"), "-deststoretype", "PKCS12", "-deststorepass", "copy-password",
        )  # fmt: skip

    copied = export("pw")
    assert copied.returncode == 0, copied.stdout + copied.stderr
    key, cert, extra = pkcs12.load_key_and_certificates((tmp_path / "pw.p12").read_bytes(), b"copy-password")
    original = serialization.load_pem_private_key(files.key_file.read_bytes(), None)
    assert key is not None and key.private_numbers() == original.private_numbers()  # type: ignore[union-attr]
    assert [cert, *extra] == x509.load_pem_x509_certificates(files.cert_file.read_bytes())
    assert export("wrong").returncode != 0  # the key's own protection is checked too


def test_weak_and_ecdsa_keys_are_accepted() -> None:
    now = dt.datetime.now(dt.UTC)
    for key in (rsa.generate_private_key(65537, 1024), ec.generate_private_key(ec.SECP256R1())):
        name = x509.Name([])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        data = jks_keystore(key_pem, cert.public_bytes(serialization.Encoding.PEM), "pw")
        [(_tag, _alias, protected, certs)] = _read_jks(data, "pw")
        assert certs == [cert.public_bytes(serialization.Encoding.DER)]
        assert serialization.load_der_private_key(_recover(protected, "pw"), None).public_key() == key.public_key()


# --- logs, training files, build context -----------------------------------------------

_LOG = """\
06:07:48.985 INFO  [main] o.a.james.protocols.lib.SslConfig  - SSL enabled
06:07:59.100 INFO  [smtpserver-10003-io-0] o.a.j.p.n.BasicChannelInboundHandler protocol=SMTP - Connection established
06:07:59.200 WARN  [imapserver-10030-io-0] o.a.j.i.n.ImapChannelUpstreamHandler protocol=IMAP - Error while processing
sun.security.provider.certpath.SunCertPathBuilderException: unable to find valid certification path
\tat java.base/sun.security.ssl.Alert.createSSLException(Alert.java:131)
Wrapped by: javax.net.ssl.SSLHandshakeException: (certificate_unknown) PKIX path building failed
06:07:59.300 INFO  [smtpserver-100030-io-0] o.a.j.p.n.BasicChannelInboundHandler protocol=SMTP - other port
06:07:59.400 INFO  [imapserver-10030-io-0] o.a.j.i.n.ImapChannelUpstreamHandler protocol=IMAP - Connection closed
MAILTLS: provisioned 1 users
"""


def test_cell_log_lines_follow_the_server_threads_and_their_stack_traces() -> None:
    lines = cell_log_lines(_LOG, 10030)
    assert len(lines) == 5
    assert "certification path" in lines[1] and lines[2].startswith("\tat ") and "PKIX" in lines[3]
    assert all("10003" not in line and "MAILTLS" not in line for line in lines)
    assert cell_log_lines(_LOG, 10003) == [_LOG.splitlines()[1]]
    assert cell_log_lines(_LOG, 10099) == []


def test_training_files_in_the_recipe_are_current() -> None:
    folder = REPO / "containers" / "james" / "training"
    expected = training_files()
    found = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert found == expected, (
        'containers/james/training is stale: regenerate it with `python -c "from pytest_mailtls.backends.james '
        "import write_training_files; write_training_files('containers/james/training')\"`"
    )


def test_training_listens_on_the_loopback_only() -> None:
    # The image build shares the host's network; the real container binds all its interfaces (published on
    # 127.0.0.1 by the engine).
    files = training_files()
    binds = [b.text for n in ("smtp", "imap", "pop3") for b in ET.fromstring(files[f"conf/{n}server.xml"]).iter("bind")]
    assert binds and all(str(b).startswith("127.0.0.1:") for b in binds)
    assert all(
        str(b.text).startswith("0.0.0.0:")
        for b in ET.fromstring(_render(CELLS).files["conf/smtpserver.xml"]).iter("bind")
    )


def test_training_uses_every_extension_and_protocol() -> None:
    files = training_files()
    text = b"".join(files[f"conf/{n}"] for n in ("smtpserver.xml", "imapserver.xml", "pop3server.xml"))
    for needed in (b"RequireTlsHook", b"RequireAuthHook", b"MaildirCaptureHook", b"<clientAuth>", b"imapserver"):
        assert needed in text
    assert b"MAILTLS_REENABLE=TLSv1" in files["environment"]


def test_host_maven_mirror_takes_central_mirrors_only(tmp_path: Path) -> None:
    ns = 'xmlns="http://maven.apache.org/SETTINGS/1.2.0"'
    blocker = "<mirror><id>b</id><mirrorOf>external:http:*</mirrorOf><url>http://0.0.0.0/</url><blocked>true</blocked></mirror>"
    only_blocker = tmp_path / "global.xml"
    only_blocker.write_text(f"<settings {ns}><mirrors>{blocker}</mirrors></settings>")
    assert host_maven_mirror([only_blocker, tmp_path / "missing.xml"]) is None
    user = tmp_path / "user.xml"
    user.write_text(
        f"<settings {ns}><mirrors>{blocker}"
        "<mirror><id>c</id><mirrorOf>central,!snapshots</mirrorOf><url>https://mirror.invalid/maven2</url></mirror>"
        "</mirrors></settings>"
    )
    assert host_maven_mirror([user, only_blocker]) == "https://mirror.invalid/maven2"
    broken = tmp_path / "broken.xml"
    broken.write_text("<settings")
    assert host_maven_mirror([broken]) is None


def test_build_context_adds_host_files_but_never_to_the_repository(tmp_path: Path) -> None:
    recipe = REPO / "containers" / "james"
    root = james.prepare_build_context(recipe, tmp_path)
    folder = root / "james"
    assert (folder / "Dockerfile").read_bytes() == (recipe / "Dockerfile").read_bytes()
    assert (folder / "ext" / "src").is_dir() and (folder / "training" / "environment").is_file()
    bundle = james.host_ca_bundle()
    if bundle is not None:
        assert (folder / "host-ca.pem").read_bytes() == bundle.read_bytes()
    assert not (recipe / "host-ca.pem").exists() and not (recipe / "maven-mirror.url").exists()


# --- waiting for the entrypoint ----------------------------------------------------------


def test_wait_provisioned_returns_once_the_status_file_says_so(tmp_path: Path) -> None:
    status = tmp_path / "status"
    threading.Timer(0.2, lambda: status.write_text("provisioned 1 users\n")).start()
    started = time.monotonic()
    james._wait_provisioned(status, lambda: "log", lambda: None, time.monotonic() + 10)
    assert 0.15 < time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("status", "alive", "match"),
    [
        ("FAILED creating user x: java.lang.IllegalArgumentException\n", None, "MAILTLS: FAILED creating user x"),
        (None, "the James container exited", "container exited"),
        (None, None, "before the deadline"),
    ],
    ids=["provisioning-failed", "jvm-died", "deadline"],
)
def test_wait_provisioned_fails_fast_with_the_log(
    tmp_path: Path, status: str | None, alive: str | None, match: str
) -> None:
    path = tmp_path / "status"
    if status is not None:
        path.write_text(status)
    deadline = time.monotonic() + (0.3 if alive is None and status is None else 30)
    started = time.monotonic()
    with pytest.raises(ServerStartError, match=match) as caught:
        james._wait_provisioned(path, lambda: "the log", lambda: alive, deadline)
    assert caught.value.log == "the log"
    assert time.monotonic() - started < 5


def test_wait_provisioned_ends_at_once_when_the_start_is_cancelled(tmp_path: Path) -> None:
    from pytest_mailtls.readiness import cancel_scope
    from pytest_mailtls.runtime import StartCancelled

    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    with cancel_scope(cancel), pytest.raises(StartCancelled):
        james._wait_provisioned(tmp_path / "status", lambda: "log", lambda: None, time.monotonic() + 30)
    assert time.monotonic() - started < 2
