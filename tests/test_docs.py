"""The documentation that is generated or linked stays true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from fec.cli.option_docs import render

REPO = Path(__file__).resolve().parents[1]


def test_the_options_reference_is_what_the_parsers_print():
    assert (REPO / "docs" / "options.md").read_text(encoding="utf-8") == render(), (
        "docs/options.md is stale: python -m fec.cli.option_docs > docs/options.md"
    )


def test_the_readme_is_an_entry_point_whose_links_exist():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 170
    for target in re.findall(r"\]\(([^)#]+)", readme):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target
    for doc in (REPO / "docs").glob("*.md"):
        assert "shared/design.md" not in doc.read_text(encoding="utf-8"), doc


def test_the_demo_and_the_recipe_files_leave_the_dtype_to_the_machine():
    """bfloat16 is several times faster than float32 on a CPU with bf16 matrix units and tens of times
    slower on one without; `--dtype auto` (the default) knows which, a hard-coded bfloat16 does not."""
    forced = re.compile(r"-dtype[ =]+['\"]?bfloat16")
    for path in [REPO / "demo.sh", *sorted((REPO / "recipes").glob("*.json"))]:
        assert not forced.search(path.read_text(encoding="utf-8")), f"{path.name} forces --dtype bfloat16"


def test_the_glossary_defines_each_term_once():
    """One word per meaning: docs/architecture.md's glossary lists every term on one line."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    glossary = text[text.index("## Glossary") :]
    terms = [row.split("|")[1].strip() for row in glossary.splitlines() if row.startswith("| ") and not row.startswith("| term")]
    assert len(terms) > 30 and sorted(terms) == sorted(set(terms))
