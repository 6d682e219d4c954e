"""What the JSON records (manifest, report, sessions) share: a pydantic base and one-line validation errors.

The models are the schema: ``python -m pytest_mailtls.schemas`` writes their JSON Schemas into docs/schemas/.
Readers accept a record whose keys with defaults are left out; writers write every key.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import one_line

__all__ = ["Record", "problem", "one_of"]


class Record(BaseModel):
    """Base of the JSON records: enums are kept as their values (a record holds JSON-ready data)."""

    model_config = ConfigDict(use_enum_values=True)


def one_of(values: Sequence[str], value: str) -> str:
    """``value`` if it is one of ``values``; a ``ValueError`` listing them otherwise (for validators)."""
    if value not in values:
        raise ValueError(f"{value!r} is not one of {', '.join(values)}")
    return value


_TYPES = {
    "string_type": "is not a string",
    "int_type": "is not an integer",
    "int_parsing": "is not an integer",
    "int_from_float": "is not an integer",
    "float_type": "is not a number",
    "float_parsing": "is not a number",
    "bool_type": "is not true or false",
    "bool_parsing": "is not true or false",
    "list_type": "is not a list",
}
_OBJECT = ("model_type", "model_attributes_type", "dict_type", "dataclass_type", "dataclass_exact_type")


def problem(exc: ValidationError, *, at: str = "") -> str:
    """The first problem of a validation error as one line: where (a dotted key path) and what is wrong.

    ``port 'many' is not a port number (1-65535)``, ``missing key 'password' in auth``,
    ``mode 'tls' is not one of 'plain', 'starttls', 'starttls-required' or 'implicit'``. ``at`` is the path of
    the validated object in its document (``owner``).
    """
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc)
    error = errors[0]
    loc = [*([at] if at else []), *(str(part) for part in error["loc"])]
    kind, value = error["type"], error.get("input")
    path = _path(loc)
    if kind == "missing":
        where = _path(loc[:-1])
        text = f"missing key {loc[-1]!r}" + (f" in {where}" if where else "")
    elif kind in _OBJECT:
        text = f"{path or 'the record'} must be an object, got {type(value).__name__}"
    elif kind in ("value_error", "assertion_error"):
        text = f"{path} {error['ctx']['error']}".strip()
    elif kind in ("enum", "literal_error"):
        text = f"{path} {value!r} is not one of {error['ctx']['expected']}".strip()
    else:
        text = f"{path} {value!r} {_TYPES.get(kind, '(' + error['msg'] + ')')}".strip()
    others = [_path([*([at] if at else []), *(str(p) for p in e["loc"])]) or "the record" for e in errors[1:]]
    if others:
        listed = ", ".join(dict.fromkeys(others[:5])) + (", ..." if len(others) > 5 else "")
        text += f" ({len(others)} more problem{'s' if len(others) > 1 else ''}: {listed})"
    return one_line(text)


def _path(loc: Sequence[str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out
