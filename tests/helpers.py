"""What the tests build on: a small learnable labelled task on disk, tiny real transformers
models, the extraction of all three slots, and the run folders a trainer leaves.

Nothing here touches the network. The models are real `LlamaForCausalLM`, `BertModel` and
`RobertaModel` instances built from small configs (different hidden sizes on purpose, so no
size can be hard-coded), each saved with `save_pretrained` next to a word-level tokenizer built
with the `tokenizers` library.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pandas as pd
import torch

LABELS = ["joyful", "sad", "angry"]
CUES = {
    "joyful": ["happy", "glad", "delighted", "smiling", "celebrate"],
    "sad": ["sad", "crying", "lonely", "miss", "tears"],
    "angry": ["angry", "furious", "shouted", "hate", "rage"],
}
FILLER = "i was at home today with my friend and the dog when it happened so we talked about it later".split()
SPLIT_ROWS = {"train": 90, "valid": 30, "test": 30}
# Multi-label column name -> cue words (the tiny tokenizers know only the cues and FILLER).
ML_CUES = {"anger": CUES["angry"], "joy": CUES["joyful"], "sadness": CUES["sad"]}
ML_LABELS = list(ML_CUES)
TINY_HIDDEN = {"llama": 32, "bert": 24, "roberta": 20, "e5": 16, "qwen": 24}  # e5, qwen: slots of the user's


def make_text(rng: random.Random, label: str) -> str:
    words = rng.sample(FILLER, rng.randint(3, 12)) + rng.sample(CUES[label], 2)
    rng.shuffle(words)
    return " ".join(words)


def write_task(root: Path, task: str = "toy", rows: dict[str, int] = SPLIT_ROWS, seed: int = 0) -> Path:
    """`root/task/{train,valid,test}.csv` + `label2idx.txt`; label cues make the task learnable."""
    rng = random.Random(seed)
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "label2idx.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(LABELS)) + "\n \n")
    for mode, count in rows.items():
        labels = [i % len(LABELS) for i in range(count)]
        rng.shuffle(labels)
        texts = [make_text(rng, LABELS[y]) for y in labels]
        pd.DataFrame({"text": texts, "aug_text": texts, "label": labels}).to_csv(folder / f"{mode}.csv", index=False)
    return root


def write_multilabel_task(root: Path, task: str = "ml", rows: dict[str, int] | None = None, seed: int = 0) -> Path:
    """`root/task/{mode}.csv` as `id,text,anger,joy,sadness`: each label on with probability 0.4
    (so some rows are all-zero, "neutral"), two cue words per active label among filler words."""
    rng = random.Random(seed)
    folder = root / task
    folder.mkdir(parents=True, exist_ok=True)
    for mode, count in (rows or {"train": 120, "valid": 40}).items():
        records = []
        for i in range(count):
            active = [name for name in ML_LABELS if rng.random() < 0.4]
            words = rng.sample(FILLER, rng.randint(3, 10))
            for name in active:
                words += rng.sample(ML_CUES[name], 2)
            rng.shuffle(words)
            records.append({"id": f"{mode}_{i}", "text": " ".join(words), **{n: int(n in active) for n in ML_LABELS}})
        pd.DataFrame(records).to_csv(folder / f"{mode}.csv", index=False)
    return root


def vocabulary() -> list[str]:
    words = set(FILLER)
    for cue in CUES.values():
        words.update(cue)
    return sorted(words)


def build_tokenizer(specials: list[str], template: str, **special_kwargs):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(specials + vocabulary())}
    unk = special_kwargs["unk_token"]
    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    used = [tok for tok in specials if tok in template]
    backend.post_processor = processors.TemplateProcessing(single=template, special_tokens=[(t, vocab[t]) for t in used])
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special_kwargs), len(vocab)


def save_tiny_llama(folder: Path, hidden: int = TINY_HIDDEN["llama"], layers: int = 6) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    # Like LLaMA: a BOS token, no pad token.
    tok, vocab = build_tokenizer(["<unk>", "<s>", "</s>"], "<s> $A", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path, pooler: bool = True, hidden: int = TINY_HIDDEN["bert"]) -> Path:
    from transformers import BertConfig, BertModel

    tok, vocab = build_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        "[CLS] $A [SEP]",
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    torch.manual_seed(1)
    BertModel(config, add_pooling_layer=pooler).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_roberta(folder: Path) -> Path:
    from transformers import RobertaConfig, RobertaModel

    tok, vocab = build_tokenizer(
        ["<s>", "<pad>", "</s>", "<unk>"],
        "<s> $A </s>",
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    config = RobertaConfig(
        vocab_size=vocab,
        hidden_size=TINY_HIDDEN["roberta"],
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=260,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(2)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def extract_argv(model: Path, data_dir: Path, dataset_dir: Path, mode: str = "all", *extra: str, task: str = "toy") -> list[str]:
    """An extraction script's command line for `task` on the CPU, in float32 (the same numbers on
    every CPU: `auto` would take bfloat16 on one with bf16 matrix units)."""
    return ["-task", task, "-mode", mode, "-device", "cpu", "-dtype", "float32", "-model", str(model),
            "-data_dir", str(data_dir), "-dataset_dir", str(dataset_dir), *extra]  # fmt: skip


def extract_all(data_dir: Path, dataset_dir: Path, models: dict[str, Path], task: str = "toy", extra: list[str] = ()) -> None:
    """Run the three extraction scripts' main() for every split, as a user would."""
    from fec.cli.extract import main

    for slot in ("llama", "bert", "roberta"):
        assert main(slot, extract_argv(models[slot], data_dir, dataset_dir, "all", *extra, task=task)) == 0


def extract_more_sources(data_dir: Path, dataset_dir: Path, models: dict[str, Path], task: str = "toy") -> None:
    """Two slots of the user's beside the published three, as a user extracts them: `e5`, an encoder
    (every layer, mean pooling) with bert_rep_extract.py, and `qwen`, a decoder (every layer, last-token
    pooling) with llama2_rep_extract.py."""
    from fec.cli.extract import main

    e5 = ["--slot", "e5", "--layers", "all", "--pooling", "mean"]
    assert main("bert", extract_argv(models["e5"], data_dir, dataset_dir, "all", *e5, task=task)) == 0
    qwen = ["--slot", "qwen", "--layers", "all", "--pooling", "last"]
    assert main("llama", extract_argv(models["qwen"], data_dir, dataset_dir, "all", *qwen, task=task)) == 0


def only_run(out: Path) -> Path:
    """The one run folder a single trainer call left in `out`."""
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def newest_run(out: Path) -> Path:
    """The run folder most recently written in `out` (several runs share it)."""
    return max((p for p in out.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime_ns)


# Label names from the data, and run folders renamed by hand, that would run a script, link
# elsewhere or break the card's Markdown if they reached a page or card as they are. The scripts
# set window.__pwned, which the browser test reads; `<!--` comments out the rest of a link.
HOSTILE_LABELS = ["[x](javascript:alert(1))", "`code` *em* a|b", "<img src=x onerror=window.__pwned=1>"]
HOSTILE_FOLDERS = ["javascript:window.__pwned=1<!--", "a b#c?d%41<i>"]
HOSTILE_FILE = "javascript:window.__pwned=2<!--"


def write_hostile_logs(root: Path) -> Path:
    """`root/Logs` with two TF-IDF runs (seeds 0 and 1: one index row) of a task whose label names
    and texts are hostile, each run folder renamed by hand to one of HOSTILE_FOLDERS, a file of a
    hostile name added to the first; their pages, cards and the index written by `report.py --html`."""
    from fec.cli import report as report_script
    from fec.cli import tfidf as tfidf_script

    data_dir = write_task(root / "data")
    folder = data_dir / "toy"
    (folder / "label2idx.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(HOSTILE_LABELS)))
    frame = pd.read_csv(folder / "test.csv")
    frame["text"] = frame["text"] + " " + HOSTILE_LABELS[-1]
    frame.to_csv(folder / "test.csv", index=False)
    logs = root / "Logs"
    runs = []
    for seed, name in enumerate(HOSTILE_FOLDERS):
        argv = ["-dataset", "toy", "-data_dir", str(data_dir), "-out", str(root / "out"), "-C", "2", "-seeds", str(seed)]
        assert tfidf_script.main(argv) == 0
        (trained,) = [p for p in (root / "out").iterdir() if p.is_dir()]
        runs.append(str(shutil.move(trained, logs / name)))
    (logs / HOSTILE_FOLDERS[0] / HOSTILE_FILE).write_text("notes\n")
    assert report_script.main(["--html", *runs]) == 0
    assert report_script.main(["--html", str(logs)]) == 0
    return logs
