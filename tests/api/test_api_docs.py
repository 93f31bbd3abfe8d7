"""docs/api.md is run, block by block, as a notebook would run it: its Python code blocks are
executed in order in one namespace, in a fresh folder holding the `my_emotions.csv` it reads. The
one block that says which models to use and how long to search is replaced by tiny models and a
short budget; every other line runs as written, so the page cannot drift from the library."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pandas as pd
from helpers import LABELS, make_text

PAGE = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def code_blocks() -> list[str]:
    return BLOCK.findall(PAGE.read_text(encoding="utf-8"))


def write_my_emotions(path: Path, rows: int = 150) -> None:
    """A researcher's own file: a text column and an `emotion` column of label names."""
    rng = random.Random(0)
    labels = [LABELS[i % len(LABELS)] for i in range(rows)]
    pd.DataFrame({"text": [make_text(rng, label) for label in labels], "emotion": labels}).to_csv(path, index=False)


def test_the_api_page_runs_as_written(tmp_path, monkeypatch, tiny_models):
    blocks = code_blocks()
    (setting,) = [i for i, block in enumerate(blocks) if "MODELS = " in block]
    blocks[setting] = "import fec\n" + f"MODELS = { {slot: str(tiny_models[slot]) for slot in ('llama', 'bert', 'roberta')} }\n"
    blocks[setting] += "MINUTES = 0.2\n"
    write_my_emotions(tmp_path / "my_emotions.csv")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/api.md block {number + 1}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(f"docs/api.md, code block {number + 1} failed:\n{block}") from err
    found, run = namespace["found"], namespace["run"]
    assert found.run.path.is_dir() and run.path.is_dir() and run.path != found.run.path
    assert len(found.candidates) >= 1
    assert set(namespace["table"].columns) and len(namespace["views"]) > 0
    assert (tmp_path / "data" / "mine" / "train.csv").is_file()
