"""fec: fine-grained emotion classification from frozen language-model features.

A reproduction of LLM-FusionClassifier: LLaMA/BERT/RoBERTa features are extracted once
(`llama2_rep_extract.py`, `bert_rep_extract.py`, `roberta_rep_extract.py`) and fused by a
co-occurrence-pooling classifier (`main.py`). This package is the shared core behind those
scripts.
"""

from fec.core.provenance import VERSION

__version__ = VERSION


def __getattr__(name):
    # Lazy, so `import fec` (e.g. by prepare_data.py) does not pull in torch and transformers.
    if name == "EmotionClassifier":
        from fec.inference.classifier import EmotionClassifier

        return EmotionClassifier
    if name == "DownstreamModel":
        from fec.classify.fusion import DownstreamModel

        return DownstreamModel
    raise AttributeError(f"module 'fec' has no attribute {name!r}")
