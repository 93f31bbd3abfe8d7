"""The Jinja2 templates under fec/runs/templates and the filters the run page, the index page and the
model card share: numbers to two decimals, mean±std cells, metric names, and the escapes of
`fec.runs.escape` for text from a run or its data.

    environment().get_template("run.html.j2").render(...)   # HTML: autoescaped
    environment(autoescape=False).get_template("model_card.md.j2")   # Markdown: the filters escape

In the model card, text from the run goes through `md` (prose), `cell` (a table cell), `code` (an
inline code span), `py` (a Python string literal) or `sh` (one shell word); in the HTML pages, a
link or image to a file named by the run goes through `url` (a relative URL).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from fec.runs.escape import code_span, markdown_cell, markdown_text, python_string, shell_word, url_path
from fec.runs.formatting import mean_std_cell

TEMPLATES = Path(__file__).parent / "templates"
METRIC_NAMES = {"acc": "accuracy", "wf1": "weighted F1", "macro_f1": "macro-F1", "micro_f1": "micro-F1", "loss": "loss"}


def environment(autoescape: bool = True) -> Environment:
    """The templates under fec/runs/templates, with the number and escaping filters every page uses."""
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
    env.filters["cell"] = markdown_cell
    env.filters["code"] = code_span
    env.filters["py"] = python_string
    env.filters["sh"] = shell_word
    env.filters["url"] = url_path
    env.globals["metric_name"] = lambda key: METRIC_NAMES.get(key, key)
    return env
