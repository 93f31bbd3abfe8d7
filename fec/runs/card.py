"""The model card of one run, `Logs/RUN/README.md`, in the Hugging Face layout: YAML front matter
(language, license, tags, datasets, metrics, base models and a `model-index` with the results),
then intended use, how to load and predict, the training recipe, evaluation and limitations.
Written beside the run page (`fec.runs.page`) by every trainer's finish step, and again by:

    python report.py --html Logs/ED_20261202-011000
"""

from __future__ import annotations

from fec.core.files import atomic_write_text
from fec.runs.escape import yaml_front_matter
from fec.runs.rendering import environment
from fec.runs.summary import METHOD_TAGS, RunSummary

CARD = "README.md"
# Our metric key -> the hub's metric type, its display name and the arguments that make it ours.
METRIC_TYPES = {
    "acc": ("accuracy", "Accuracy", {}),
    "wf1": ("f1", "Weighted F1", {"average": "weighted"}),
    "macro_f1": ("f1", "Macro F1", {"average": "macro"}),
    "micro_f1": ("f1", "Micro F1", {"average": "micro"}),
}


def card_license(summary: RunSummary) -> str:
    """One license id when every backbone shares it; `other` (each one named in the card) when they differ."""
    licenses = {b.info.license or "unknown" for b in summary.backbones}
    if not licenses:
        return "mit"  # TF-IDF: no backbone; the weights are this project's (MIT)
    return licenses.pop() if len(licenses) == 1 and "unknown" not in licenses else "other"


def model_index(summary: RunSummary) -> list[dict]:
    split = "test" if summary.split == "test" else "validation"
    metrics = []
    for key in summary.metrics:
        stats = summary.stats.get(key)
        if not stats or stats.get("mean") is None:
            continue
        metric_type, name, args = METRIC_TYPES[key]
        value = round(float(stats["mean"]), 2)
        entry = {"type": metric_type, "value": value, "name": f"{name} (mean of {len(summary.seeds)} seeds)"}
        metrics.append(entry | ({"args": args} if args else {}))
    dataset = {"name": summary.dataset.name, "type": summary.dataset.hub_id or summary.task, "split": split}
    name = "Multi-label emotion classification" if summary.multilabel else "Emotion classification"
    task = {"type": "text-classification", "name": name}
    return [{"name": f"fec-{summary.folder.name}", "results": [{"task": task, "dataset": dataset, "metrics": metrics}]}]


def front_matter(summary: RunSummary) -> dict:
    hub_ids = [b.info.hub_id for b in summary.backbones if b.info.hub_id]
    matter = {
        "language": ["en"],
        "license": card_license(summary),
        "library_name": "fec",
        "pipeline_tag": "text-classification",
        "tags": ["emotion-classification", "text-classification", "fec", METHOD_TAGS.get(summary.script, "other")]
        + (["multi-label"] if summary.multilabel else []),
        "datasets": [summary.dataset.hub_id] if summary.dataset.hub_id else [],
        "metrics": sorted({METRIC_TYPES[key][0] for key in summary.metrics}),
        "model-index": model_index(summary),
    }
    if matter["license"] == "other":  # the hub asks for a name and a link; the card's table lists each backbone's
        matter |= {"license_name": "backbone-licenses", "license_link": "README.md"}
    if hub_ids:
        matter["base_model"] = hub_ids
    return matter


def render_model_card(summary: RunSummary) -> str:
    """The card's text: its front matter as YAML, then the Markdown body, every value from the run
    escaped for the place it lands in (`fec.runs.escape`)."""
    body = environment(autoescape=False).get_template("model_card.md.j2").render(s=summary, license=card_license(summary))
    return yaml_front_matter(front_matter(summary)) + "\n" + body


def write_model_card(summary: RunSummary) -> None:
    atomic_write_text(summary.folder / CARD, render_model_card(summary))
