"""Every run leaves a page (`index.html`) and a model card (`README.md`) in its folder, and
`report.py --html` writes `Logs/index.html` across runs. These tests read the files as a browser
or the hub would: the numbers on them must be the numbers of results.json, and nothing that comes
from the data may reach the page unescaped. (`test_browser.py` opens the same pages in Chromium.)"""

from __future__ import annotations

import json
import posixpath
import re
import shutil
import subprocess
from html import escape as escape_html
from html import unescape as unescape_html
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pandas as pd
import pytest
import yaml
from conftest import fusion_run
from helpers import HOSTILE_FILE, HOSTILE_FOLDERS, HOSTILE_LABELS, write_multilabel_task, write_task

from fec.cli import report as report_script
from fec.cli import tfidf as tfidf_script
from fec.runs.escape import code_span, markdown_cell, markdown_text, shell_word, url_path, yaml_front_matter
from fec.runs.formatting import mean_std_cell
from fec.runs.summary import label_order


class Cells(HTMLParser):
    """Text of every element with an id or a data-metric attribute, and every link."""

    def __init__(self):
        super().__init__()
        self.stack: list[str | None] = []
        self.text: dict[str, str] = {}
        self.links: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag == "table" and "id" in attrs:
            self._table = attrs["id"]
            self.tables[self._table] = []
        if self._table and tag == "tr":
            self._row = []
        if self._row is not None and tag in ("td", "th"):
            self._cell = []
        key = attrs.get("data-metric")
        self.stack.append(key)
        if key:
            self.text[key] = ""

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        if tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None

    def handle_data(self, data):
        for key in filter(None, self.stack):
            self.text[key] += data
        if self._cell is not None:
            self._cell.append(data)


def parse(path: Path) -> Cells:
    cells = Cells()
    cells.feed(path.read_text(encoding="utf-8"))
    return cells


def front_matter(card: Path) -> dict:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_a_fusion_run_leaves_its_page_card_and_predictions(paged_logs):
    run_dir = fusion_run(paged_logs)
    for name in ("index.html", "README.md", "predictions.csv", "curves.png", "confusion.png"):
        assert (run_dir / name).is_file(), name
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert list(predictions.columns[:5]) == ["row", "text", "gold", "predicted", "correct"]
    probabilities = predictions[[c for c in predictions.columns if c.startswith("p:")]].to_numpy()
    assert probabilities.shape[1] == 3
    assert abs(probabilities.sum(axis=1) - 1).max() < 1e-3  # softmax rows, rounded to 4 digits


def test_the_headline_and_seed_table_equal_results_json(paged_logs):
    run_dir = fusion_run(paged_logs)
    results = json.loads((run_dir / "results.json").read_text())
    page = parse(run_dir / "index.html")
    for key in ("acc", "wf1", "macro_f1"):
        assert mean_std_cell(results["summary"]["test"][key]) in page.text[key]
    header, *rows = page.tables["seed-table"]
    assert [int(row[0]) for row in rows] == [entry["seed"] for entry in results["seeds"]]
    column = header.index("test accuracy")
    assert [row[column] for row in rows] == [f"{entry['test']['acc']:.2f}" for entry in results["seeds"]]


def test_the_confusion_matrix_counts_the_predictions(paged_logs):
    run_dir = fusion_run(paged_logs)
    predictions = pd.read_csv(run_dir / "predictions.csv", keep_default_na=False)
    html = (run_dir / "index.html").read_text()
    for (gold, predicted), count in predictions.groupby(["gold", "predicted"]).size().items():
        total = int((predictions["gold"] == gold).sum())
        assert f'title="{gold} → {predicted}: {count} of {total}"' in html


def test_the_per_label_table_is_per_label_csv(paged_logs):
    run_dir = fusion_run(paged_logs)
    table = pd.read_csv(run_dir / "per_label.csv")
    header, *rows = parse(run_dir / "index.html").tables["label-table"]
    assert header[:4] == ["label", "precision", "recall", "F1"]
    assert [row[0] for row in rows] == table["label"].tolist()
    assert [row[3] for row in rows] == [f"{100 * f:.1f}" for f in table["f1"]]


def test_the_model_card_front_matter_is_yaml_with_the_run_metrics(paged_logs):
    run_dir = fusion_run(paged_logs)
    results = json.loads((run_dir / "results.json").read_text())
    matter = front_matter(run_dir / "README.md")
    assert matter["language"] == ["en"] and matter["pipeline_tag"] == "text-classification"
    # The tiny local models have no known license: `other`, with the name and link the hub asks for.
    assert matter["license"] == "other" and matter["license_name"] and matter["license_link"] == "README.md"
    (entry,) = matter["model-index"]
    (result,) = entry["results"]
    assert result["dataset"]["split"] == "test"
    values = {m["name"].split(" (")[0]: m["value"] for m in result["metrics"]}
    assert values["Accuracy"] == round(results["summary"]["test"]["acc"]["mean"], 2)
    assert values["Weighted F1"] == round(results["summary"]["test"]["wf1"]["mean"], 2)
    body = (run_dir / "README.md").read_text()
    for section in ("## Intended use", "## How to use", "## Training", "## Evaluation", "## Limitations"):
        assert section in body
    assert f'EmotionClassifier.load("{run_dir.as_posix()}")' in body


def test_a_tfidf_card_does_not_offer_a_model_it_does_not_keep(paged_logs):
    (tfidf_dir,) = [p for p in paged_logs.iterdir() if p.is_dir() and "tfidf" in p.name]
    body = (tfidf_dir / "README.md").read_text()
    assert "keeps no fitted model" in body and "EmotionClassifier.load" not in body


def test_text_in_the_model_card_cannot_break_out_of_its_code():
    from fec.runs.rendering import environment

    env = environment(autoescape=False)
    render = lambda source, value: env.from_string(source).render(value=value)  # noqa: E731
    assert render("{{ value | code }}", "a `b` c") == "``a `b` c``"
    assert render("{{ value | code }}", "`start") == "`` `start ``"
    assert render("{{ value | py }}", 'Logs/a "b"') == '"Logs/a \\"b\\""'
    assert render("{{ value | sh }}", "Logs/my run") == "'Logs/my run'"
    assert render("{{ value | md }}", "a|b <i>") == "a\\|b &lt;i&gt;"
    assert render("{{ value | md }}", "[x](javascript:alert(1)) `c` *em*") == "\\[x\\](javascript:alert(1)) \\`c\\` \\*em\\*"
    assert render("{{ value | cell }}", "") == "–"
    assert render("{{ value | url }}", "javascript:alert(1)/index.html") == "./javascript%3Aalert%281%29/index.html"


HOSTILE_TEXTS = [
    "[x](javascript:alert(1))",
    "![i](javascript:alert(1)) <a href=javascript:alert(1)>a</a>",
    "`code` *em* _u_ ~~s~~ a|b \\| c",
    "<script>alert(1)</script> &amp; &#60;",
    "# heading",
    "1. item",
    "- item",
    "---",
    "0.1.0 + 2",
    "line\nbreak\u2028and <!-- comment",
]


@pytest.mark.parametrize("text", HOSTILE_TEXTS)
def test_markdown_escapes_render_as_the_text_itself(text):
    markdown_it = pytest.importorskip("markdown_it")
    render = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render
    shown = escape_html(" ".join(text.replace("\u2028", " ").split("\n")), quote=False)  # on one line
    assert render(markdown_text(text)) == f"<p>{shown}</p>\n"
    assert render(f"- {markdown_text(text)}") == f"<ul>\n<li>{shown}</li>\n</ul>\n"
    assert render(code_span(text)) == f"<p><code>{shown}</code></p>\n"
    table = render(f"| a | b |\n|---|---|\n| {markdown_cell(text)} | z |\n")
    assert re.findall("<td>(.*?)</td>", table) == [shown, "z"]


@pytest.mark.parametrize("name", ["javascript:alert(1)", "a b#c?d%41", "<i>&amp;", "%2e%2e", "x\ny"])
def test_a_link_to_any_folder_name_stays_a_file_link_to_that_folder(name):
    url = urljoin("file:///logs/index.html", url_path(f"{name}/index.html"))
    assert urlsplit(url).scheme == "file" and unquote(urlsplit(url).path) == posixpath.normpath(f"/logs/{name}/index.html")


@pytest.mark.parametrize("value", ["Logs/my run", "it's", "a\nb", "tab\there", "x\x7fy\x85z\u2028é", "$(touch x) `y`"])
def test_a_shell_word_is_the_value_itself_on_one_line(value):
    word = shell_word(value)
    assert "\n" not in word
    done = subprocess.run(["bash", "-c", f"printf %s {word}"], capture_output=True, text=True, check=True)
    assert done.stdout == value


def test_front_matter_keeps_every_value_on_its_own_line():
    matter = {"name": "fec-a\n---\nb", "tags": ["x: y", "# z", "\u2028"], "n": 1}
    text = yaml_front_matter(matter)
    lines = text.splitlines()
    assert lines[0] == lines[-1] == "---" and "---" not in lines[1:-1] and len(lines) == 8
    assert yaml.safe_load(text.split("---\n")[1]) == matter


def test_the_index_links_every_run_page_and_pools_their_rows(paged_logs):
    index = paged_logs / "index.html"
    page = parse(index)
    run_links = [link for link in page.links if link.endswith("index.html")]
    assert sorted(Path(link).parent.name for link in run_links) == sorted(p.name for p in paged_logs.iterdir() if p.is_dir())
    assert all((paged_logs / link).is_file() for link in run_links)
    header, *rows = page.tables["runs"]
    assert {row[header.index("method")] for row in rows} == {"fusion of frozen features", "TF-IDF baseline"}
    results = json.loads((fusion_run(paged_logs) / "results.json").read_text())
    fused = next(row for row in rows if row[header.index("method")].startswith("fusion"))
    assert fused[header.index("acc")] == mean_std_cell(results["summary"]["test"]["acc"])
    assert "data:image/png;base64," in index.read_text()  # the recipes chart, embedded


def test_user_text_and_label_names_are_escaped(tmp_path):
    data_dir = write_task(tmp_path / "data")
    folder = data_dir / "toy"
    (folder / "label2idx.txt").write_text("<script> 0\nsad 1\nangry 2\n")
    frame = pd.read_csv(folder / "test.csv")
    frame["text"] = frame["text"] + ' <img src=x onerror="alert(1)"> & so on'  # every example shown carries it
    frame.to_csv(folder / "test.csv", index=False)
    out = tmp_path / "Logs"
    assert tfidf_script.main(["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(out), "-C", "2"]) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    html = (run_dir / "index.html").read_text()
    assert "<script>" not in html.split("</script>", 1)[1]  # only the page's own script precedes
    assert "&lt;script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    card = (run_dir / "README.md").read_text()
    assert "<script>" not in card and "&lt;script&gt;" in card
    assert front_matter(run_dir / "README.md")["license"] == "mit"  # no backbone: the project's own license


def test_hostile_names_reach_the_model_card_as_escaped_text(hostile_logs):
    for name in HOSTILE_FOLDERS:
        card = (hostile_logs / name / "README.md").read_text(encoding="utf-8")
        assert f"Labels: {', '.join(map(markdown_text, HOSTILE_LABELS))}." in card
        assert f"\n# toy emotion classifier: TF-IDF baseline ({code_span(name)})\n" in card
        assert "<img" not in card and "`code`" not in card and "*em*" not in card
        assert front_matter(hostile_logs / name / "README.md")["model-index"][0]["name"] == f"fec-{name}"


def test_hostile_label_names_render_from_the_card_as_plain_text(hostile_logs):
    markdown_it = pytest.importorskip("markdown_it")
    card = (hostile_logs / HOSTILE_FOLDERS[0] / "README.md").read_text(encoding="utf-8")
    body = card.split("---\n", 2)[2]
    html = markdown_it.MarkdownIt("commonmark").enable(["table", "strikethrough"]).render(body)
    assert "<img" not in html and "<em>" not in html and 'href="javascript' not in html
    (labels,) = re.findall("<p>(Labels: .*?)</p>", html)
    assert "<" not in labels and unescape_html(labels) == f"Labels: {', '.join(HOSTILE_LABELS)}."


def test_hostile_names_reach_the_run_pages_and_index_as_text_and_file_links(hostile_logs):
    for name in HOSTILE_FOLDERS:
        run_dir = hostile_logs / name
        page = parse(run_dir / "index.html")
        assert sorted(row[0] for row in page.tables["label-table"][1:]) == sorted(HOSTILE_LABELS)
        assert "<img src=x" not in (run_dir / "index.html").read_text(encoding="utf-8")
        assert (url_path(HOSTILE_FILE) in page.links) == (name == HOSTILE_FOLDERS[0])
        for link in page.links:  # a section of the page, or a file of the run folder
            assert link.startswith(("#", "./")) or link == "README.md", link
            assert urlsplit(link).fragment or (run_dir / unquote(urlsplit(link).path)).exists(), link
    index = parse(hostile_logs / "index.html")
    assert sorted(index.links) == sorted(url_path(f"{name}/index.html") for name in HOSTILE_FOLDERS)
    assert all((hostile_logs / unquote(link)).is_file() for link in index.links)


def test_a_multilabel_run_shows_its_thresholds_beside_f1_at_half(tmp_path):
    data_dir = write_multilabel_task(tmp_path / "data", rows={"train": 90, "valid": 40, "test": 40})
    out = tmp_path / "Logs"
    argv = ["-dataset", "ml", "-data_dir", str(data_dir), "-out", str(out), "-cv", "3", "-C_grid", "1", "8"]
    assert tfidf_script.main(argv) == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    header, *rows = parse(run_dir / "index.html").tables["threshold-table"]
    assert header == ["label", "threshold", "F1 at it", "F1 at 0.5"]
    per_label = pd.read_csv(run_dir / "per_label.csv")
    assert [row[0] for row in rows] == per_label["label"].tolist()
    assert [row[1] for row in rows] == [f"{t:.2f}" for t in per_label["threshold"]]
    assert all(re.fullmatch(r"\d+\.\d", row[3]) for row in rows)
    metrics = {m["name"].split(" (")[0] for m in front_matter(run_dir / "README.md")["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"Macro F1", "Micro F1"}


@pytest.fixture
def fusion_run_copy(paged_logs, tmp_path) -> Path:
    """A writable copy of the `paged_logs` fusion run, for tests that change its files."""
    run_dir = tmp_path / fusion_run(paged_logs).name
    shutil.copytree(fusion_run(paged_logs), run_dir)
    return run_dir


def test_report_html_rewrites_one_run_page(fusion_run_copy):
    run_dir = fusion_run_copy
    (run_dir / "index.html").unlink()
    (run_dir / "README.md").unlink()
    assert report_script.main(["--html", str(run_dir)]) == 0
    assert (run_dir / "index.html").is_file() and (run_dir / "README.md").is_file()


def test_a_run_page_needs_no_cli_and_a_run_from_before_option_defaults_gets_todays_from_report_py(fusion_run_copy):
    from fec.core.errors import RunFileError
    from fec.runs.page import write_run_page

    run_dir = fusion_run_copy
    write_run_page(run_dir)  # the run's own config.json holds its options' defaults
    assert "; compat `corrected`" in (run_dir / "README.md").read_text(encoding="utf-8")
    config = json.loads((run_dir / "config.json").read_text())
    del config["compat"], config["recipe_file"], config["option_defaults"]
    config |= {"recipe": "recipe:best"}  # how a run of a recipe file was filed before `compat` and `recipe_file`
    config["args"]["recipe"] = "recipes/best.json"
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunFileError, match="config.json: no `option_defaults`"):
        write_run_page(run_dir)
    assert report_script.main(["--html", str(run_dir)]) == 0
    card = (run_dir / "README.md").read_text(encoding="utf-8")
    assert "; compat `corrected`" in card and "recipe file `recipes/best.json`" in card
    assert "recipe file <code>recipes/best.json</code>" in (run_dir / "index.html").read_text(encoding="utf-8")


def test_an_index_of_one_task_leaves_the_index_of_every_run_alone(paged_logs, tmp_path):
    logs = tmp_path / "Logs"
    shutil.copytree(paged_logs, logs)
    before = (logs / "index.html").read_text(encoding="utf-8")
    assert report_script.main(["--html", str(logs), "--task", "toy"]) == 0
    assert (logs / "index.html").read_text(encoding="utf-8") == before
    assert len(parse(logs / "index_toy.html").tables["runs"]) == 3  # the header and both runs


def test_report_html_on_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert report_script.main(["--html", str(tmp_path / "empty")]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_a_predictions_file_with_labels_the_run_does_not_have_is_left_out_of_the_page(fusion_run_copy):
    run_dir = fusion_run_copy
    table = pd.read_csv(run_dir / "predictions.csv")
    table.loc[0, "predicted"] = "not-a-label"
    table.to_csv(run_dir / "predictions.csv", index=False)
    assert report_script.main(["--html", str(run_dir)]) == 0
    page = (run_dir / "index.html").read_text(encoding="utf-8")
    assert "not-a-label" not in page and 'src="confusion.png"' in page


def test_confusion_labels_follow_the_label_tree(tmp_path):
    tree = tmp_path / "label_tree.tsv"
    tree.write_text("positive\troot\nnegative\troot\nsad\tnegative\njoyful\tpositive\nangry\tnegative\n")
    names = ["sad", "surprised", "joyful", "angry"]
    # Depth first from root: positive's joyful, then negative's sad and angry; labels outside the tree last.
    assert [names[i] for i in label_order(names, tree)] == ["joyful", "sad", "angry", "surprised"]
    assert label_order(names, tmp_path / "missing.tsv") == [0, 1, 2, 3]


def test_chart_rows_are_named_by_the_options_that_set_them_apart():
    from fec.runs.index import chart_labels, option_groups

    command = "python main.py -dataset ED -lr 0.00025 -features llama:mean:5 bert:first:-1 -layers -1 -4"
    assert option_groups(command, "ED") == ["-lr 0.00025", "-features llama:mean:5 bert:first:-1", "-layers -1 -4"]
    fusion = {"task": "ED", "method": "fusion of frozen features"}
    views = [
        fusion | {"number": 1, "command": "python main.py -dataset ED -lr 0.1"},
        fusion | {"number": 2, "command": "python main.py -dataset ED -lr 0.1 -sigma 1"},
        {"number": 3, "task": "ED", "method": "TF-IDF baseline", "command": "python baselines/tfidf.py -dataset ED"},
    ]
    assert chart_labels(views) == ["#1 fusion", "#2 fusion -sigma 1", "#3 TF-IDF"]
