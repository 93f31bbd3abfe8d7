"""fec: fine-grained emotion classification from frozen language-model features.

A reproduction of LLM-FusionClassifier, taken further. Features of frozen models are extracted
once and fused by a co-occurrence-pooling classifier; a search finds the best recipe for a task.
Every job is a function here, the command line a thin face over them (docs/api.md):

    import fec
    fec.prepare_data("mine.csv", task="mine")            # or a pandas DataFrame, or a datasets.Dataset
    fec.extract("mine", "bert", model="offline:all-minilm-l6-v2", layers="all", pooling=["mean"])
    run = fec.train("mine", runs=3)                       # -> fec.Run: .path, .metrics, .classifier()
    found = fec.tune("mine", extract=True, preset="offline", budget_minutes=20)   # -> fec.TuneResult
    fec.probe("mine")                                     # -> DataFrame, one row per view
    fec.report("mine")                                    # -> DataFrame, one row per recipe
    fec.EmotionClassifier.load(run.path).predict(["I finally got the job!"])

Names are loaded when first used, so `import fec` does not pull in torch and transformers.
"""

from fec.core.provenance import VERSION

__version__ = VERSION

# public name -> the module that defines it
PUBLIC = {
    "prepare_data": "fec.api.prepare_data",
    "PrepareSettings": "fec.api.prepare_data",
    "extract": "fec.api.extract",
    "ExtractSettings": "fec.api.extract",
    "train": "fec.api.train",
    "TrainSettings": "fec.api.train",
    "finetune": "fec.api.finetune",
    "FinetuneSettings": "fec.api.finetune",
    "tfidf": "fec.api.tfidf",
    "TfidfSettings": "fec.api.tfidf",
    "tune": "fec.api.tune",
    "TuneSettings": "fec.api.tune",
    "TuneResult": "fec.api.tune",
    "probe": "fec.api.probe",
    "ProbeSettings": "fec.api.probe",
    "report": "fec.api.report",
    "ReportSettings": "fec.api.report",
    "Run": "fec.api.run",
    "EmotionClassifier": "fec.inference.classifier",
    "DownstreamModel": "fec.classify.fusion",
    "FecError": "fec.core.errors",
    "SettingError": "fec.core.errors",
    "UsageError": "fec.core.errors",
    "SearchInterrupted": "fec.api.tune",
}
__all__ = ["__version__", *PUBLIC]


def __getattr__(name):
    if name in PUBLIC:
        import importlib

        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'fec' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
