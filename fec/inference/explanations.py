"""Token attributions for one prediction: SHAP's text explainer over the whole pipeline
(text -> three backbones -> fusion -> probabilities).

    from fec import EmotionClassifier
    from fec.inference.explanations import explain_text
    clf = EmotionClassifier.load("Logs/ED_20261122-101500")
    result = explain_text(clf, "I was so scared walking home alone", out_dir="explanations", max_evals=200)

Words are the features (SHAP's regex text masker, masked words replaced by "..."). SHAP's
partition explainer calls the pipeline on about `max_evals` masked variants of the text, so the
cost is max_evals texts through every backbone: about 10-20 s per sentence for max_evals=200 on
2 CPU cores with the offline stand-ins.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fec.core.errors import SettingError
from fec.core.files import atomic_write, atomic_write_text
from fec.core.paths import inside, unique_slug

log = logging.getLogger(__name__)

WORD_SPLIT = r"\W+"


@dataclass
class Explanation:
    text: str
    label: str
    prob: float
    tokens: list[str]
    values: np.ndarray  # SHAP value of each token for `label`
    html: Path
    png: Path


def bar_chart(path: Path, tokens: list[str], values: np.ndarray, label: str, top: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-np.abs(values))[:top][::-1]
    names = [tokens[i].strip() or repr(tokens[i]) for i in order]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(order) + 1.5))
    ax.barh(range(len(order)), values[order], color=["#d62728" if v > 0 else "#1f77b4" for v in values[order]])
    ax.set_yticks(range(len(order)), names)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set(xlabel=f"SHAP value for '{label}' (probability)", title=f"Top tokens for '{label}'")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def explain_text(
    clf, text: str, out_dir: Path | str, label: str | None = None, max_evals: int = 200, batch_size: int = 64
) -> Explanation:
    """Attribute `clf`'s probability for `label` (default: the predicted label) to the words of
    `text`; write `<slug>.html` (SHAP's text plot) and `<slug>.png` (top words) into `out_dir`."""
    import shap

    names = clf.label_names
    probs = clf.predict_proba([text])[0]
    if label is None:
        index = int(np.argmax(probs))
    elif label in names:
        index = names.index(label)
    else:
        raise SettingError("label", label, f"not a label of this run ({', '.join(names)})")
    masker = shap.maskers.Text(WORD_SPLIT)
    # SHAP writes the output names into its page as they are: escape them (labels come from data).
    explainer = shap.Explainer(
        lambda texts: clf.predict_proba(list(texts), batch_size), masker, output_names=[html.escape(name) for name in names]
    )
    values = explainer([text], max_evals=max_evals, batch_size=batch_size, silent=True)
    tokens = list(values.data[0])
    token_values = np.asarray(values.values[0][:, index], dtype=float)
    # File names come from the data only through `slug`; the page escapes the text and the label.
    stem = f"{unique_slug(text)}.{unique_slug(names[index], width=30)}"
    html_path, png_path = inside(out_dir, f"{stem}.html"), inside(out_dir, f"{stem}.png")
    plot = shap.plots.text(values[0, :, index], display=False)
    label_html = html.escape(names[index])
    page = (
        f"<html><head><meta charset='utf-8'><title>{label_html}</title></head><body>"
        f"<h3>'{label_html}' (p = {probs[index]:.3f}) for: {html.escape(text)}</h3>{plot}</body></html>"
    )
    atomic_write_text(html_path, page)
    bar_chart(png_path, tokens, token_values, names[index])
    log.info("explanation for %r (%s, p=%.3f): %s, %s", text, names[index], probs[index], html_path, png_path)
    return Explanation(text, names[index], float(probs[index]), tokens, token_values, html_path, png_path)
