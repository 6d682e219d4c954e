"""TLS facts, in one place: versions, security-level rules, cipher catalogues, client contexts.

Everything that needs to know how a version name maps to ``ssl.TLSVersion``, which cipher names a
cipher string stands for in the local OpenSSL, which TLS 1.3 suites exist, or how to build a
client context that offers everything, asks here:

* :data:`SSL_VERSIONS` and :func:`set_version_range` (the only way to reach TLSv1/TLSv1.1 without
  the DeprecationWarning: it swaps process-wide warning state, so every caller shares one lock);
* :func:`at_level0` (OpenSSL 3 negotiates TLSv1/1.1, SHA-1 and small keys only at security level 0);
* :func:`expand_ciphers` (a cipher string -> the TLS <= 1.2 names it selects, cached) and
  :func:`local_ciphers` (what the local OpenSSL can offer at one version);
* :data:`TLS13_SUITES` and :func:`suite_ids` / :func:`suite_name` (IANA numbers <-> OpenSSL names,
  TLS 1.3 suites and suites OpenSSL 3 no longer builds included);
* :func:`client_context` (a permissive client context: no verification, one version or all,
  every cipher at level 0) and :func:`presented_chain` (the chain as the server sent it).

Pure standard library: importing it costs nothing.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ssl
import threading
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from .policy import VERSIONS

__all__ = [
    "SSL_VERSIONS",
    "TLS13_SUITES",
    "LEGACY_SUITES",
    "EVERYTHING",
    "set_version_range",
    "at_level0",
    "expand_ciphers",
    "local_ciphers",
    "null_encryption",
    "dhe_only",
    "dh_params_pem",
    "dh_params_path",
    "dh_params_files",
    "suite_ids",
    "suite_name",
    "suite_names",
    "client_context",
    "presented_chain",
]

#: Version names (as OpenSSL, the manifest and the matrix spell them) -> ``ssl.TLSVersion``.
SSL_VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
assert tuple(SSL_VERSIONS) == VERSIONS

#: TLS 1.3 suites OpenSSL 3 implements, with their IANA numbers (the CCM ones are off by default on
#: most servers). Python's ``ssl`` cannot choose among them (no ``set_ciphersuites``).
TLS13_SUITE_IDS: dict[str, int] = {
    "TLS_AES_256_GCM_SHA384": 0x1302,
    "TLS_CHACHA20_POLY1305_SHA256": 0x1303,
    "TLS_AES_128_GCM_SHA256": 0x1301,
    "TLS_AES_128_CCM_SHA256": 0x1304,
    "TLS_AES_128_CCM_8_SHA256": 0x1305,
}
TLS13_SUITES: tuple[str, ...] = tuple(TLS13_SUITE_IDS)

#: Suites OpenSSL 3 no longer builds but servers (old JVMs, appliances) may still accept, and clients
#: still offer: a raw ClientHello can ask for them, and their names are known.
LEGACY_SUITES: dict[str, int] = {
    "DES-CBC3-SHA": 0x000A,
    "ECDHE-RSA-DES-CBC3-SHA": 0xC012,
    "ECDHE-ECDSA-DES-CBC3-SHA": 0xC008,
    "EDH-RSA-DES-CBC3-SHA": 0x0016,
    "RC4-SHA": 0x0005,
    "RC4-MD5": 0x0004,
}

#: The cipher string that selects every TLS <= 1.2 cipher the local OpenSSL has.
EVERYTHING = "ALL:COMPLEMENTOFALL:@SECLEVEL=0"

_WARNINGS_LOCK = threading.Lock()
_LEGACY_PROTOCOLS = ("SSLv3", "TLSv1.0")  # get_ciphers()' "protocol" of the suites TLSv1/1.1 can use


def set_version_range(ctx: ssl.SSLContext, minimum: str, maximum: str | None = None) -> None:
    """Set ``ctx``'s protocol range without the DeprecationWarning TLSv1/TLSv1.1 trigger.

    Reaching those versions is the point of legacy cells. ``warnings.catch_warnings``
    swaps process-wide state, so every use goes through one lock: probes run in threads.
    """
    for version in (minimum, maximum):
        if version is not None and version not in SSL_VERSIONS:
            raise ValueError(f"unknown TLS version {version!r}; allowed: {', '.join(SSL_VERSIONS)}")
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = SSL_VERSIONS[minimum]
        if maximum is not None:
            ctx.maximum_version = SSL_VERSIONS[maximum]


def at_level0(cipher_string: str) -> str:
    """``cipher_string`` at OpenSSL security level 0 unless it names a level itself.

    OpenSSL 3 (Debian bookworm) signs TLSv1/1.1 handshakes, loads SHA-1 and 1024-bit certificates
    and offers anonymous and export-grade suites only at level 0.
    """
    return cipher_string if "@SECLEVEL" in cipher_string else cipher_string + ":@SECLEVEL=0"


@functools.cache
def _selected(cipher_string: str) -> tuple[dict[str, Any], ...]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers(at_level0(cipher_string))
    return tuple(dict(c) for c in ctx.get_ciphers())


@functools.cache
def expand_ciphers(cipher_string: str) -> frozenset[str]:
    """The TLS <= 1.2 cipher names ``cipher_string`` selects in the local OpenSSL (level 0 unless it says).

    Raises ``ssl.SSLError`` when it selects nothing.
    """
    return frozenset(c["name"] for c in _selected(cipher_string) if c["protocol"] != "TLSv1.3")


@functools.cache
def null_encryption(cipher_string: str) -> bool:
    """Whether ``cipher_string`` selects TLS <= 1.2 suites (at level 0 unless it says) and every one of them
    encrypts nothing (``NULL-SHA256``, ``eNULL``...). False for a string OpenSSL refuses."""
    return _every_suite(cipher_string, "symmetric", None)


@functools.cache
def dhe_only(cipher_string: str) -> bool:
    """Whether ``cipher_string`` selects TLS <= 1.2 suites (at level 0 unless it says) and every one of them has a
    finite-field DHE key exchange (``DHE-RSA-AES128-GCM-SHA256``...). False for a string OpenSSL refuses."""
    return _every_suite(cipher_string, "kea", "kx-dhe")


def _every_suite(cipher_string: str, key: str, value: object) -> bool:
    """``cipher_string`` selects TLS <= 1.2 suites and each has ``value`` under ``key`` in OpenSSL's description."""
    try:
        chosen = [c for c in _selected(cipher_string) if c["protocol"] != "TLSv1.3"]
    except ssl.SSLError:
        return False
    return bool(chosen) and all(c[key] == value for c in chosen)


@functools.cache
def dh_params_pem(bits: int) -> str:
    """The PKCS#3 PEM (``-----BEGIN DH PARAMETERS-----``: the DER of ``SEQUENCE { INTEGER p, INTEGER g }``) of the
    fixed group of ``bits`` bits (:data:`pytest_mailtls.policy.DH_GROUPS`), as OpenSSL, GnuTLS and Python's
    ``load_dh_params`` read it. Written here rather than by ``cryptography``, whose OpenSSL 3 writes a group it
    knows by name (ffdhe2048) as X9.42 parameters, which GnuTLS and ``load_dh_params`` do not read."""
    from .policy import DH_GROUPS

    group = DH_GROUPS[bits]
    body = _der_integer(group.prime) + _der_integer(group.generator)
    der = b"\x30" + _der_length(len(body)) + body
    text = base64.b64encode(der).decode()
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join(["-----BEGIN DH PARAMETERS-----", *lines, "-----END DH PARAMETERS-----"]) + "\n"


def dh_params_path(bits: int) -> str:
    """Where a container backend writes the PEM of the ``bits`` group, relative to its rendered files."""
    return f"dh/dh{bits}.pem"


def dh_params_files(bits: Iterable[int | None]) -> dict[str, str]:
    """The rendered files (:func:`dh_params_path` -> PEM) of every DH group size named (``None``s skipped)."""
    return {dh_params_path(b): dh_params_pem(b) for b in sorted({b for b in bits if b is not None})}


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der_integer(value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")  # a leading zero byte keeps it positive
    return b"\x02" + _der_length(len(raw)) + raw


@functools.cache
def local_ciphers(version: str) -> tuple[str, ...]:
    """Every cipher the local OpenSSL can offer at ``version`` (security level 0), in its order.

    TLSv1.3: :data:`TLS13_SUITES`. Below: PSK and SRP suites are left out (OpenSSL only offers them
    with credentials), and so are TLS 1.2-only suites (GCM, SHA-256 MACs) below TLSv1.2.
    """
    if version == "TLSv1.3":
        return TLS13_SUITES
    if version not in SSL_VERSIONS:
        raise ValueError(f"unknown TLS version {version!r}; allowed: {', '.join(SSL_VERSIONS)}")
    legacy = version in ("TLSv1", "TLSv1.1")
    return tuple(
        c["name"]
        for c in _selected(EVERYTHING)
        if c["protocol"] != "TLSv1.3"
        and "psk" not in c["kea"]
        and "srp" not in c["kea"]
        and (not legacy or c["protocol"] in _LEGACY_PROTOCOLS)
    )


@functools.cache
def suite_ids() -> dict[str, int]:
    """OpenSSL cipher name -> IANA number, for every suite the local OpenSSL knows at any level, the
    TLS 1.3 suites and :data:`LEGACY_SUITES`."""
    table = dict(LEGACY_SUITES)
    for c in _selected(EVERYTHING):
        table[str(c["name"])] = int(c["id"]) & 0xFFFF
    table.update(TLS13_SUITE_IDS)
    return table


@functools.cache
def suite_names() -> dict[int, str]:
    """IANA number -> OpenSSL name: :func:`suite_ids` the other way round, and the signalling values."""
    table = {0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV", 0x5600: "TLS_FALLBACK_SCSV"}
    table.update({number: name for name, number in suite_ids().items()})
    return table


def suite_name(number: int) -> str:
    """IANA suite number -> OpenSSL name (``0xc02f`` -> ``ECDHE-RSA-AES128-GCM-SHA256``); unknown as hex."""
    return suite_names().get(number) or f"0x{number:04x}"


def client_context(
    version: str | None = None,
    ciphers: str = EVERYTHING,
    *,
    client_cert: str | None = None,
    client_key: str | None = None,
) -> ssl.SSLContext:
    """A client that reaches anything: no verification, ``version`` only (default: TLSv1 and up),
    ``ciphers`` (default: every cipher at level 0), presenting ``client_cert`` when given."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    set_version_range(ctx, version or VERSIONS[0], version)
    ctx.set_ciphers(ciphers)
    if client_cert:
        ctx.load_cert_chain(client_cert, client_key)
    return ctx


def presented_chain(tls: ssl.SSLSocket | ssl.SSLObject) -> list[bytes]:
    """The certificates the server sent (DER, leaf first), verified or not."""
    # Python 3.13 makes get_unverified_chain() public; 3.11/3.12 have it on the private _sslobj.
    getter: Callable[[], Any] | None = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    if getter is not None:
        with contextlib.suppress(AttributeError, ValueError, ssl.SSLError):
            certs = getter() or []
            return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER) for c in certs]  # type: ignore[attr-defined]
    leaf = tls.getpeercert(binary_form=True)
    return [leaf] if leaf else []
