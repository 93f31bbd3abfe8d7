"""fec: fine-grained emotion classification from frozen language-model features.

A reproduction of LLM-FusionClassifier: LLaMA/BERT/RoBERTa features are extracted once
(`llama2_rep_extract.py`, `bert_rep_extract.py`, `roberta_rep_extract.py`) and fused by a
co-occurrence-pooling classifier (`main.py`). This package is the shared core behind those
scripts.
"""

__version__ = "0.1.0"
