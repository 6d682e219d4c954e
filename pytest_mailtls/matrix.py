"""Load and validate a matrix file into cells; selections and cell filters.

Everything is checked before anything starts: an error names the file, the key
and what is allowed.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import fnmatch
import re
import ssl
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .backends import server_names, server_services
from .errors import MatrixError
from .policy import (
    CELL_KEYS,
    DH_SECURE_BITS,
    DH_SIZES,
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

__all__ = [
    "Matrix",
    "GridBlock",
    "Selection",
    "load_matrix",
    "parse_matrix",
    "filter_cells",
    "unknown_criterion",
    "default_matrix_path",
    "CELL_KEYS",
    "NAME_PATTERN",
    "NAME_MAX",
    "NAME_RULE",
    "is_name",
    "check_name",
]

#: The grammar of every name a matrix gives (policies, auth policies, grid blocks, selections): letters,
#: digits, ``-`` and ``.``, starting with a letter or digit, no ``.`` at the end or twice in a row, at most
#: :data:`NAME_MAX` characters. Names end up in cell ids, server configuration (Postfix master.cf, Dovecot
#: service names, James XML), log prefixes, file names and the local part of Postfix's capture addresses
#: (a dot-atom: no empty atom between dots): a name that cannot carry a space, a brace, a newline, ``-->``
#: or a leading ``-`` cannot inject.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(?:\.[A-Za-z0-9-]+)*")
NAME_MAX = 64
NAME_RULE = (
    "Names are 1 to 64 letters, digits, '-' or '.', starting with a letter or digit, with no '.' at the end "
    "or twice in a row (regex [A-Za-z0-9][A-Za-z0-9-]*(\\.[A-Za-z0-9-]+)*)"
)


def is_name(value: object) -> bool:
    """Whether ``value`` is a name of the matrix grammar (:data:`NAME_PATTERN`, at most :data:`NAME_MAX`)."""
    return isinstance(value, str) and len(value) <= NAME_MAX and NAME_PATTERN.fullmatch(value) is not None


# A cell id pattern in a selection: the characters of ids plus fnmatch's glob characters.
_ID_PATTERN = re.compile(r"[A-Za-z0-9.*?\[\]!-]{1,200}")
# One element of an OpenSSL cipher list (TLS <= 1.2): an optional operator (!, +, -) and cipher or
# keyword names joined by '+', or one of the special strings @STRENGTH and @SECLEVEL=N. Elements are
# separated by ':'. OpenSSL itself also splits on spaces and commas and ignores what it does not know,
# so "DEFAULT:@SECLEVEL=0}" or a newline followed by "-o ..." would pass set_ciphers(): the grammar
# refuses them before OpenSSL is asked.
_CIPHER_ELEMENT = re.compile(r"[!+-]?[A-Za-z0-9._-]+(?:\+[A-Za-z0-9._-]+)*|@STRENGTH|@SECLEVEL=[0-5]")
_CIPHER_RULE = (
    "A cipher list is elements separated by ':', each [!+-]NAME[+NAME...], @STRENGTH or @SECLEVEL=0..5 "
    "(no spaces, braces, commas or control characters)"
)

#: Keys a cell filter (selection entry, marker, CLI) may name.

_TOP_KEYS = {"version", "policies", "auth", "grid", "selections", "default_selection"}
_POLICY_KEYS = {"description", "min_version", "max_version", "ciphers", "ciphersuites", "dh_bits"}
_AUTH_KEYS = {"description", "mechanisms", "tls_only", "required", "client_cert"}
_BLOCK_KEYS = {"name", "description", "servers", "services", "modes", "policies", "certs", "auth", "network"}
_SELECTION_KEYS = {"description", "include", "exclude"}
_SINGULAR = {
    "servers": "server",
    "services": "service",
    "modes": "mode",
    "policies": "policy",
    "certs": "cert",
    "auth": "auth",
    "network": "hostile network or fault",
}
_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")


def _attacks() -> Mapping[str, Any]:
    """Everything a relay plays in front of a real server, attacks and faults (imported late: the wire package imports
    this module's neighbours)."""
    from .wire.attacks import NETWORKS

    return NETWORKS


def _network_keywords() -> dict[str, tuple[str, ...]]:
    """What a block's ``network`` may say instead of a list: ``all`` (every attack), ``faults`` (every fault)."""
    from .wire.attacks import ATTACKS, FAULTS

    return {"all": tuple(ATTACKS), "faults": tuple(FAULTS)}


def default_matrix_path() -> Path:
    """The matrix shipped with the package."""
    return Path(str(resources.files("pytest_mailtls") / "matrix.yaml"))


@dataclass(frozen=True)
class GridBlock:
    name: str
    servers: tuple[str, ...]
    services: tuple[str, ...]
    modes: tuple[Mode, ...]
    policies: tuple[str, ...]
    certs: tuple[CertProfile, ...]
    auth: tuple[str, ...]
    description: str = ""
    #: Hostile networks and server faults (names): the block's cells are played behind each one that applies to them,
    #: and only so (the plain cells come from other blocks). Empty: ordinary cells.
    networks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Selection:
    name: str
    include: tuple[str | Mapping[str, tuple[str, ...]], ...] = ()
    exclude: tuple[str | Mapping[str, tuple[str, ...]], ...] = ()
    description: str = ""

    def apply(self, cells: Sequence[Cell]) -> list[Cell]:
        kept = [c for c in cells if not self.include or any(_entry_matches(e, c) for e in self.include)]
        return [c for c in kept if not any(_entry_matches(e, c) for e in self.exclude)]


@dataclass(frozen=True)
class Matrix:
    """A validated matrix: named policies, grid blocks and selections."""

    source: str
    policies: Mapping[str, TLSPolicy]
    auth: Mapping[str, AuthPolicy]
    grid: tuple[GridBlock, ...]
    selections: Mapping[str, Selection]
    default_selection: str

    def all_cells(self, servers: Iterable[str] | None = None) -> list[Cell]:
        """Every cell of the grid for ``servers``, in a stable order, without duplicates."""
        known = server_names()
        wanted = list(dict.fromkeys(known if servers is None else servers))
        for server in wanted:
            if server not in known:
                raise MatrixError(self.source, "servers", f"unknown server {server!r}", _allowed(known))
        seen: dict[str, Cell] = {}
        for server in wanted:
            for block in self.grid:
                if block.servers and server not in block.servers:
                    continue
                for cell in self._block_cells(server, block):
                    seen.setdefault(cell.id, cell)
        return list(seen.values())

    def _block_cells(self, server: str, block: GridBlock) -> Iterable[Cell]:
        for service_name in block.services:
            if service_name not in server_services(server):
                continue
            service = SERVICES[service_name]
            for mode in block.modes:
                if not service.allows(mode):
                    continue
                for auth_name in block.auth:
                    auth = self.auth[auth_name]
                    if not mode.tls:
                        if not block.networks:
                            yield Cell(server, service, mode, None, None, auth)
                        continue
                    for policy_name in block.policies:
                        for cert in block.certs:
                            cell = Cell(server, service, mode, self.policies[policy_name], cert, auth)
                            if not block.networks:
                                yield cell
                            for network in block.networks:
                                if _attacks()[network].applies(cell):
                                    yield replace(cell, network=network)

    def vocabulary(self) -> dict[str, tuple[str, ...]]:
        """Every value each cell key (:data:`CELL_KEYS`) takes somewhere in this matrix, on any server.

        A marker or ``--where`` value that matches none of these is a typo, not an empty selection.
        """
        return {
            "server": server_names(),
            "service": tuple(SERVICES),
            "protocol": tuple(str(p) for p in Protocol),
            "mode": tuple(str(m) for m in Mode),
            "policy": (*self.policies, "none"),
            "cert": (*(str(c) for c in CertProfile), "none"),
            "auth": tuple(self.auth),
            "network": (*_attacks(), "none"),
            "id": tuple(c.id for c in self.all_cells()),
        }

    def cells(self, *, servers: Iterable[str] | None = None, selection: str | None = None) -> list[Cell]:
        """The cells of ``selection`` (default: the matrix's ``default_selection``)."""
        name = selection if selection is not None else self.default_selection
        if name not in self.selections:
            raise MatrixError(
                self.source,
                "selection",
                f"unknown selection {name!r}",
                _allowed(self.selections) + ". Choose one with --mailtls-select or `--select`",
            )
        return self.selections[name].apply(self.all_cells(servers))


def load_matrix(path: str | Path | None = None) -> Matrix:
    """Read and validate a matrix file (default: the one shipped with the package)."""
    file = Path(path) if path is not None else default_matrix_path()
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MatrixError(source, "", "no such file", "Pass an existing file with --mailtls-matrix") from None
    except OSError as exc:
        raise MatrixError(source, "", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f"line {where.line + 1}, column {where.column + 1}" if where else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc)
        raise MatrixError(source, "", f"malformed YAML at {at}: {problem}") from None
    return parse_matrix(data, source=source)


def parse_matrix(data: Any, *, source: str = "<matrix>") -> Matrix:
    """Validate an already-parsed matrix document."""
    doc = _mapping(data, source, "(top level)")
    _known_keys(doc, _TOP_KEYS, source, "")
    if doc.get("version", 1) != 1:
        raise MatrixError(source, "version", f"unsupported version {doc['version']!r}", "Allowed: 1")

    policies = {
        check_name(name, source, f"policies[{name!r}]", "policy"): _parse_policy(name, body, source)
        for name, body in _mapping(doc.get("policies"), source, "policies", required=True).items()
    }
    if not policies:
        raise MatrixError(source, "policies", "at least one policy is needed")
    auths = {
        check_name(name, source, f"auth[{name!r}]", "auth policy"): _parse_auth(name, body, source)
        for name, body in _mapping(doc.get("auth") or {"default": {}}, source, "auth").items()
    }
    blocks_raw = doc.get("grid")
    if not isinstance(blocks_raw, list) or not blocks_raw:
        raise MatrixError(source, "grid", "must be a non-empty list of grid blocks")
    grid = tuple(_parse_block(i, raw, policies, auths, source) for i, raw in enumerate(blocks_raw))

    selections_raw = _mapping(doc.get("selections") or {}, source, "selections")
    selections = {
        check_name(name, source, f"selections[{name!r}]", "selection"): _parse_selection(
            name, body, policies, auths, source
        )
        for name, body in selections_raw.items()
    }
    selections.setdefault("full", Selection("full", description="every cell of the grid"))
    default_selection = doc.get("default_selection", "full")
    if not isinstance(default_selection, str) or default_selection not in selections:
        raise MatrixError(source, "default_selection", f"unknown selection {default_selection!r}", _allowed(selections))
    return Matrix(source, policies, auths, grid, selections, str(default_selection))


def filter_cells(cells: Iterable[Cell], criteria: Mapping[str, str | Sequence[str]]) -> list[Cell]:
    """Cells whose attributes match every criterion (a value or a list of values, globs allowed)."""
    for key in criteria:
        if key not in CELL_KEYS:
            raise MatrixError("cell filter", key, "unknown key", _allowed(CELL_KEYS))
    norm = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in criteria.items()}
    return [c for c in cells if _attrs_match(norm, c)]


def unknown_criterion(
    criteria: Mapping[str, str | Sequence[str]], vocabulary: Mapping[str, Sequence[str]]
) -> tuple[str, str] | None:
    """The first ``(key, value)`` of ``criteria`` whose value (a glob allowed) matches nothing in
    ``vocabulary`` (see :meth:`Matrix.vocabulary`), or ``None`` when every value names something."""
    for key, value in criteria.items():
        allowed = vocabulary.get(key, ())
        for pattern in (value,) if isinstance(value, str) else value:
            if not isinstance(pattern, str) or not any(fnmatch.fnmatchcase(v, pattern) for v in allowed):
                return key, pattern if isinstance(pattern, str) else repr(pattern)
    return None


def cell_attributes(cell: Cell) -> dict[str, str]:
    return {
        "server": cell.server,
        "service": cell.service.name,
        "protocol": str(cell.protocol),
        "mode": str(cell.mode),
        "policy": cell.policy.name if cell.policy else "none",
        "cert": str(cell.cert) if cell.cert else "none",
        "auth": cell.auth.name,
        "network": cell.network or "none",
        "id": cell.id,
    }


# --- validation helpers -------------------------------------------------------


def check_name(name: Any, source: str, key: str, what: str) -> str:
    """``name`` if it follows :data:`NAME_PATTERN`, else a :class:`MatrixError` naming ``key`` and the rule."""
    if not isinstance(name, str):
        raise MatrixError(source, key, f"{what} name {name!r} must be a string", NAME_RULE)
    if not is_name(name):
        raise MatrixError(source, key, f"{what} name {name!r} is not allowed", NAME_RULE)
    return name


def _text(value: Any, source: str, key: str) -> str:
    """A description: any single line of text, no control characters."""
    if value is None:
        return ""
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise MatrixError(source, key, f"must be text, got {type(value).__name__}")
    text = str(value)
    if any(unicodedata.category(ch) == "Cc" for ch in text):  # C0, DEL and C1 controls
        raise MatrixError(source, key, f"{text!r} holds a control character (a newline, a tab...)", "Use one line")
    return text


def _entry_matches(entry: str | Mapping[str, tuple[str, ...]], cell: Cell) -> bool:
    if isinstance(entry, str):
        return fnmatch.fnmatchcase(cell.id, entry)
    return _attrs_match(entry, cell)


def _attrs_match(criteria: Mapping[str, tuple[str, ...]], cell: Cell) -> bool:
    attrs = cell_attributes(cell)
    return all(any(fnmatch.fnmatchcase(attrs[k], pat) for pat in pats) for k, pats in criteria.items())


def _allowed(options: Iterable[object]) -> str:
    return "Allowed: " + ", ".join(str(o) for o in options)


def _mapping(value: Any, source: str, key: str, *, required: bool = False) -> dict[str, Any]:
    if value is None:
        if required:
            raise MatrixError(source, key, "is required")
        return {}
    if not isinstance(value, dict):
        raise MatrixError(source, key, f"must be a mapping, got {type(value).__name__}")
    return value


def _known_keys(body: Mapping[Any, Any], allowed: set[str], source: str, where: str) -> None:
    for key in body:
        if not isinstance(key, str) or key not in allowed:
            prefix = f"{where}." if where else ""
            shown = key if is_name(key) else repr(key)
            raise MatrixError(source, f"{prefix}{shown}", "unknown key", _allowed(sorted(allowed)))


def _str_list(value: Any, source: str, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(source, key, "must be a string or a list of strings")
    return tuple(value)


def _parse_policy(name: str, body: Any, source: str) -> TLSPolicy:
    where = f"policies.{name}"
    body = _mapping(body, source, where)
    _known_keys(body, _POLICY_KEYS, source, where)
    description = _text(body.get("description"), source, f"{where}.description")
    versions = {}
    for key, default in (("min_version", "TLSv1.2"), ("max_version", "TLSv1.3")):
        value = body.get(key, default)
        if not isinstance(value, str) or value not in VERSIONS:
            raise MatrixError(source, f"{where}.{key}", f"unknown version {value!r}", _allowed(VERSIONS))
        versions[key] = value
    if version_index(versions["min_version"]) > version_index(versions["max_version"]):
        raise MatrixError(
            source,
            where,
            f"impossible version range: min_version {versions['min_version']} is above "
            f"max_version {versions['max_version']}",
        )
    ciphers = body.get("ciphers")
    if ciphers is not None:
        _check_ciphers(ciphers, source, f"{where}.ciphers")
    suites = body.get("ciphersuites")
    if suites is not None:
        _check_ciphersuites(suites, source, f"{where}.ciphersuites")
    level = _seclevel(ciphers)
    legacy = [v for v in VERSIONS[version_index(versions["min_version"]) :] if v in ("TLSv1", "TLSv1.1")]
    if legacy and level is not None and level > 0:
        raise MatrixError(
            source,
            f"{where}.ciphers",
            f"{ciphers!r} sets @SECLEVEL={level}, but OpenSSL 3 negotiates {', '.join(legacy)} only at security "
            "level 0",
            "Set @SECLEVEL=0 or leave it out (it is added for legacy versions)",
        )
    dh_bits = body.get("dh_bits")
    if dh_bits is not None:
        if isinstance(dh_bits, bool) or not isinstance(dh_bits, int) or dh_bits not in DH_SIZES:
            raise MatrixError(
                source,
                f"{where}.dh_bits",
                f"no fixed DH group of {dh_bits!r} bits",
                _allowed(DH_SIZES),
            )
        if dh_bits < DH_SECURE_BITS and level is not None and level >= 2:
            raise MatrixError(
                source,
                f"{where}.ciphers",
                f"{ciphers!r} sets @SECLEVEL={level}, but OpenSSL 3 loads a {dh_bits}-bit DH group only at security "
                "level 1 or lower",
                "Set @SECLEVEL=1 or leave it out (it is added for small DH groups)",
            )
    return TLSPolicy(
        name=name, ciphers=ciphers, ciphersuites=suites, description=description, dh_bits=dh_bits, **versions
    )


def _seclevel(ciphers: str | None) -> int | None:
    """The security level a cipher list sets (OpenSSL obeys the last ``@SECLEVEL=N``), or ``None``."""
    levels = [int(e.split("=", 1)[1]) for e in (ciphers or "").split(":") if e.startswith("@SECLEVEL=")]
    return levels[-1] if levels else None


# The OpenSSL "auth" of TLS <= 1.2 ciphers a key type can serve.
_KEY_AUTH = {"rsa": "auth-rsa", "ecdsa": "auth-ecdsa"}
_CIPHER_FLOOR = {"SSLv3": -1, "TLSv1.0": 0, "TLSv1.2": 2}  # get_ciphers()' "protocol": lowest version


def _servable(policy: TLSPolicy, cert: CertProfile) -> str | None:
    """Why no server can serve ``policy`` with ``cert`` (a phrase), or ``None``.

    Validation would otherwise accept a cell that never passes its readiness handshake, or that refuses
    a version its policy declares.
    """
    level = _seclevel(policy.ciphers)
    most = cert.fault.max_seclevel  # the highest OpenSSL security level that still presents it
    if level is not None and most is not None and level > most:
        return f"its @SECLEVEL={level} refuses the {cert} certificate (it needs @SECLEVEL={most} or lower)"
    if policy.ciphers is None:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(policy.ciphers if level is not None else policy.ciphers + ":@SECLEVEL=0")
    auth = _KEY_AUTH[cert.key_type]
    floors = [_CIPHER_FLOOR.get(c["protocol"]) for c in ctx.get_ciphers() if c["auth"] == auth]
    for version in policy.versions:
        if version == "TLSv1.3":
            continue  # TLS 1.3 suites do not depend on the key type, nor on this list
        rank = version_index(version)
        if not any(f is not None and f <= rank for f in floors):
            return (
                f"none of its ciphers works at {version} with the {cert.key_type.upper()} key of the {cert} certificate"
            )
    return None


def _check_ciphers(ciphers: Any, source: str, key: str) -> None:
    if not isinstance(ciphers, str):
        raise MatrixError(source, key, f"must be a string, got {type(ciphers).__name__}", _CIPHER_RULE)
    for element in ciphers.split(":"):
        if not _CIPHER_ELEMENT.fullmatch(element):
            raise MatrixError(source, key, f"{element!r} in {ciphers!r} is not a cipher spec", _CIPHER_RULE)
    # Each named cipher must exist in the local OpenSSL; OpenSSL itself skips unknown names silently.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.set_ciphers(ciphers if "@SECLEVEL" in ciphers else ciphers + ":@SECLEVEL=0")
    except ssl.SSLError:
        raise MatrixError(
            source, key, f"{ciphers!r} selects no cipher of the local OpenSSL", "Run `openssl ciphers -v ALL`"
        ) from None
    for part in ciphers.split(":"):
        if not part or part[0] in "!+-@" or (part.isupper() and "-" not in part):
            continue  # keywords (ALL, DEFAULT, HIGH) and modifiers
        try:
            ctx.set_ciphers(part + ":@SECLEVEL=0")
        except ssl.SSLError:
            raise MatrixError(
                source, key, f"unknown cipher {part!r}", "Run `openssl ciphers -v ALL` for the names"
            ) from None


_TLS13_SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)


def _check_ciphersuites(suites: Any, source: str, key: str) -> None:
    if not isinstance(suites, str):
        raise MatrixError(source, key, f"must be a string of ':'-separated suites, got {type(suites).__name__}")
    for suite in suites.split(":"):
        if suite not in _TLS13_SUITES:
            raise MatrixError(source, key, f"unknown TLS 1.3 cipher suite {suite!r}", _allowed(_TLS13_SUITES))


def _parse_auth(name: str, body: Any, source: str) -> AuthPolicy:
    where = f"auth.{name}"
    body = _mapping(body, source, where)
    _known_keys(body, _AUTH_KEYS, source, where)
    description = _text(body.get("description"), source, f"{where}.description")
    mechanisms = tuple(
        m.upper() for m in _str_list(body.get("mechanisms", ["PLAIN", "LOGIN"]), source, f"{where}.mechanisms")
    )
    for mech in mechanisms:
        if mech not in _MECHANISMS:
            raise MatrixError(source, f"{where}.mechanisms", f"unknown mechanism {mech!r}", _allowed(_MECHANISMS))
    flags = {}
    for key, default in (("tls_only", True), ("required", True), ("client_cert", False)):
        value = body.get(key, default)
        if not isinstance(value, bool):
            raise MatrixError(source, f"{where}.{key}", f"must be true or false, got {value!r}")
        flags[key] = value
    if flags["required"] and not mechanisms and not flags["client_cert"]:
        raise MatrixError(
            source, where, "required is true but no mechanism is offered", "Add mechanisms or set required: false"
        )
    return AuthPolicy(name, mechanisms, description=description, **flags)


def _parse_block(
    index: int, raw: Any, policies: Mapping[str, TLSPolicy], auths: Mapping[str, AuthPolicy], source: str
) -> GridBlock:
    body = _mapping(raw, source, f"grid[{index}]")
    name = check_name(body.get("name", f"block-{index}"), source, f"grid[{index}].name", "grid block")
    where = f"grid[{index}] ({name})"
    _known_keys(body, _BLOCK_KEYS, source, where)
    description = _text(body.get("description"), source, f"{where}.description")

    def names(key: str, allowed: Sequence[str], default: Sequence[str] | None = None) -> tuple[str, ...]:
        value = body.get(key)
        if value is None:
            if default is None:
                raise MatrixError(source, f"{where}.{key}", "is required", _allowed(allowed))
            return tuple(default)
        if value == "all":
            return tuple(allowed)
        items = _str_list(value, source, f"{where}.{key}")
        for item in items:
            if item not in allowed:
                raise MatrixError(source, f"{where}.{key}", f"unknown {_SINGULAR[key]} {item!r}", _allowed(allowed))
        return items

    modes = names("modes", [str(m) for m in Mode])
    tls = any(Mode(m).tls for m in modes)
    block = GridBlock(
        name=name,
        servers=names("servers", server_names(), ()),
        services=names("services", list(SERVICES)),
        modes=tuple(Mode(m) for m in modes),
        policies=names("policies", list(policies), None if tls else ()),
        certs=tuple(CertProfile(c) for c in names("certs", [str(c) for c in CertProfile], [str(CertProfile.VALID)])),
        auth=names("auth", list(auths), ["default"] if "default" in auths else None),
        description=description,
        networks=_network_keywords().get(str(body.get("network")), ()) or names("network", list(_attacks()), ()),
    )
    if tls:
        for policy_name in block.policies:
            for cert in block.certs:
                why = _servable(policies[policy_name], cert)
                if why:
                    raise MatrixError(
                        source,
                        where,
                        f"policy {policy_name} cannot be served with certificate {cert}: {why}",
                        "Change the policy's ciphers or drop the pair from this block",
                    )
    return block


def _parse_selection(
    name: str, body: Any, policies: Mapping[str, TLSPolicy], auths: Mapping[str, AuthPolicy], source: str
) -> Selection:
    where = f"selections.{name}"
    body = _mapping(body, source, where)
    _known_keys(body, _SELECTION_KEYS, source, where)
    description = _text(body.get("description"), source, f"{where}.description")

    def entries(key: str) -> tuple[str | Mapping[str, tuple[str, ...]], ...]:
        raw = body.get(key) or []
        if not isinstance(raw, list):
            raise MatrixError(source, f"{where}.{key}", "must be a list of id patterns or attribute mappings")
        out: list[str | Mapping[str, tuple[str, ...]]] = []
        for i, entry in enumerate(raw):
            if isinstance(entry, str):
                if not _ID_PATTERN.fullmatch(entry):
                    raise MatrixError(
                        source,
                        f"{where}.{key}[{i}]",
                        f"cell id pattern {entry!r} is not allowed",
                        "Patterns are cell ids (letters, digits, '-', '.') with the globs * ? [...]",
                    )
                out.append(entry)
                continue
            entry = _mapping(entry, source, f"{where}.{key}[{i}]")
            _known_keys(entry, set(CELL_KEYS), source, f"{where}.{key}[{i}]")
            parsed = {k: _str_list(v, source, f"{where}.{key}[{i}].{k}") for k, v in entry.items()}
            known = {
                "server": server_names(),
                "service": tuple(SERVICES),
                "protocol": ("smtp", "imap", "pop3"),
                "mode": tuple(str(m) for m in Mode),
                "policy": (*policies, "none"),
                "cert": (*(str(c) for c in CertProfile), "none"),
                "auth": tuple(auths),
                "network": (*_attacks(), "none"),
            }
            for k, values in parsed.items():
                for v in values:
                    if not _ID_PATTERN.fullmatch(v):
                        raise MatrixError(
                            source,
                            f"{where}.{key}[{i}].{k}",
                            f"{k} pattern {v!r} is not allowed",
                            "Patterns are names (letters, digits, '-', '.') with the globs * ? [...]",
                        )
                    if k in known and not any(ch in v for ch in "*?[") and v not in known[k]:
                        raise MatrixError(source, f"{where}.{key}[{i}].{k}", f"unknown {k} {v!r}", _allowed(known[k]))
            out.append(parsed)
        return tuple(out)

    return Selection(name, entries("include"), entries("exclude"), description)
