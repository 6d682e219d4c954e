"""The fenced code blocks of the README and docs/*.md, with the HTML comment that marks each one.

Markers (an HTML comment on the line before the fence):

* ``<!-- example: docs/examples/FILE -->``: the block is that file, verbatim; the suite runs the file.
* ``<!-- not-run: why -->``: an illustration the suite does not run (keep these few).
* ``<!-- run -->``: a shell block whose lines the suite runs as written.
* ``<!-- setup -->``: the README's set-up commands, which ``.ci/run`` runs.
* ``<!-- synopsis: ... -->``: command synopses; every command and option must exist.
* ``<!-- ci: NAME -->``: a CI configuration (docs/ci.md), checked by ``tests/docs/test_ci.py``.

``python tests/docs/blocks.py --write`` copies every example file into the blocks that quote it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "docs" / "examples"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^( *)```([\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*([\w-]+)(?::\s*(.*?))?\s*-->\s*$")
SHELL_LANGS = ("", "bash", "sh", "shell", "console")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str  # dedented by the fence's indentation, ending with a newline
    marker: str | None  # "example", "not-run", "run", ...
    argument: str  # what follows "marker:" ("" when nothing)
    span: tuple[int, int]  # [start, end) character offsets of the text inside the file

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path``, in order."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i].rstrip("\n"))
        if opening is None:
            i += 1
            continue
        indent, lang = len(opening.group(1)), opening.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = "".join(line[indent:] if line[:indent].strip() == "" else line for line in lines[i + 1 : j])
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marked = _MARKER.match(lines[k]) if k >= 0 else None
        found.append(
            Block(
                path=path,
                line=i + 1,
                lang=lang,
                text=body,
                marker=marked.group(1) if marked else None,
                argument=(marked.group(2) or "") if marked else "",
                span=(offsets[i + 1], offsets[j]),
            )
        )
        i = j + 1
    return found


def run_env() -> dict[str, str]:
    """The environment for commands the docs show: this interpreter's scripts (``python``, ``mailtls``) first
    on PATH, this checkout first on PYTHONPATH, and no outer pytest options (PYTEST_ADDOPTS)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def all_blocks() -> list[Block]:
    return [b for path in DOCS for b in blocks(path)]


def commands(text: str) -> Iterator[str]:
    """The command lines of a shell block or a CI ``run:``/``script:`` text: continuations joined, prompts,
    comment lines and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", text)
    for raw in joined.splitlines():
        line = raw.strip().removeprefix("$ ")
        if line and not line.startswith("#"):
            yield line


def mailtls_commands(line: str) -> list[list[str]]:
    """The ``mailtls ...`` commands in one command line (``a && mailtls b | c`` holds one), as words.

    CI variables (``${{ matrix.shard }}``, ``$CI_NODE_INDEX``) stand for ``1``."""
    line = re.sub(r"\$\{\{[^}]*\}\}|\$\{?\w+\}?", "1", line)
    found = []
    for part in re.split(r"&&|\|\||;|\|", line):
        words = shlex.split(part, comments=True)
        if words and words[0] == "mailtls":
            found.append(words)
    return found


def parse_mailtls(words: list[str]) -> str | None:
    """Parse ``mailtls`` arguments with the real parser; the parser's complaint, or ``None`` when they parse."""
    from pytest_mailtls.cli import build_parser

    argv = words[1:]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as exc:
        if exc.code not in (0, None):
            return err.getvalue().strip().splitlines()[-1]
    return None


def subcommands() -> dict[str, argparse.ArgumentParser]:
    """``mailtls``'s subcommands and their parsers (and ``""``: the top-level parser)."""
    from pytest_mailtls.cli import build_parser

    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return {"": parser, **actions[0].choices}


def options(parser: argparse.ArgumentParser) -> set[str]:
    return set(parser._option_string_actions)


def sync(*, write: bool) -> list[str]:
    """Blocks marked ``example:`` whose text differs from their file; with ``write``, re-quote them."""
    stale = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in reversed(blocks(path)):
            if block.marker != "example":
                continue
            source = (ROOT / block.argument).read_text(encoding="utf-8")
            if block.text != source:
                stale.append(block.where)
                start, end = block.span
                text = text[:start] + source + text[end:]
        if write:
            path.write_text(text, encoding="utf-8")
    return stale


if __name__ == "__main__":
    changed = sync(write="--write" in sys.argv[1:])
    print("\n".join(f"re-quoted {where}" for where in changed) or "every quoted example is up to date")
