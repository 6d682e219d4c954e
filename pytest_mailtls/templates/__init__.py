"""The Jinja2 templates shipped with the package (report pages, server configuration files) and their environment.

Templates whose name ends in ``.html.j2`` are autoescaped; the others (Markdown, configuration files) are
rendered as they are written. Undefined names are errors, never empty strings.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first render: the plugin loads without Jinja2
    import jinja2
    from markupsafe import Markup

__all__ = ["environment", "render"]


def _wbr(text: object) -> Markup:
    """``text`` escaped, with a line-break opportunity after each hyphen (long certificate names in a header)."""
    from markupsafe import Markup, escape

    return escape(str(text)).replace("-", Markup("-<wbr>"))


def _md_code(text: object) -> str:
    """``text`` fit for inline code in a Markdown table or list: no backticks, no cell breaks, at most 300 chars."""
    return str(text).replace("`", "'").replace("|", "\\|")[:300]


@cache
def environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_mailtls", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=True, default=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["wbr"] = _wbr
    env.filters["md_code"] = _md_code
    return env


def render(name: str, /, **context: Any) -> str:
    """The template ``name`` rendered with ``context``."""
    return environment().get_template(name).render(**context)
