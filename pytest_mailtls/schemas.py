"""The JSON Schemas of the records pytest-mailtls writes, generated from their pydantic models.

``python -m pytest_mailtls.schemas [FOLDER]`` writes ``manifest.json``, ``report.json`` and ``session.json``
into FOLDER (default ``docs/schemas``); with ``--check`` it writes nothing and exits 1 when a file there
differs from what the models generate now. The schemas describe what writers write: every key is listed
as required (readers accept records that leave out the keys with defaults).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

__all__ = ["SCHEMAS", "json_schema", "schema_text", "main"]

#: Draft of the generated schemas.
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _models() -> dict[str, type[BaseModel]]:
    from .manifest import Manifest
    from .report import ReportDocument
    from .wire.session import Session

    return {"manifest": Manifest, "report": ReportDocument, "session": Session}


#: The documents, by name: ``manifest`` (``mailtls up --manifest``), ``report`` (``report.json``) and
#: ``session`` (one line of a cell's sessions file).
SCHEMAS: tuple[str, ...] = ("manifest", "report", "session")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mailtls.schemas", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", default="docs/schemas", help="where the files go (default: docs/schemas)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is not up to date")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    stale = []
    for name in SCHEMAS:
        path = folder / f"{name}.json"
        text = schema_text(name)
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(
            f"schemas: {', '.join(map(str, stale))} differ from the models: run `python -m pytest_mailtls.schemas`",
            file=sys.stderr,
        )
        return 1
    for path in stale:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
