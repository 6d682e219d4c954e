"""Courier's GnuTLS priority strings for the weak-crypto policies (pure: no container)."""

from __future__ import annotations

from pytest_mailtls.backends.courier import gnutls_priority, unsupported_reason
from pytest_mailtls.matrix import TLSPolicy, load_matrix

POLICIES = load_matrix().policies


def test_static_rsa_cbc_selects_exactly_rsa_with_aes_cbc_and_sha1() -> None:
    assert gnutls_priority(POLICIES["static-rsa-cbc"]) == (
        "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA:-CIPHER-ALL:+AES-128-CBC:+AES-256-CBC:-MAC-ALL:+SHA1"
    )


def test_null_cipher_names_null_which_gnutls_never_enables_by_itself() -> None:
    assert gnutls_priority(POLICIES["null-cipher"]) == (
        "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA:-CIPHER-ALL:+NULL:-MAC-ALL:+SHA1:+SHA256"
    )


def test_courier_serves_every_weak_cell_but_the_small_dh_group() -> None:
    cells = load_matrix().cells(servers=["courier"], selection="weak-crypto")
    refused = {c.id: unsupported_reason(c) for c in cells if unsupported_reason(c)}
    assert len(cells) == 12
    assert set(refused) == {c.id for c in cells if c.policy is not None and c.policy.name == "dhe-1024"}
    assert len(refused) == 4 and all("RFC 7919" in str(why) for why in refused.values())


def test_dhe_1024_selects_exactly_its_two_dhe_suites_in_gnutls() -> None:
    assert gnutls_priority(POLICIES["dhe-1024"]) == (
        "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+DHE-RSA:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:-MAC-ALL:+AEAD"
    )


def test_every_shipped_policy_has_a_gnutls_priority_string() -> None:
    problems = {name: str(e) for name, p in POLICIES.items() if (e := _problem(p))}
    assert problems == {}


def test_an_all_cipher_string_is_gnutls_normal_whose_null_suites_stay_off() -> None:
    # "ALL" leaves out eNULL as GnuTLS's NORMAL does: no cipher selection is needed (the CI failure of stop 17)
    assert gnutls_priority(POLICIES["legacy"]) == "NORMAL:-VERS-ALL:+VERS-TLS1.0:+VERS-TLS1.1:+VERS-TLS1.2:+VERS-TLS1.3"


def _problem(policy: TLSPolicy) -> ValueError | None:
    try:
        gnutls_priority(policy)
    except ValueError as e:
        return e
    return None
