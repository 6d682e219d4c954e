"""The policy model: cell ids, services, TLS policies and what they refuse to be."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess

import pytest

from pytest_mailtls.policy import (
    SERVICES,
    VERSIONS,
    AuthPolicy,
    Cell,
    CertProfile,
    Mode,
    Protocol,
    TLSPolicy,
    version_index,
)

INTERMEDIATE = TLSPolicy("intermediate")
TLS12_ONLY = TLSPolicy("tls12-only", min_version="TLSv1.2", max_version="TLSv1.2")
LEGACY = TLSPolicy("legacy", min_version="TLSv1", max_version="TLSv1.3")


def _cell(
    service: str = "submission",
    mode: Mode = Mode.STARTTLS,
    policy: TLSPolicy | None = TLS12_ONLY,
    cert: CertProfile | None = CertProfile.VALID,
    **kwargs: AuthPolicy,
) -> Cell:
    return Cell("postfix", SERVICES[service], mode, policy, cert, **kwargs)


# --- cell ids -------------------------------------------------------------------------


def test_tls_cell_id_is_the_documented_spelling() -> None:
    assert _cell().id == "postfix-submission-starttls-tls12-only-valid"
    assert str(_cell()) == _cell().id


def test_cell_id_is_stable_across_equal_constructions() -> None:
    # Ids name fixtures, manifest records and report rows: equal cells must agree.
    again = Cell(
        "postfix",
        SERVICES["submission"],
        Mode("starttls"),
        TLSPolicy("tls12-only", "TLSv1.2", "TLSv1.2"),
        CertProfile("valid"),
    )
    assert again.id == _cell().id
    assert again == _cell()


def test_cell_id_names_every_dimension() -> None:
    cell = Cell("james", SERVICES["imaps"], Mode.IMPLICIT, LEGACY, CertProfile.MISSING_INTERMEDIATE)
    assert cell.id == "james-imaps-implicit-legacy-missing-intermediate"


def test_default_auth_adds_no_suffix_and_other_auth_does() -> None:
    assert not _cell(auth=AuthPolicy("default")).id.endswith("default")
    assert _cell(auth=AuthPolicy("default")).id == _cell().id
    mtls = _cell(auth=AuthPolicy("mtls", client_cert=True))
    assert mtls.id == "postfix-submission-starttls-tls12-only-valid-mtls"


def test_plain_cell_has_no_policy_or_cert_in_its_id() -> None:
    cell = Cell("postfix", SERVICES["smtp"], Mode.PLAIN, None, None, AuthPolicy("open", (), required=False))
    assert cell.id == "postfix-smtp-plain-open"
    assert cell.policy is None and cell.cert is None
    assert not cell.tls
    assert not cell.accepts_version("TLSv1.2")


def test_cell_ids_of_different_cells_differ() -> None:
    ids = {
        _cell().id,
        _cell(policy=INTERMEDIATE).id,
        _cell(cert=CertProfile.EXPIRED).id,
        _cell(mode=Mode.STARTTLS_REQUIRED).id,
        _cell(service="smtp").id,
        _cell(auth=AuthPolicy("open", (), required=False)).id,
    }
    assert len(ids) == 6


def test_cell_protocol_and_version_acceptance() -> None:
    cell = _cell()
    assert cell.protocol is Protocol.SMTP
    assert cell.tls
    assert cell.accepts_version("TLSv1.2")
    assert not cell.accepts_version("TLSv1.3")


# --- invalid cells ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "mode"),
    [("submission", Mode.IMPLICIT), ("smtps", Mode.STARTTLS), ("imaps", Mode.PLAIN), ("pop3s", Mode.STARTTLS_REQUIRED)],
)
def test_service_refuses_a_mode_it_cannot_run(service: str, mode: Mode) -> None:
    policy, cert = (None, None) if mode is Mode.PLAIN else (INTERMEDIATE, CertProfile.VALID)
    with pytest.raises(ValueError, match=f"service {service} cannot run in mode {mode}"):
        Cell("postfix", SERVICES[service], mode, policy, cert)


def test_tls_cell_without_policy_or_cert_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a policy and a certificate profile"):
        _cell(policy=None)
    with pytest.raises(ValueError, match="needs a policy and a certificate profile"):
        _cell(cert=None)


def test_plain_cell_with_policy_or_cert_is_refused() -> None:
    with pytest.raises(ValueError, match="a plain cell neither"):
        _cell(mode=Mode.PLAIN, policy=INTERMEDIATE, cert=None)
    with pytest.raises(ValueError, match="a plain cell neither"):
        _cell(mode=Mode.PLAIN, policy=None, cert=CertProfile.VALID)


# --- services ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smtps", "imaps", "pop3s"])
def test_implicit_services_allow_only_implicit(name: str) -> None:
    service = SERVICES[name]
    assert service.implicit
    assert service.allows(Mode.IMPLICIT)
    for mode in (Mode.PLAIN, Mode.STARTTLS, Mode.STARTTLS_REQUIRED):
        assert not service.allows(mode)


@pytest.mark.parametrize("name", ["smtp", "submission", "imap", "pop3"])
def test_plaintext_services_allow_everything_but_implicit(name: str) -> None:
    service = SERVICES[name]
    assert not service.implicit
    assert not service.allows(Mode.IMPLICIT)
    for mode in (Mode.PLAIN, Mode.STARTTLS, Mode.STARTTLS_REQUIRED):
        assert service.allows(mode)


def test_services_have_their_well_known_ports_and_protocols() -> None:
    ports = {name: (s.protocol, s.default_port) for name, s in SERVICES.items()}
    assert ports == {
        "smtp": (Protocol.SMTP, 25),
        "submission": (Protocol.SMTP, 587),
        "smtps": (Protocol.SMTP, 465),
        "imap": (Protocol.IMAP, 143),
        "imaps": (Protocol.IMAP, 993),
        "pop3": (Protocol.POP3, 110),
        "pop3s": (Protocol.POP3, 995),
    }


def test_every_server_declares_known_services_a_title_and_its_remedy_hints() -> None:
    from pytest_mailtls.backends import backend_class, docker_servers, server_names

    assert set(server_names()) == {"postfix", "dovecot", "james", "courier", "embedded"}
    assert set(docker_servers()) == {"postfix", "dovecot", "james", "courier"}
    for name in server_names():
        backend = backend_class(name)
        assert backend.name == name and backend.title
        assert backend.services and set(backend.services) <= set(SERVICES)
        assert set(backend.remedies) == {"versions", "chain", "tls"}
        assert backend.log_rules(), f"{name} declares its log vocabulary"


def test_mode_tls_flag() -> None:
    assert [m for m in Mode if not m.tls] == [Mode.PLAIN]


# --- TLS policies ------------------------------------------------------------------------


def test_versions_are_the_inclusive_range_in_order() -> None:
    assert INTERMEDIATE.versions == ("TLSv1.2", "TLSv1.3")
    assert TLS12_ONLY.versions == ("TLSv1.2",)
    assert LEGACY.versions == VERSIONS
    assert TLSPolicy("old", min_version="TLSv1", max_version="TLSv1.1").versions == ("TLSv1", "TLSv1.1")


def test_accepts_only_versions_in_range() -> None:
    assert TLS12_ONLY.accepts("TLSv1.2")
    assert not TLS12_ONLY.accepts("TLSv1.3")
    assert not TLS12_ONLY.accepts("TLSv1.1")
    assert not TLS12_ONLY.accepts("SSLv3")


def test_legacy_means_tls10_or_tls11_allowed() -> None:
    assert LEGACY.legacy
    assert TLSPolicy("tls11", min_version="TLSv1.1", max_version="TLSv1.1").legacy
    assert not INTERMEDIATE.legacy
    assert not TLSPolicy("modern", min_version="TLSv1.3").legacy


def test_openssl_ciphers_adds_seclevel_zero_for_legacy_only() -> None:
    assert LEGACY.openssl_ciphers() == "DEFAULT:@SECLEVEL=0"
    assert INTERMEDIATE.openssl_ciphers() == "DEFAULT"
    custom = TLSPolicy("c", min_version="TLSv1", max_version="TLSv1.2", ciphers="AES256-SHA")
    assert custom.openssl_ciphers() == "AES256-SHA:@SECLEVEL=0"
    modern_custom = TLSPolicy("m", ciphers="ECDHE-RSA-AES128-GCM-SHA256")
    assert modern_custom.openssl_ciphers() == "ECDHE-RSA-AES128-GCM-SHA256"


def test_openssl_ciphers_keeps_an_explicit_seclevel() -> None:
    policy = TLSPolicy("legacy", min_version="TLSv1", ciphers="ALL:@SECLEVEL=0")
    assert policy.openssl_ciphers() == "ALL:@SECLEVEL=0"


def test_openssl_ciphers_is_accepted_by_openssl() -> None:
    for policy in (LEGACY, INTERMEDIATE, TLSPolicy("c", min_version="TLSv1", ciphers="AES256-SHA")):
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(policy.openssl_ciphers())


def test_policy_json_round_trip() -> None:
    policy = TLSPolicy("x", "TLSv1.1", "TLSv1.2", ciphers="AES256-SHA", ciphersuites="TLS_AES_128_GCM_SHA256")
    data = policy.to_json()
    assert data == {
        "name": "x",
        "min_version": "TLSv1.1",
        "max_version": "TLSv1.2",
        "ciphers": "AES256-SHA",
        "ciphersuites": "TLS_AES_128_GCM_SHA256",
        "dh_bits": None,
    }
    assert TLSPolicy.from_json(data) == policy
    small = TLSPolicy("d", ciphers="DHE-RSA-AES128-GCM-SHA256", dh_bits=1024)
    assert TLSPolicy.from_json(small.to_json()) == small
    assert TLSPolicy.from_json(INTERMEDIATE.to_json()) == INTERMEDIATE


def test_impossible_range_is_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("min_version TLSv1.3 is above max_version TLSv1.2")):
        TLSPolicy("upside-down", min_version="TLSv1.3", max_version="TLSv1.2")


@pytest.mark.parametrize("field", ["min_version", "max_version"])
@pytest.mark.parametrize("bad", ["SSLv3", "TLSv1.0", "tlsv1.2", "1.2", ""])
def test_unknown_version_is_refused_with_the_allowed_list(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=r"unknown TLS version .*allowed: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"):
        TLSPolicy("bad", **{field: bad})


def test_version_index() -> None:
    assert [version_index(v) for v in VERSIONS] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="unknown TLS version 'TLSv2'"):
        version_index("TLSv2")


# --- certificate profiles and auth -------------------------------------------------------


def test_only_valid_profiles_verify_and_every_other_names_its_failure() -> None:
    verifying = {p for p in CertProfile if p.verifies}
    assert verifying == {
        CertProfile.VALID,
        CertProfile.ECDSA_P256,
        CertProfile.RSA_4096,
        CertProfile.ECDSA_P384,
        CertProfile.REVOCATION_UNREACHABLE,
    }
    for profile in CertProfile:
        assert (profile.failure is None) == profile.verifies
    assert CertProfile.WRONG_HOST.failure == "hostname-mismatch"
    # Only revocation and the CN fallback escape OpenSSL's default checks (Python's ssl, curl).
    lenient = {p for p in CertProfile if p.fault.lenient}
    assert lenient == {CertProfile.REVOKED, CertProfile.NO_SAN}
    assert {p for p in CertProfile if p.fault.verifies_by_default} == verifying | lenient
    assert CertProfile.ECDSA_P256.key_type == "ecdsa"
    assert CertProfile.VALID.key_type == "rsa"


def test_auth_json_round_trip() -> None:
    auth = AuthPolicy("mtls", ("PLAIN",), tls_only=True, required=False, client_cert=True)
    data = auth.to_json(username="u@x", password="p")
    assert data == {
        "name": "mtls",
        "mechanisms": ["PLAIN"],
        "username": "u@x",
        "password": "p",
        "tls_only": True,
        "required": False,
    }
    assert AuthPolicy.from_json(data, client_cert=True) == auth
    assert AuthPolicy.from_json(data, client_cert=False) != auth


# --- weak crypto: static RSA with CBC, NULL encryption ------------------------------------------------


def test_static_rsa_cbc_and_null_policies_are_broken_crypto() -> None:
    static = TLSPolicy("static-rsa-cbc", "TLSv1.2", "TLSv1.2", ciphers="AES128-SHA:AES256-SHA")
    null = TLSPolicy("null-cipher", "TLSv1.2", "TLSv1.2", ciphers="NULL-SHA256:NULL-SHA")
    assert static.group == null.group == "broken crypto"
    assert not static.null_encryption and null.null_encryption
    # @SECLEVEL in the list no longer hides NULL encryption: the suites decide.
    assert TLSPolicy("n0", "TLSv1.2", "TLSv1.2", ciphers="eNULL:@SECLEVEL=0").group == "broken crypto"
    # A list with one encrypting suite, or TLS 1.3 on offer, is not NULL-only.
    assert not TLSPolicy("mix", "TLSv1.2", "TLSv1.2", ciphers="NULL-SHA256:AES128-SHA").null_encryption
    assert not TLSPolicy("n13", "TLSv1.2", "TLSv1.3", ciphers="NULL-SHA256").null_encryption


def test_null_policy_hands_openssl_security_level_zero() -> None:
    null = TLSPolicy("null-cipher", "TLSv1.2", "TLSv1.2", ciphers="NULL-SHA256:NULL-SHA")
    assert null.openssl_ciphers() == "NULL-SHA256:NULL-SHA:@SECLEVEL=0"
    static = TLSPolicy("static-rsa-cbc", "TLSv1.2", "TLSv1.2", ciphers="AES128-SHA:AES256-SHA")
    assert static.openssl_ciphers() == "AES128-SHA:AES256-SHA"  # served at the default level
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(null.openssl_ciphers())
    assert {c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"} == {"NULL-SHA256", "NULL-SHA"}


# --- weak crypto: DHE over a small group ---------------------------------------------------------------


DHE_1024 = TLSPolicy(
    "dhe-1024", "TLSv1.2", "TLSv1.2", ciphers="DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384", dh_bits=1024
)


def test_dhe_over_a_1024_bit_group_is_broken_crypto_at_level_one() -> None:
    assert DHE_1024.small_dh and DHE_1024.weak_dh and DHE_1024.group == "broken crypto"
    assert DHE_1024.openssl_ciphers() == "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=1"
    # The same suites over the server's own group (or ffdhe2048) are forward-secret AEAD: secure.
    own = TLSPolicy("dhe", "TLSv1.2", "TLSv1.2", ciphers="DHE-RSA-AES128-GCM-SHA256")
    big = TLSPolicy("dhe", "TLSv1.2", "TLSv1.2", ciphers="DHE-RSA-AES128-GCM-SHA256", dh_bits=2048)
    assert own.group == big.group == "secure" and not own.small_dh and not big.small_dh
    assert big.openssl_ciphers() == "DHE-RSA-AES128-GCM-SHA256"
    # A small group next to ECDHE suites, or TLS 1.3 on offer, leaves a good key exchange: not weak-dh.
    mixed = TLSPolicy("mix", "TLSv1.2", "TLSv1.2", ciphers="DHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")
    assert not TLSPolicy(**{**_fields(mixed), "dh_bits": 1024}).weak_dh
    assert not TLSPolicy("d13", "TLSv1.2", "TLSv1.3", ciphers="DHE-RSA-AES128-GCM-SHA256", dh_bits=1024).weak_dh
    # Legacy and NULL keep level 0, which takes a 1024-bit group as well.
    assert TLSPolicy("l", "TLSv1", "TLSv1.2", dh_bits=1024).openssl_ciphers() == "DEFAULT:@SECLEVEL=0"


def test_a_small_group_loads_at_level_one_and_not_at_level_two() -> None:
    from pytest_mailtls.tls import dh_params_pem

    pem = dh_params_pem(1024)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(DHE_1024.openssl_ciphers())
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".pem") as f:
        f.write(pem)
        f.flush()
        ctx.load_dh_params(f.name)
        strict = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        strict.set_ciphers("DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=2")
        with pytest.raises(ssl.SSLError, match="dh key too small"):
            strict.load_dh_params(f.name)


def test_unknown_dh_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="no DH group of 768 bits"):
        TLSPolicy("x", dh_bits=768)


def _fields(policy: TLSPolicy) -> dict[str, object]:
    return {k: getattr(policy, k) for k in ("name", "min_version", "max_version", "ciphers", "ciphersuites")}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_the_fixed_groups_are_what_openssl_knows() -> None:
    from pytest_mailtls.tls import dh_params_pem

    # ffdhe2048 byte for byte as OpenSSL writes its named group; the 1024-bit group a safe prime OpenSSL accepts.
    named = subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe2048"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert dh_params_pem(2048) == named.stdout
    checked = subprocess.run(
        ["openssl", "dhparam", "-check", "-text", "-noout"], input=dh_params_pem(1024), capture_output=True, text=True
    )
    assert checked.returncode == 0 and "DH parameters appear to be ok" in checked.stdout + checked.stderr
    assert "(1024 bit)" in checked.stdout
