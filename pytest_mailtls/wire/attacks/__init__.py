"""Hostile networks: attacks a relay plays between a client and a real server (hostile-network cells).

Each attack lives in one module with its tap, its expected secure outcome and its vulnerability class
(:class:`~pytest_mailtls.wire.attacks.base.Attack`); :data:`ATTACKS` is the registry, in a stable order. A
cell's ``network`` names one (its id ends with it), the grid fronts the cell's real server with the attack's tap,
the oracle reads its expected outcome and the judge its vulnerability check. See docs/hostile.md.

Server faults (:data:`FAULTS`: a 4xx/5xx answer at one stage, a connection cut in DATA, a slow server; docs/faults.md)
are played the same way and live in the same namespace of networks (:data:`NETWORKS`, ``fault-*``).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ...errors import MailTLSError
from .base import VULNERABILITY_CLASSES, Attack
from .faults import FAULTS as _FAULTS
from .faults import Fault
from .inject import INJECT_ATTACKS
from .intercept import INTERCEPT_ATTACKS
from .intolerant import INTOLERANT_ATTACKS
from .strip import STRIP_ATTACKS
from .tamper import TAMPER_ATTACKS

if TYPE_CHECKING:
    from ...policy import Cell, CertProfile

__all__ = [
    "ATTACKS",
    "FAULTS",
    "NETWORKS",
    "Attack",
    "Fault",
    "VULNERABILITY_CLASSES",
    "attack_named",
    "presented_profiles",
]

#: The hostile networks (attacks), by name: ``network: all`` in a grid block.
ATTACKS: dict[str, Attack] = {
    a.name: a for a in (*STRIP_ATTACKS, *INJECT_ATTACKS, *TAMPER_ATTACKS, *INTERCEPT_ATTACKS, *INTOLERANT_ATTACKS)
}
#: The server faults, by name: ``network: faults`` in a grid block.
FAULTS: dict[str, Fault] = {f.name: f for f in _FAULTS}
#: Everything a relay can play in front of a real server: a cell's ``network`` names one.
NETWORKS: dict[str, Attack] = {**ATTACKS, **FAULTS}


def attack_named(name: str) -> Attack:
    """The attack or fault called ``name``; a one-line error naming the known ones otherwise."""
    try:
        return NETWORKS[name]
    except KeyError:
        raise MailTLSError(f"unknown hostile network or fault {name!r}; known: {', '.join(NETWORKS)}") from None


def presented_profiles(cells: Iterable[Cell]) -> list[CertProfile]:
    """The certificate profiles that the relays of ``cells``' hostile networks present, each once, in order."""
    presented = (attack_named(c.network).presents(c) for c in cells if c.network)
    return list(dict.fromkeys(p for p in presented if p is not None))
