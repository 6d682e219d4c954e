"""The client families pytest-mailtls knows, found by name.

A family is how a kind of client speaks: the words of its errors (its rule table for the diagnosis),
the settings a remedy names (its knobs), how it spells TLS versions, and its default cipher suites.
Each family is declared by ONE module of this package (``FAMILY = ClientFamily(...)``), whether or not
an adapter in :mod:`pytest_mailtls.clients` runs it: node, go, rust, dotnet and gnutls clients are run
through command templates, so their family cannot live with an adapter; one module per family can.
Adding a family is that module plus ONE line in :data:`REGISTRY`; nothing else in the package names one.

Registry order matters once: the generic family (:data:`GENERIC`, a client nobody named) reads every
family's own table in this order, the more specific wordings first, and the order decides ties.

Family modules are imported on first use; their rule tables are built on first use (they need
:mod:`pytest_mailtls.diagnose`, which is not always loaded). This module imports nothing of the package.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...diagnose import Rule

__all__ = [
    "DEFAULT_FAMILY",
    "GENERIC",
    "KNOBS",
    "REGISTRY",
    "REQUIRED_KNOBS",
    "ClientFamily",
    "client_families",
    "client_family",
    "family_names",
]

#: Family name -> module declaring ``FAMILY``. One line per family; the order is the generic reading order.
REGISTRY: dict[str, str] = {
    "python": "pytest_mailtls.clients.families.python",
    "curl": "pytest_mailtls.clients.families.curl",
    "openssl": "pytest_mailtls.clients.families.openssl",
    "swaks": "pytest_mailtls.clients.families.swaks",
    "java": "pytest_mailtls.clients.families.java",
    "go": "pytest_mailtls.clients.families.go",
    "node": "pytest_mailtls.clients.families.node",
    "rust": "pytest_mailtls.clients.families.rust",
    "dotnet": "pytest_mailtls.clients.families.dotnet",
    "msmtp": "pytest_mailtls.clients.families.msmtp",
    "gnutls": "pytest_mailtls.clients.families.gnutls",
    "command": "pytest_mailtls.clients.families.command",
}

#: The family of a client that names none (a ``--command`` template): it reads every table.
GENERIC = "command"
#: The family of a :class:`~pytest_mailtls.oracle.ClientProfile` that names none.
DEFAULT_FAMILY = "python"

#: Every knob a family may spell, and what a remedy asks with it. Templates are ``str.format`` strings:
#: every knob may use ``{proto}`` (smtp, imap, pop3) and ``{ca}`` (the CA file); ``versions`` also
#: ``{want}`` (the versions to allow, separated by spaces), ``{lo_name}``/``{hi_name}`` (TLSv1.2) and the
#: family's own ``version_words``; ``ciphers`` ``{openssl}`` (an OpenSSL suite name) and ``{jsse}`` (its
#: IANA name, as JSSE, Go, .NET and rustls spell it). The first eight are required (the generic family
#: words each one for everybody else); the rest are notes only some families need ("" elsewhere).
KNOBS: dict[str, str] = {
    "versions": "offer the TLS versions the server accepts",
    "ciphers": "enable a cipher suite the server offers",
    "trust": "trust the session CA",
    "hostname": "connect with a name the certificate carries",
    "client-cert": "present the client certificate",
    "starttls": "require STARTTLS before login or mail",
    "implicit-tls": "speak TLS from the first byte (an implicit-TLS port)",
    "plaintext-first": "open in plaintext and upgrade with STARTTLS (a STARTTLS port)",
    "verify-on": "turn certificate verification back on (it accepted a certificate it must reject)",
    "hostname-on": "turn the host name check back on",
    "weak-on": "refuse weak keys and signatures again",
    "disabled-by": "what disables versions the client is configured for (said after 'its runtime disables')",
    "only-tls1": "a note on the version remedy when the client offered only TLSv1",
    "offered-none": "a note on the version remedy when the client sent no ClientHello",
    "runtime-disabled": "a note on the version remedy when the runtime disables every configured version",
    "smtp-auth": "a setting SMTP AUTH needs besides user name and password",
}
#: The knobs every family words (the generic family for everybody else): one per remedy that asks the client.
REQUIRED_KNOBS: tuple[str, ...] = tuple(KNOBS)[:8]


def _no_words(versions: Sequence[str]) -> Mapping[str, str]:
    return {}


@dataclass(frozen=True)
class ClientFamily:
    """How one kind of client speaks; declared as ``FAMILY`` by its module in this package.

    ``rules``: the family's own error words (a cached function: its table is built on first use).
    ``openssl_reasons``: whether it also prints OpenSSL's reason strings (those and the words every family
    may print are read after its own). ``knobs``: knob name (:data:`KNOBS`) -> the family's template.
    ``version_words``: the family's spellings of the versions to allow (template values for ``versions``).
    ``default_suites``: the TLS <= 1.2 suites (IANA names) its runtime offers whatever the versions, if it
    has a fixed list; else ``default_ciphers``, the OpenSSL cipher string of its default list ("": the
    library's own default), which a client offering legacy versions lowers to security level 0.
    """

    name: str
    title: str
    rules: Callable[[], tuple[Rule, ...]]
    openssl_reasons: bool
    knobs: Mapping[str, str]
    version_words: Callable[[Sequence[str]], Mapping[str, str]] = _no_words
    default_suites: tuple[str, ...] = ()
    default_ciphers: str = "DEFAULT"
    generic: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.knobs) - set(KNOBS))
        if unknown:
            raise ValueError(f"client family {self.name!r}: unknown knobs {', '.join(unknown)}")

    def knob(self, name: str, **values: str) -> str:
        """This family's wording of knob ``name`` (the generic family's if it has none; "" for a note nobody
        words), filled with ``values``."""
        text = self.knobs.get(name)
        if text is None:
            text = client_family(GENERIC).knobs.get(name, "") if not self.generic else ""
        return text.format(**values)


def family_names() -> tuple[str, ...]:
    """Every family, in registry order."""
    return tuple(REGISTRY)


@cache
def _load(name: str) -> ClientFamily:
    found: ClientFamily = importlib.import_module(REGISTRY[name]).FAMILY
    if found.name != name:
        raise ValueError(f"{REGISTRY[name]} declares family {found.name!r}, registered as {name!r}")
    return found


def client_family(name: str | None) -> ClientFamily:
    """The family called ``name``; the generic family for ``None`` or a name no module declares."""
    return _load(name if name is not None and name in REGISTRY else GENERIC)


def client_families() -> tuple[ClientFamily, ...]:
    """Every family, in registry order."""
    return tuple(_load(name) for name in REGISTRY)
