"""Text from a run or its data, made inert for the format it lands in. Task names, label names,
model names, commands, texts and folder names are user-supplied (a label name comes from the
data, a run folder may be renamed by hand), so every page and card writes them through one of
these, never raw:

    markdown_text("[x](javascript:alert(1))")   # \\[x\\](javascript:alert(1)): prose in a model card
    markdown_cell("")                            # –: a Markdown table cell that keeps its column
    code_span("a `b` c")                         # ``a `b` c``: an inline code span, shown as it is
    python_string('Logs/a "b"')                  # "Logs/a \\"b\\"": a Python string literal
    shell_word("Logs/my run")                    # 'Logs/my run': one shell word
    url_path("javascript:alert(1)/index.html")   # ./javascript%3Aalert%281%29/index.html: a relative link
    yaml_front_matter({"name": "a\\n---"})       # ---\\nname: "a\\n---"\\n---\\n: a card's front matter

HTML needs none of these: the pages are rendered with Jinja2 autoescaping, and only an href or
src built from user data goes through `url_path`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import unicodedata
from pathlib import PurePosixPath
from urllib.parse import quote

import yaml

# Characters that start inline Markdown anywhere in a line: code spans, emphasis, links and images
# (`[`, `]`), GitHub's table cells and strikethrough, and the backslash itself. Each is written
# backslash-escaped, which CommonMark allows for any ASCII punctuation.
INLINE = re.compile(r"([\\`*_\[\]|~])")
# A value that starts a line (a list item's text) must not open a block there: a heading (`# `),
# a list item (`- `, `+ `, `1. `), a thematic break or setext underline (`---`, `===`).
BLOCK_MARKER = re.compile(r"^(\s*\d{0,9})([#+=.)-])(?=\s|$|\2)")
HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def one_line(value) -> str:
    """`value` as text on one line: line breaks and other control characters become spaces, so a
    value can neither end the line it sits in nor start a block of its own."""
    return "".join(" " if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in str(value))


def markdown_text(value) -> str:
    """Prose or a table cell in Markdown, shown as written: no raw HTML, autolink or entity (`<`
    `>` `&` as entities), no link, image, emphasis, code or strikethrough, no `|` ending a table
    cell, and no heading or list started by its first characters."""
    text = "".join(HTML_ENTITIES.get(ch, ch) for ch in one_line(value))
    return BLOCK_MARKER.sub(r"\1\\\2", INLINE.sub(r"\\\1", text), count=1)


def markdown_cell(value) -> str:
    """A Markdown table cell: `markdown_text`, and `–` for an empty value so the row reads as
    missing rather than blank."""
    text = markdown_text("" if value is None else value)
    return text if text.strip() else "–"


def code_span(value) -> str:
    """An inline Markdown code span holding `value` as it is: fenced by more backticks than any run
    inside it, padded where it starts or ends with one (CommonMark's rule), on one line. Inside a
    code span nothing is Markdown or HTML, so nothing else is escaped."""
    text = one_line(value)
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def python_string(value) -> str:
    """A Python string literal (JSON's escapes are Python's), on one line: it cannot end the
    fenced code block it is printed in."""
    return json.dumps(str(value), ensure_ascii=False)


def shell_word(value) -> str:
    """One POSIX shell word for `value`. A value with a control character (a line break would end
    the command, and the code block it is printed in) is written in bash's `$'...'` quoting, every
    unprintable character as an escape."""
    text = str(value)
    if all(unicodedata.category(ch) != "Cc" for ch in text):
        return shlex.quote(text)
    return "$'" + "".join(map(ansi_c_escape, text)) + "'"


def ansi_c_escape(ch: str) -> str:
    """One character inside bash's `$'...'`: itself where printable, else its bytes as the file
    system encodes them (`\\x0a`, `\\xc2\\x85`), which bash reads back the same in any locale."""
    if ch in "\\'":
        return "\\" + ch
    if ch.isprintable():
        return ch
    return "".join(f"\\x{byte:02x}" for byte in os.fsencode(ch))


def url_path(path) -> str:
    """A link to the relative `path` (a file or folder beside the page or below it): `./` first, so
    no part can read as a scheme (`javascript:`), and each part percent-encoded, so `#`, `?`, `%`
    and spaces stay part of the name. The name's bytes are encoded as the file system holds them."""
    parts = PurePosixPath(path).parts
    return "./" + "/".join(quote(os.fsencode(part), safe="") for part in parts)


class _FrontMatterDumper(yaml.SafeDumper):
    """YAML that writes a string holding a line break or another unprintable character in double
    quotes, with escapes, so every value stays on its own line."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if not text.isprintable() else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_FrontMatterDumper.add_representer(str, _represent_text)


def yaml_front_matter(matter: dict) -> str:
    """`matter` as a Markdown file's YAML front matter, between `---` lines: every key and value
    quoted as YAML needs (PyYAML's safe dumper), each on one line, so no value can end the block."""
    body = yaml.dump(matter, Dumper=_FrontMatterDumper, sort_keys=False, allow_unicode=True, width=math.inf)
    return f"---\n{body}---\n"
