"""Hostile networks: attacks a relay plays between a client and a real server (hostile-network cells).

Each attack lives in one module with its tap, its expected secure outcome and its vulnerability class
(:class:`~pytest_mailtls.wire.attacks.base.Attack`); :data:`ATTACKS` is the registry, in a stable order. A
cell's ``network`` names one (its id ends with it), the grid fronts the cell's real server with the attack's tap,
the oracle reads its expected outcome and the judge its vulnerability check. See docs/hostile.md.
"""

from __future__ import annotations

from ...errors import MailTLSError
from .base import VULNERABILITY_CLASSES, Attack
from .inject import INJECT_ATTACKS
from .intercept import INTERCEPT_ATTACKS
from .intolerant import INTOLERANT_ATTACKS
from .strip import STRIP_ATTACKS
from .tamper import TAMPER_ATTACKS

__all__ = ["ATTACKS", "Attack", "VULNERABILITY_CLASSES", "attack_named"]

ATTACKS: dict[str, Attack] = {
    a.name: a for a in (*STRIP_ATTACKS, *INJECT_ATTACKS, *TAMPER_ATTACKS, *INTERCEPT_ATTACKS, *INTOLERANT_ATTACKS)
}


def attack_named(name: str) -> Attack:
    """The attack called ``name``; a one-line error naming the known ones otherwise."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise MailTLSError(f"unknown hostile network {name!r}; known: {', '.join(ATTACKS)}") from None
