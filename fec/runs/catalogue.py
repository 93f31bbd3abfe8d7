"""What the run page and the model card say about a task and a backbone beyond what a run records:
the paper's numbers, where the data comes from and what its authors say of it, and each
backbone's hub id and license. Tasks and models not listed here get neutral defaults.

    from fec.runs.catalogue import PAPER_RESULTS, dataset_info, backbone_info
    PAPER_RESULTS["ED"]                     # {"acc": 60.44, "wf1": 59.80}
    backbone_info("offline:smollm2-135m")   # hub id HuggingFaceTB/SmolLM2-135M-Instruct, apache-2.0
"""

from __future__ import annotations

from dataclasses import dataclass

from fec.features.standins import PREFIX, STANDINS

# The paper's test metrics (Llama-2-7b-chat + BERT-large + RoBERTa-large, mean of 5 runs).
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "ED": {"acc": 60.44, "wf1": 59.80},
    "go_emotion": {"acc": 58.13, "wf1": 57.54},
}
PAPER_RESULTS_CITATION = "LLM-FusionClassifier paper: Llama-2-7b-chat + BERT-large + RoBERTa-large, mean of 5 runs"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    hub_id: str | None
    license: str | None
    paper: str | None
    caveats: tuple[str, ...]


DATASETS: dict[str, DatasetInfo] = {
    "ED": DatasetInfo(
        "Empathetic Dialogues",
        "facebook/empathetic_dialogues",
        "cc-by-nc-4.0",
        "Rashkin et al., Towards Empathetic Open-domain Conversation Models (ACL 2019)",
        (
            "English conversations written by crowd workers on Amazon Mechanical Turk, who were given an emotion "
            "label and asked to describe a situation in which they felt it; the label is that prompt, not a "
            "reader's judgement of the text.",
            "The 32 labels overlap in meaning (afraid / terrified / anxious / apprehensive), so many errors fall "
            "between neighbouring labels (the run page lists the most confused pairs).",
        ),
    ),
    "go_emotion": DatasetInfo(
        "GoEmotions (single-label rows, 27 emotions)",
        "google-research-datasets/go_emotions",
        "apache-2.0",
        "Demszky et al., GoEmotions: A Dataset of Fine-Grained Emotions (ACL 2020)",
        (
            "English Reddit comments; the authors note that Reddit's users skew young and male, and that the "
            "comments carry the biases and offensive language of the platform.",
            "Labels are the emotions raters perceived in a comment, read without its thread; raters were native "
            "English speakers from India, so culture-specific readings may differ.",
            "This task keeps only the comments with a single label, which favours the clearer cases.",
        ),
    ),
    "semeval_eng": DatasetInfo(
        "SemEval 2025 Task 11 (BRIGHTER), English, track A",
        "brighter-dataset/BRIGHTER-emotion-categories",
        "cc-by-4.0",
        "Muhammad et al., BRIGHTER: BRIdging the Gap in Human-Annotated Textual Emotion Recognition (2025)",
        (
            "Multi-label: the emotions annotators perceived the writer to express; the organisers stress that "
            "emotion perception is subjective and varies between annotators and cultures.",
            "The test split is held back by the organisers; scores here are on valid or cross-validated on train.",
        ),
    ),
}


def dataset_info(task: str) -> DatasetInfo:
    return DATASETS.get(task, DatasetInfo(task, None, None, None, ()))


@dataclass(frozen=True)
class BackboneInfo:
    spec: str  # as the run names it: a hub id, a local path or `offline:NAME`
    hub_id: str | None
    license: str | None
    standin: bool


# Stand-ins (fec.features.standins) are copies of hub models; each names its own.
STANDIN_HUB_IDS = {PREFIX + name: standin.hub_id for name, standin in STANDINS.items()}
LICENSES = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0",
    "sentence-transformers/all-MiniLM-L6-v2": "apache-2.0",
    "sentence-transformers/all-mpnet-base-v2": "apache-2.0",
    "meta-llama/Llama-2-7b-chat-hf": "llama2",
    "bert-large-uncased": "apache-2.0",
    "google-bert/bert-large-uncased": "apache-2.0",
    "roberta-large": "mit",
    "FacebookAI/roberta-large": "mit",
}


def backbone_info(spec: str) -> BackboneInfo:
    hub_id = STANDIN_HUB_IDS.get(spec, spec if spec in LICENSES else None)
    return BackboneInfo(spec, hub_id, LICENSES.get(hub_id or ""), spec in STANDIN_HUB_IDS)
