"""Small helpers to show model output readably in notebooks and on the website."""

from __future__ import annotations

import textwrap

#: Characters per line that fit the website's code column without scrolling.
WIDTH = 78


def wrap(text: str, width: int = WIDTH, indent: str = "") -> str:
    """Wrap long lines of ``text`` to ``width`` columns, keeping its own line breaks."""
    lines = []
    for line in str(text).splitlines() or [""]:
        lines.append(textwrap.fill(line, width=width, initial_indent=indent,
                                   subsequent_indent=indent, replace_whitespace=False) or indent)
    return "\n".join(lines)
