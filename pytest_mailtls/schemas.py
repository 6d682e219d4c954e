"""The JSON Schemas of the records pytest-mailtls writes, generated from their pydantic models.

``python -m pytest_mailtls.schemas [FOLDER]`` writes ``manifest.json``, ``report.json``, ``session.json`` and
``verify.json`` into FOLDER (default ``docs/schemas``) and regenerates the key tables of the Markdown pages next to it
(``docs/*.md``) between ``<!-- schema: DOCUMENT MODEL -->`` and ``<!-- /schema -->``; with ``--check``
it writes nothing and exits 1 when a file differs from what the models generate now. The schemas describe
what writers write: every key is listed as required (readers accept records that leave out the keys with
defaults).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

__all__ = ["SCHEMAS", "json_schema", "schema_text", "key_table", "main"]

#: Draft of the generated schemas.
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _models() -> dict[str, type[BaseModel]]:
    from .manifest import Manifest
    from .report import ReportDocument
    from .verify import VerifyDocument
    from .wire.session import Session

    return {"manifest": Manifest, "report": ReportDocument, "session": Session, "verify": VerifyDocument}


#: The documents, by name: ``manifest`` (``mailtls up --manifest``), ``report`` (``report.json``),
#: ``session`` (one line of a cell's sessions file) and ``verify`` (``mailtls verify --json``).
SCHEMAS: tuple[str, ...] = ("manifest", "report", "session", "verify")


class _Generator(GenerateJsonSchema):
    """Every key a writer writes is required; titles only on models (a field's title repeats its name)."""

    def field_is_required(
        self,
        field: core_schema.ModelField | core_schema.DataclassField | core_schema.TypedDictField,
        total: bool,
    ) -> bool:
        return True if self.mode == "serialization" else super().field_is_required(field, total)

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def json_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the document ``name`` (one of :data:`SCHEMAS`)."""
    models = _models()
    if name not in models:
        raise ValueError(f"no schema {name!r}; there are {', '.join(SCHEMAS)}")
    schema = models[name].model_json_schema(mode="serialization", schema_generator=_Generator)
    return {"$schema": DIALECT, **schema}


def schema_text(name: str) -> str:
    """:func:`json_schema` as the text of its file."""
    return json.dumps(json_schema(name), indent=2, ensure_ascii=False) + "\n"


def key_table(name: str, model: str, *, without: str | None = None) -> str:
    """A Markdown table of the keys of ``model`` (a definition in the schema ``name``): key, type, meaning.

    ``without`` leaves out the keys of another model (a cell's report record repeats its manifest record).
    """
    schema = json_schema(name)
    defs = schema.get("$defs", {})
    target = schema if model == schema.get("title") else defs[model]
    skip = set(_definition(without)["properties"]) if without else set()
    rows = ["| key | type | meaning |", "|---|---|---|"]
    for key, prop in target["properties"].items():
        if key in skip:
            continue
        kind, values = _type(prop, defs)
        meaning = prop.get("description") or _referenced(prop, defs).get("description", "")
        if values and not all(f"`{v}`" in meaning for v in values):
            meaning = (meaning + "; " if meaning else "") + "one of " + ", ".join(f"`{v}`" for v in values)
        cell = meaning.replace("|", "\\|")
        rows.append(f"| `{key}` | {kind} | {cell} |")
    return "\n".join(rows) + "\n"


def _definition(model: str) -> dict[str, Any]:
    for name in SCHEMAS:
        schema = json_schema(name)
        found = schema if schema.get("title") == model else schema.get("$defs", {}).get(model)
        if found:
            return dict(found)
    raise ValueError(f"no model {model!r} in the schemas")


def _referenced(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref") or next((p["$ref"] for p in prop.get("anyOf", []) if "$ref" in p), None)
    return defs[ref.rsplit("/", 1)[-1]] if ref else {}


def _type(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[str, list[Any]]:
    """How a property reads in a table, and the values it may take (an enum)."""
    if "$ref" in prop:
        target = defs[prop["$ref"].rsplit("/", 1)[-1]]
        if "enum" in target:
            return target.get("type", "string"), target["enum"]
        return f"object ({target.get('title', 'see below')})", []
    if "anyOf" in prop:
        parts = [_type(p, defs) for p in prop["anyOf"]]
        values = [v for _, vs in parts for v in vs]
        return " or ".join(dict.fromkeys(kind for kind, _ in parts)), values
    kind = prop.get("type", "any")
    if kind == "array":
        inner, values = _type(prop.get("items", {}), defs)
        return f"list of {inner}", values
    return kind, list(prop.get("enum", []))


_SECTION = re.compile(r"(<!-- schema: (\w+) (\w+)(?: without (\w+))? -->\n)(.*?)(<!-- /schema -->)", re.S)


def _rendered(text: str) -> str:
    return _SECTION.sub(lambda m: m[1] + key_table(m[2], m[3], without=m[4]) + m[6], text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mailtls.schemas", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="docs/schemas", help="where the files go (default: docs/schemas)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is not up to date")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    wanted = {folder / f"{name}.json": schema_text(name) for name in SCHEMAS}
    for page in sorted(folder.parent.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        if _SECTION.search(text):
            wanted[page] = _rendered(text)
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        if stale:
            print(
                f"schemas: {', '.join(map(str, stale))} differ from the models: run `python -m pytest_mailtls.schemas`",
                file=sys.stderr,
            )
        return 1 if stale else 0
    folder.mkdir(parents=True, exist_ok=True)
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
