"""Adapters for the clients under test, and the registry ``mailtls certify --client NAME`` reads.

Every adapter implements :class:`Client`: ``run(endpoint, *, send=True) ->
ClientResult``, and carries the :class:`~pytest_mailtls.oracle.ClientProfile`
the oracle predicts from. Modules are imported lazily: naming a Python client
never starts a JVM.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MailTLSError
from .families import GENERIC

if TYPE_CHECKING:  # the oracle imports .families, a subpackage of this one: it must not be imported here
    from ..oracle import ClientProfile
    from .base import Client, ClientResult, ClientUnavailable


def __getattr__(name: str) -> object:
    # The adapters' base (it needs the manifest's models) is imported on first use: `mailtls --help` and
    # `mailtls probe` name clients without loading them.
    if name in ("Client", "ClientResult", "ClientUnavailable"):
        from . import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "Client",
    "ClientResult",
    "ClientUnavailable",
    "CLIENT_NAMES",
    "get_client",
    "command_client",
    "describe_clients",
]


def _python(name: str) -> Client:
    from .python import PYTHON_PROFILES, PythonClient

    return PythonClient(PYTHON_PROFILES[name])


def _java(name: str) -> Client:
    from .java import JAVA_PROFILES, JakartaMailClient

    return JakartaMailClient(JAVA_PROFILES[name])


def _tool(name: str) -> Client:
    from .command import COMMAND_PROFILES, CurlClient, MsmtpClient, OpenSSLClient, SwaksClient

    classes: dict[str, Callable[[ClientProfile], Client]] = {
        "curl": CurlClient,
        "openssl-s_client": OpenSSLClient,
        "swaks": SwaksClient,
        "msmtp": MsmtpClient,
    }
    return classes[name](COMMAND_PROFILES[name])


_FACTORIES: dict[str, Callable[[str], Client]] = {
    "python": _python,
    "python-smtplib": _python,
    "python-imaplib": _python,
    "python-poplib": _python,
    "python-unsafe": _python,
    "curl": _tool,
    "openssl-s_client": _tool,
    "swaks": _tool,
    "msmtp": _tool,
    "jakarta-mail": _java,
    "jakarta-mail-tls1": _java,
    "jakarta-mail-unsafe": _java,
}

#: Names ``get_client`` knows.
CLIENT_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_client(name: str) -> Client:
    """The built-in client called ``name`` (see :data:`CLIENT_NAMES`)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise MailTLSError(
            f"unknown client {name!r}; choose one of {', '.join(CLIENT_NAMES)}, or give a command template"
        ) from None
    return factory(name)


def command_client(
    template: str,
    *,
    name: str = "command",
    profile: ClientProfile | None = None,
    family: str = GENERIC,
    protocols: tuple[str, ...] | None = None,
) -> Client:
    """A client that runs ``template`` (placeholders ``{host}``, ``{port}``, ``{url}``...); exit 0 = success.

    Without ``profile``, nothing about its TLS is assumed: certify reads what it offers from its own
    ClientHello on each cell. ``family`` (one of :func:`.families.family_names`) words diagnoses and
    remedies in that client's own settings; ``protocols`` limits the cells it is run on (default: smtp,
    imap and pop3).
    """
    from ..oracle import ClientProfile
    from .command import CommandClient
    from .families import family_names

    if family not in family_names():
        raise MailTLSError(f"unknown client family {family!r}; choose one of {', '.join(family_names())}")
    if profile is None:
        profile = ClientProfile(
            name,
            family=family,
            protocols=protocols or ("smtp", "imap", "pop3"),
            description=template,
            declared=False,
        )
    return CommandClient(template, name=name, profile=profile)


def describe_clients() -> dict[str, str]:
    """Each built-in client's one-line description (for ``--help`` and docs)."""
    from .command import COMMAND_PROFILES
    from .java import JAVA_PROFILES
    from .python import PYTHON_PROFILES

    profiles = {**PYTHON_PROFILES, **COMMAND_PROFILES, **JAVA_PROFILES}
    return {name: profiles[name].description for name in CLIENT_NAMES}
