"""Courier's GnuTLS priority strings for the weak-crypto policies (pure: no container)."""

from __future__ import annotations

from pytest_mailtls.backends.courier import gnutls_priority, unsupported_reason
from pytest_mailtls.matrix import load_matrix

POLICIES = load_matrix().policies


def test_static_rsa_cbc_selects_exactly_rsa_with_aes_cbc_and_sha1() -> None:
    assert gnutls_priority(POLICIES["static-rsa-cbc"]) == (
        "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA:-CIPHER-ALL:+AES-128-CBC:+AES-256-CBC:-MAC-ALL:+SHA1"
    )


def test_null_cipher_names_null_which_gnutls_never_enables_by_itself() -> None:
    assert gnutls_priority(POLICIES["null-cipher"]) == (
        "NORMAL:-VERS-ALL:+VERS-TLS1.2:-KX-ALL:+RSA:-CIPHER-ALL:+NULL:-MAC-ALL:+SHA1:+SHA256"
    )


def test_courier_serves_every_weak_cell() -> None:
    cells = load_matrix().cells(servers=["courier"], selection="weak-crypto")
    assert len(cells) == 8 and not [c.id for c in cells if unsupported_reason(c)]
