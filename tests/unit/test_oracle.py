"""The oracle: what a client with a given profile must get on each cell, and the verdicts.

The expectations are checked across the default matrix for a few profiles;
each success has its failing twin on a neighbouring cell.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from pytest_mailtls.clients.command import COMMAND_PROFILES
from pytest_mailtls.clients.families.java import JDK17_DEFAULT_SUITES
from pytest_mailtls.clients.java import JAVA_PROFILES
from pytest_mailtls.clients.python import PYTHON_PROFILES
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.oracle import (
    FAILURE_CLASSES,
    SUCCESS,
    VERDICTS,
    ClientProfile,
    Expectation,
    applicable,
    cell_is_secure,
    expect,
    jsse_to_openssl,
    verdict,
)
from pytest_mailtls.policy import Cell, CertProfile

MATRIX = load_matrix()
POSTFIX = {c.id: c for c in MATRIX.cells(servers=["postfix"])}
DOVECOT = {c.id: c for c in MATRIX.cells(servers=["dovecot"])}

PYTHON = PYTHON_PROFILES["python-smtplib"]
UNSAFE = PYTHON_PROFILES["python-unsafe"]
JAVA = JAVA_PROFILES["jakarta-mail"]
JAVA_TLS1 = JAVA_PROFILES["jakarta-mail-tls1"]
CURL = COMMAND_PROFILES["curl"]
MSMTP = COMMAND_PROFILES["msmtp"]
S_CLIENT = COMMAND_PROFILES["openssl-s_client"]


def cell(suffix: str, server: dict[str, Cell] = POSTFIX) -> Cell:
    prefix = next(iter(server)).split("-")[0]
    return server[f"{prefix}-{suffix}"]


def outcome(profile: ClientProfile, suffix: str) -> str:
    return expect(profile, cell(suffix)).outcome


# --- the certificate column: each fault is its own class, the valid twins succeed --------


@pytest.mark.parametrize("profile", [PYTHON, UNSAFE, JAVA, CURL, MSMTP], ids=lambda p: p.name)
@pytest.mark.parametrize("fault", [c for c in CertProfile if c.failure], ids=str)
def test_certificate_faults_expect_their_class_for_every_profile(profile: ClientProfile, fault: CertProfile) -> None:
    # Verification switched off does not lower the bar: that is what makes an unsafe client "insecure".
    bad = expect(profile, cell(f"smtps-implicit-intermediate-{fault}"))
    assert bad.outcome == fault.failure
    assert bad.secure_overlap is False
    good = expect(profile, cell("smtps-implicit-intermediate-valid"))
    assert good.outcome == SUCCESS and good.secure_overlap is True


def test_ecdsa_certificate_is_as_good_as_rsa() -> None:
    assert outcome(PYTHON, "submission-starttls-intermediate-ecdsa-p256") == SUCCESS
    assert outcome(PYTHON, "submission-starttls-intermediate-self-signed") == "untrusted-certificate"


# --- versions -----------------------------------------------------------------------------


def test_modern_client_meets_legacy_only_servers_with_a_version_mismatch_that_is_not_its_fault() -> None:
    for suffix in ("smtps-implicit-tls10-only-valid", "submission-starttls-tls11-only-valid"):
        e = expect(PYTHON, cell(suffix))
        assert (e.outcome, e.secure_overlap) == ("protocol-version-mismatch", False)
    # The legacy policy also speaks TLS 1.3, so the same client succeeds there at 1.3.
    e = expect(PYTHON, cell("smtps-implicit-legacy-valid"))
    assert (e.outcome, e.version) == (SUCCESS, "TLSv1.3")


def test_tls1_only_java_profile_fails_everywhere_and_is_to_blame_where_tls12_exists() -> None:
    # javax.mail 1.4.5 offered only TLSv1; JDK 17 disables it: nothing is left to offer.
    assert JAVA_TLS1.effective_versions == ()
    modern = expect(JAVA_TLS1, cell("smtps-implicit-modern-valid"))
    assert (modern.outcome, modern.secure_overlap) == ("protocol-version-mismatch", True)
    assert "runtime disables" in modern.reason
    old = expect(JAVA_TLS1, cell("smtps-implicit-tls10-only-valid"))
    assert (old.outcome, old.secure_overlap) == ("protocol-version-mismatch", False)
    assert expect(JAVA, cell("smtps-implicit-modern-valid")).outcome == SUCCESS


def test_a_client_that_allows_tlsv1_succeeds_on_a_tlsv1_server() -> None:
    e = expect(MSMTP, cell("smtps-implicit-tls10-only-valid"))
    assert (e.outcome, e.version, e.secure_overlap) == (SUCCESS, "TLSv1", False)
    assert expect(PYTHON, cell("smtps-implicit-tls10-only-valid")).outcome == "protocol-version-mismatch"


def test_tls12_only_client_against_tls13_only_server_is_incompatible() -> None:
    old = ClientProfile("tls12", versions=("TLSv1.2",))
    e = expect(old, cell("smtps-implicit-modern-valid"))
    assert (e.outcome, e.secure_overlap) == ("protocol-version-mismatch", True)
    assert expect(old, cell("smtps-implicit-tls12-only-valid")).outcome == SUCCESS


# --- ciphers ------------------------------------------------------------------------------


def test_static_rsa_only_server_splits_clients_by_their_default_lists() -> None:
    suffix = "smtps-implicit-tls12-single-cipher-valid"  # AES256-GCM-SHA384: no forward secrecy
    assert outcome(PYTHON, suffix) == "no-shared-cipher"  # Python's default list has no static RSA
    assert outcome(CURL, suffix) == SUCCESS  # OpenSSL DEFAULT still does
    # JDK 17 did until its java.security gained TLS_RSA_* (17.0.21 here): the prediction follows the local JVM.
    assert outcome(JAVA, suffix) == (SUCCESS if _jvm_offers_static_rsa() else "no-shared-cipher")
    assert expect(PYTHON, cell(suffix)).secure_overlap is False


def test_explicit_cipher_lists_in_openssl_or_jsse_names() -> None:
    suffix = "smtps-implicit-tls12-single-cipher-valid"
    assert outcome(ClientProfile("p", ciphers="AES256-GCM-SHA384"), suffix) == SUCCESS
    assert outcome(ClientProfile("j", family="java", ciphers="TLS_RSA_WITH_AES_256_GCM_SHA384"), suffix) == SUCCESS
    assert outcome(ClientProfile("j", family="java", ciphers="TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"), suffix) == (
        "no-shared-cipher"
    )
    # TLS 1.3 is chosen where both speak it: a TLS <= 1.2 list does not matter there.
    assert outcome(ClientProfile("p", ciphers="AES256-GCM-SHA384"), "smtps-implicit-modern-valid") == SUCCESS


def _jvm_offers_static_rsa() -> bool:
    from pytest_mailtls.clients.families.java import FAMILY, runtime_default_suites

    return FAMILY.default_suites == runtime_default_suites() and any(
        s.startswith("TLS_RSA_") for s in FAMILY.default_suites
    )


def test_cipher_names_of_family_defaults() -> None:
    assert ("AES256-GCM-SHA384" in JAVA.cipher_names()) is _jvm_offers_static_rsa()
    assert "ECDHE-RSA-AES256-GCM-SHA384" in JAVA.cipher_names()
    assert "AES256-GCM-SHA384" not in PYTHON.cipher_names()
    assert "ECDHE-RSA-AES128-GCM-SHA256" in PYTHON.cipher_names()


# --- TLS modes, STARTTLS, credentials, client certificates --------------------------------


def test_plain_ports() -> None:
    # A client that requires TLS refuses both plain ports; that is correct, not incompatible.
    for suffix in ("submission-plain-cleartext-auth", "smtp-plain-open"):
        e = expect(PYTHON, cell(suffix))
        assert (e.outcome, e.secure_overlap, e.tls) == ("starttls-not-offered", False, False)
    # An opportunistic client may deliver to an open MX in plaintext, but must not log in without TLS.
    assert outcome(UNSAFE, "smtp-plain-open") == SUCCESS
    assert outcome(UNSAFE, "submission-plain-cleartext-auth") == "starttls-not-offered"


def test_client_that_never_starttls() -> None:
    never = ClientProfile("never", starttls="never")
    e = expect(never, cell("submission-starttls-required-intermediate-valid"))
    assert (e.outcome, e.secure_overlap) == ("starttls-required", True)
    assert outcome(never, "smtps-implicit-intermediate-valid") == SUCCESS  # implicit TLS needs no STARTTLS


def test_client_without_implicit_tls_gets_wrong_tls_mode() -> None:
    starttls_only = ClientProfile("starttls-only", implicit_tls=False)
    assert outcome(starttls_only, "smtps-implicit-intermediate-valid") == "wrong-tls-mode"
    assert outcome(starttls_only, "submission-starttls-intermediate-valid") == SUCCESS


def test_mutual_tls_needs_a_client_certificate() -> None:
    e = expect(ClientProfile("nocert", client_cert=False), cell("smtps-implicit-intermediate-valid-mtls"))
    assert (e.outcome, e.secure_overlap) == ("client-certificate-required", True)
    assert outcome(PYTHON, "smtps-implicit-intermediate-valid-mtls") == SUCCESS


def test_untrusting_client_and_silent_client() -> None:
    assert outcome(ClientProfile("system-cas", trusts_ca=False), "smtps-implicit-intermediate-valid") == (
        "untrusted-certificate"
    )
    silent = ClientProfile("silent", sends_credentials=False)
    assert outcome(silent, "submission-starttls-intermediate-valid") == "auth-failed"
    assert outcome(silent, "smtp-starttls-intermediate-valid-open") == SUCCESS


def test_handshake_only_client_ignores_auth_but_needs_tls() -> None:
    assert outcome(S_CLIENT, "submission-starttls-intermediate-valid") == SUCCESS
    assert outcome(S_CLIENT, "submission-plain-cleartext-auth") == "starttls-not-offered"


def test_applicable_by_protocol() -> None:
    imap = cell("imaps-implicit-intermediate-valid", DOVECOT)
    assert not applicable(PYTHON, imap)
    assert applicable(PYTHON_PROFILES["python-imaplib"], imap)
    assert expect(PYTHON_PROFILES["python-imaplib"], imap).outcome == SUCCESS


def test_every_expected_class_is_a_known_class() -> None:
    profiles = [*PYTHON_PROFILES.values(), *JAVA_PROFILES.values(), *COMMAND_PROFILES.values()]
    for c in MATRIX.cells():
        for p in profiles:
            assert expect(p, c).outcome in (SUCCESS, *FAILURE_CLASSES)


def test_cell_is_secure() -> None:
    assert cell_is_secure(cell("smtps-implicit-legacy-valid"))  # TLS 1.3 is on offer
    assert not cell_is_secure(cell("smtps-implicit-tls10-only-valid"))
    assert not cell_is_secure(cell("smtps-implicit-tls12-single-cipher-valid"))  # no forward secrecy
    assert not cell_is_secure(cell("smtp-plain-open"))
    assert not cell_is_secure(cell("smtps-implicit-intermediate-expired"))


# --- verdicts -----------------------------------------------------------------------------

OK = Expectation(SUCCESS, True, True, "works")
MUST_FAIL = Expectation("certificate-expired", False, True, "expired")
OWN_FAULT = Expectation("protocol-version-mismatch", True, True, "offers TLSv1 only")
OPEN_MX = Expectation(SUCCESS, False, False, "plaintext MX")


@pytest.mark.parametrize(
    ("expectation", "ok", "tls", "want"),
    [
        (OK, True, True, "pass"),
        (OK, False, None, "incompatible"),
        (OK, True, False, "insecure"),  # went on in plaintext where TLS was offered
        (OK, True, None, "pass"),  # a client that cannot tell is trusted on its exit status
        (MUST_FAIL, False, None, "refused-correctly"),
        (MUST_FAIL, True, True, "insecure"),
        (OWN_FAULT, False, None, "incompatible"),
        (OWN_FAULT, True, True, "insecure"),
        (OPEN_MX, True, False, "pass"),
        (OPEN_MX, False, None, "incompatible"),
    ],
)
def test_verdicts(expectation: Expectation, ok: bool, tls: bool | None, want: str) -> None:
    got, why = verdict(expectation, ok=ok, tls=tls)
    assert got == want and got in VERDICTS
    assert why


# --- profile validation and names ---------------------------------------------------------


def test_profile_rejects_unknown_versions_and_modes() -> None:
    with pytest.raises(ValueError, match="unknown TLS version"):
        ClientProfile("x", versions=("TLSv1.4",))
    with pytest.raises(ValueError, match="starttls must be"):
        ClientProfile("x", starttls="sometimes")  # type: ignore[arg-type]
    assert ClientProfile("x").to_json()["starttls"] == "required"


def test_jsse_names_map_onto_openssl_names() -> None:
    assert jsse_to_openssl("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256") == "ECDHE-RSA-AES128-GCM-SHA256"
    assert jsse_to_openssl("TLS_RSA_WITH_AES_256_CBC_SHA") == "AES256-SHA"
    assert jsse_to_openssl("TLS_AES_128_GCM_SHA256") == "TLS_AES_128_GCM_SHA256"
    assert jsse_to_openssl("TLS_FOO_WITH_BAR") == "TLS_FOO_WITH_BAR"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_jsse_mapping_agrees_with_openssl_stdname() -> None:
    out = subprocess.run(
        ["openssl", "ciphers", "-stdname", "ALL:@SECLEVEL=0"], capture_output=True, text=True, check=True
    ).stdout
    pairs = [line.split()[:3:2] for line in out.splitlines() if " - " in line]
    known = {openssl for _, openssl in pairs}
    for standard, openssl in pairs:
        mapped = jsse_to_openssl(standard)
        assert mapped in (standard, openssl), f"{standard} -> {mapped}, OpenSSL says {openssl}"
    for suite in JDK17_DEFAULT_SUITES:
        assert jsse_to_openssl(suite) in known, suite


# --- weak crypto: NULL encryption is never a success, static RSA with CBC follows the single-cipher rule ------


NULL_OFFER = ClientProfile("offers-null", ciphers="NULL-SHA256:NULL-SHA:AES128-SHA:@SECLEVEL=0")


@pytest.mark.parametrize("profile", [PYTHON, UNSAFE, CURL, S_CLIENT, NULL_OFFER], ids=lambda p: p.name)
@pytest.mark.parametrize("suffix", ["smtps-implicit-null-cipher-valid", "submission-starttls-null-cipher-valid"])
def test_any_success_on_a_null_cell_is_insecure(profile: ClientProfile, suffix: str) -> None:
    e = expect(profile, cell(suffix))
    assert e.outcome == "no-shared-cipher" and not e.secure_overlap and e.tls
    assert "NULL encryption" in e.reason
    assert verdict(e, ok=True, tls=True)[0] == "insecure"
    assert verdict(e, ok=False, tls=None)[0] == "refused-correctly"
    assert cell(suffix).group == "broken crypto" and not cell_is_secure(cell(suffix))


def test_static_rsa_cbc_follows_the_static_rsa_rule() -> None:
    suffix = "smtps-implicit-static-rsa-cbc-valid"
    assert cell(suffix).group == "broken crypto" and not cell_is_secure(cell(suffix))
    # Python's default list has no static RSA: it must refuse, and refusing is right.
    py = expect(PYTHON, cell(suffix))
    assert py.outcome == "no-shared-cipher" and not py.secure_overlap
    assert verdict(py, ok=False, tls=None)[0] == "refused-correctly"
    # OpenSSL's DEFAULT (curl, s_client) still offers AES128-SHA: they get a session, as on tls12-single-cipher.
    for profile in (CURL, S_CLIENT, NULL_OFFER):
        e = expect(profile, cell(suffix))
        assert e.outcome == SUCCESS and not e.secure_overlap and e.version == "TLSv1.2"
        assert verdict(e, ok=True, tls=True)[0] == "pass"
    assert expect(CURL, cell(suffix)).outcome == expect(CURL, cell("smtps-implicit-tls12-single-cipher-valid")).outcome


# --- weak crypto: DHE over a 1024-bit group is never a success -------------------------------------------


DHE_OFFER = ClientProfile("offers-dhe", ciphers="DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0")


@pytest.mark.parametrize("profile", [PYTHON, UNSAFE, CURL, S_CLIENT, JAVA, DHE_OFFER], ids=lambda p: p.name)
@pytest.mark.parametrize("suffix", ["smtps-implicit-dhe-1024-valid", "submission-starttls-dhe-1024-valid"])
def test_any_success_on_a_small_dh_cell_is_insecure(profile: ClientProfile, suffix: str) -> None:
    e = expect(profile, cell(suffix))
    assert e.outcome == "weak-dh" and not e.secure_overlap and e.tls and e.version == "TLSv1.2"
    assert "1024-bit DH group" in e.reason
    assert verdict(e, ok=True, tls=True)[0] == "insecure"
    assert verdict(e, ok=False, tls=None)[0] == "refused-correctly"
    assert cell(suffix).group == "broken crypto" and not cell_is_secure(cell(suffix))


def test_the_dh_cell_is_served_where_the_group_is_the_listener_own() -> None:
    served = {c.server for c in MATRIX.cells(selection="weak-crypto") if c.policy and c.policy.name == "dhe-1024"}
    assert served == {"postfix", "dovecot", "james", "courier", "embedded"}  # declared; James/Courier refuse to serve
    assert "weak-dh" in FAILURE_CLASSES
