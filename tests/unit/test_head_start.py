"""The keys a cold pytest-xdist run's head start makes before the first request (pure: from the matrix)."""

from __future__ import annotations

from collections import Counter

from pytest_mailtls.backends import docker_servers
from pytest_mailtls.policy import CertProfile
from pytest_mailtls.selection import resolve
from pytest_mailtls.shared import head_start_keys


def _cells(**where: str) -> list:  # type: ignore[type-arg]
    cells = resolve(servers="postfix,dovecot,james,courier", need_engine=False, where=where or None).cells
    return [c for c in cells if c.server in docker_servers()]


def test_every_profile_of_the_selection_the_most_used_first_and_each_once() -> None:
    cells = _cells()
    keys = head_start_keys(cells)
    profiles = [k for k in keys if k != "client"]
    assert len(profiles) == len(set(profiles))
    counts = Counter(c.cert for c in cells if c.cert is not None)
    wanted = {p for p in counts if p != CertProfile.REVOKED}
    assert set(profiles) >= wanted
    used = [counts[p] for p in profiles if p in counts]
    assert used == sorted(used, reverse=True)
    assert profiles[0] == counts.most_common(1)[0][0]


def test_the_revoked_profile_too_each_process_makes_its_own() -> None:
    # Its certificate names the revocation responder of the process that makes it: a shared PKI keeps one per
    # process (tests/unit/test_pki.py), so the prepared daemon, which serves, makes it for itself.
    cells = _cells()
    revoked = [c for c in cells if c.cert == CertProfile.REVOKED and not c.auth.client_cert and not c.network]
    assert revoked, "the default grid has revoked-certificate cells"
    assert CertProfile.REVOKED.fault.own_process
    assert head_start_keys(revoked) == [CertProfile.REVOKED]


def test_the_client_certificate_only_when_a_cell_asks_for_one() -> None:
    cells = _cells()
    mtls = [c for c in cells if c.auth.client_cert]
    plain = [c for c in cells if not c.auth.client_cert]
    assert ("client" in head_start_keys(cells)) == bool(mtls)
    assert "client" not in head_start_keys(plain)


def test_nothing_for_no_cells() -> None:
    assert head_start_keys([]) == []
