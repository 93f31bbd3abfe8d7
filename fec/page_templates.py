"""The Jinja2 templates under fec/templates and the filters the run page, the index page and the
model card share: numbers to two decimals, mean±std cells, metric names, Markdown-safe text.

    environment().get_template("run.html.j2").render(...)   # HTML: autoescaped
    environment(autoescape=False).get_template("model_card.md.j2")   # Markdown: the filters escape

In the model card, text from the run goes through `md` (prose and table cells), `code` (an inline
code span), `py` (a Python string literal) or `sh` (one shell word).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from fec.metrics import mean_std_cell

TEMPLATES = Path(__file__).parent / "templates"
METRIC_NAMES = {"acc": "accuracy", "wf1": "weighted F1", "macro_f1": "macro-F1", "micro_f1": "micro-F1", "loss": "loss"}


def environment(autoescape: bool = True) -> Environment:
    """The templates under fec/templates, with the number filters every page uses."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]) if autoescape else False,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["num"] = lambda value, digits=2: "–" if value is None else f"{value:.{digits}f}"
    env.filters["mean_std"] = lambda stats: mean_std_cell(stats) or "–"
    env.filters["md"] = markdown_text
    env.filters["code"] = code_span
    env.filters["py"] = lambda value: json.dumps(str(value), ensure_ascii=False)
    env.filters["sh"] = lambda value: shlex.quote(str(value))
    env.globals["metric_name"] = lambda key: METRIC_NAMES.get(key, key)
    return env


def markdown_text(value) -> str:
    """Text from a run or its data made inert in Markdown: no raw HTML, no table breaks."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("\n", " ")


def code_span(value) -> str:
    """An inline Markdown code span holding `value` as it is: fenced by more backticks than any run
    inside it, padded where it starts or ends with one (CommonMark's rule), on one line."""
    text = str(value).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"
