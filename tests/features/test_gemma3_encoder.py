"""A bidirectional Gemma3 encoder (EmbeddingGemma) read by fec the way its sentence-transformers
modules read it.

EmbeddingGemma-300M is a `Gemma3TextModel` with `use_bidirectional_attention: true`, published as a
sentence-transformers folder: Transformer -> Pooling (the mean over every token, <bos> and <eos>
included) -> Dense(768->3072) -> Dense(3072->768) -> Normalize. What this file proves:

- fec's `mean` pooling of the last hidden layer, extracted as a user would (`bert_rep_extract.py
  --slot NAME --model FOLDER --pooling mean ...`, right padding, batches by length, stored in
  bfloat16), is the folder's Pooling output, `SentenceTransformer(folder)` cut after its Pooling
  module, row for row (cosine >= 0.9999);
- the folder's own Dense and Normalize modules applied to fec's `mean` give the model's sentence
  embedding, `SentenceTransformer(folder).encode` (cosine >= 0.9999);
- the model fec loads attends both ways: the <bos> state (`first`) depends on the tokens after it,
  which a causal Gemma3 would never allow.

`test_tiny_gemma3_encoder_...` checks this on a tiny random Gemma3 encoder saved as such a folder
(offline, a few seconds). The `standins` test checks it on the real EmbeddingGemma-300M, skipped
unless it was fetched into fec's cache (it never downloads):

    python -m fec.features.standins --fetch embeddinggemma-300m     # once, ~1.2 GB
    pytest -m standins tests/features/test_gemma3_encoder.py        # about 20 s on one CPU thread
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import LABELS, build_tokenizer, extract_argv, write_task

from fec.cli.extract import main
from fec.features import standins
from fec.features.store import feature_path, load_features

pytest.importorskip("sentence_transformers", reason="needs sentence-transformers (requirements-bench.txt)")

MIN_COSINE = 0.9999
TINY_HIDDEN = 32
GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]  # Gemma's ids: pad 0, eos 1, bos 2, unk 3


def save_tiny_gemma3_encoder(folder: Path) -> Path:
    """A tiny EmbeddingGemma: a random bidirectional `Gemma3TextModel` (sliding and full attention
    layers, a window shorter than the texts) whose tokenizer adds <bos> and <eos>, saved as a
    sentence-transformers folder Transformer -> Pooling(mean) -> Dense -> Dense -> Normalize."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import Gemma3TextConfig, Gemma3TextModel

    tok, vocab = build_tokenizer(
        GEMMA_SPECIALS, "<bos> $A <eos>", unk_token="<unk>", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>"
    )
    config = Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=TINY_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        sliding_window=4,  # bidirectional: each token sees those fewer than 3 positions away
        max_position_embeddings=256,  # fec refuses a --max_len (200) past the positions
        use_bidirectional_attention=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    torch.manual_seed(3)
    backbone = folder / "backbone"
    Gemma3TextModel(config).save_pretrained(backbone)
    tok.save_pretrained(backbone)
    identity = torch.nn.Identity()
    modules = [
        models.Transformer(str(backbone)),
        models.Pooling(TINY_HIDDEN, pooling_mode="mean"),
        models.Dense(TINY_HIDDEN, 48, bias=False, activation_function=identity),
        models.Dense(48, TINY_HIDDEN, bias=False, activation_function=identity),
        models.Normalize(),
    ]
    out = folder / "st"
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def sentence_transformer_references(folder: Path, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list]:
    """(the folder's Pooling output, its full sentence embedding, its modules after the Pooling), for `texts`."""
    from sentence_transformers import SentenceTransformer

    full = SentenceTransformer(str(folder), device="cpu")
    assert [type(m).__name__ for m in full][:2] == ["Transformer", "Pooling"]
    assert next(full.parameters()).dtype == torch.float32
    assert full[0].auto_model.config.use_bidirectional_attention is True
    pooled_only = SentenceTransformer(modules=[full[0], full[1]], device="cpu")
    pooled = pooled_only.encode(texts, convert_to_tensor=True, batch_size=8)
    embedded = full.encode(texts, convert_to_tensor=True, batch_size=8)
    return pooled, embedded, list(full)[2:]


def apply_modules(modules: list, pooled: torch.Tensor) -> torch.Tensor:
    """The sentence-transformers modules after the Pooling (Dense, Dense, Normalize) applied to pooled vectors."""
    features = {"sentence_embedding": pooled.float()}
    with torch.no_grad():
        for module in modules:
            features = module(features)
    return features["sentence_embedding"]


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def assert_rows_match(ours: torch.Tensor, reference: torch.Tensor, what: str) -> float:
    """Every row's cosine >= MIN_COSINE; returns the smallest."""
    assert ours.shape == reference.shape, what
    cos = cosines(ours, reference)
    worst = float(cos.min())
    print(f"{what}: min cosine {worst:.7f} over {len(cos)} rows")
    assert worst >= MIN_COSINE, f"{what}: min cosine {worst:.7f} (row {int(cos.argmin())}), per row {cos.tolist()}"
    return worst


def split_texts(data_dir: Path, task: str, mode: str) -> list[str]:
    return pd.read_csv(data_dir / task / f"{mode}.csv")["text"].tolist()


# ---------------------------------------------------------------------------- a tiny Gemma3 encoder


def test_tiny_gemma3_encoder_mean_is_its_sentence_transformers_pooling(tmp_path):
    from transformers import AutoTokenizer

    folder = save_tiny_gemma3_encoder(tmp_path / "models")
    data_dir = write_task(tmp_path / "data", rows={"train": 14})
    texts = split_texts(data_dir, "toy", "train")
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(folder)(texts)["input_ids"]]
    assert len(set(lengths)) > 3 and min(lengths) > 4  # padding in every batch, texts longer than the window

    store = tmp_path / "dataset"
    extra = ["--slot", "gemma_enc", "--layers", "all", "--pooling", "mean", "first", "--batch_size", "4"]
    assert main("bert", extract_argv(folder, data_dir, store, "train", *extra)) == 0
    stored = load_features(feature_path(store, "toy", "gemma_enc-mean+first-all", "train"))
    assert stored.manifest["poolings"] == ["mean", "first"]
    assert stored.manifest["layer_indices"] == [0, 1, 2, 3]
    assert stored.manifest["model_class"] == "Gemma3TextModel" and stored.manifest["missing_weights"] == []
    assert stored.features.shape == (len(texts), 2, 4, TINY_HIDDEN)
    # Both ways: every row starts with <bos> at position 0, whose embedding is the same in every row;
    # its state after the layers differs from row to row only because it attends to the tokens after it.
    first = stored.features[:, 1].float()
    assert torch.equal(first[:, 0], first[:1, 0].expand_as(first[:, 0]))
    spread = (first[:, -1] - first[:1, -1]).norm(dim=-1).max() / first[0, -1].norm()
    assert spread > 0.05, f"the <bos> state does not depend on later tokens (spread {spread:.2e}): a causal model?"

    mean_last = stored.features[:, 0, -1].float()
    pooled, embedded, head = sentence_transformer_references(folder, texts)
    assert [type(m).__name__ for m in head] == ["Dense", "Dense", "Normalize"]
    assert_rows_match(mean_last, pooled, "tiny: fec mean vs Transformer+Pooling")
    assert_rows_match(apply_modules(head, mean_last), embedded, "tiny: fec mean + Dense, Dense, Normalize vs encode")


def test_the_bidirectional_check_would_catch_a_causal_gemma3(tmp_path):
    """The same weights loaded causally leave the <bos> state blind to later tokens, so the
    spread asserted above would be zero."""
    from transformers import AutoModel, AutoTokenizer

    folder = save_tiny_gemma3_encoder(tmp_path / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(["i was happy", "i was furious"], return_tensors="pt")
    states = {}
    for both_ways in (True, False):
        model = AutoModel.from_pretrained(folder, use_bidirectional_attention=both_ways).eval()
        assert model.config.use_bidirectional_attention is both_ways
        with torch.no_grad():
            states[both_ways] = model(**batch).last_hidden_state[:, 0]
    torch.testing.assert_close(states[False][0], states[False][1])
    assert (states[True][0] - states[True][1]).norm() > 0.05 * states[True][0].norm()


# ---------------------------------------------------------------------------- the real EmbeddingGemma-300M

EMBEDDINGGEMMA = "embeddinggemma-300m"
EMOTIONAL = [
    ("I got the job!", "joyful"),
    ("She hugged me at the airport after three years apart, and I could not stop smiling all the way home.", "joyful"),
    ("We finally paid off the house today.", "joyful"),
    ("My little brother passed his driving test on the first try, and the whole family went out for ice cream.", "joyful"),
    ("Best. Birthday. Ever.", "joyful"),
    ("The puppy we rescued last winter ran to the door to greet me.", "joyful"),
    ("My grandmother died last night.", "sad"),
    ("I keep setting two plates at dinner even though he moved out months ago, and the silence is unbearable.", "sad"),
    ("Nobody came to my exhibition opening.", "sad"),
    ("I miss the way our old street smelled in the rain.", "sad"),
    ("Lonely again this weekend.", "sad"),
    ("The landlord kept our whole deposit for a scratch that was already there when we moved in!", "angry"),
    ("Stop interrupting me.", "angry"),
    ("He lied to my face about the money, then blamed me in front of everyone at the meeting.", "angry"),
    ("Three hours on hold and they hung up on me.", "angry"),
    ("I am furious that the school never told us about the bullying.", "angry"),
]


def write_sentences_task(root: Path, task: str, rows: list[tuple[str, str]]) -> Path:
    """`root/task/train.csv` and `label2idx.txt` in write_task's format, from (text, label name) pairs."""
    folder = root / task
    folder.mkdir(parents=True)
    (folder / "label2idx.txt").write_text("".join(f"{name} {i}\n" for i, name in enumerate(LABELS)))
    texts = [text for text, _ in rows]
    labels = [LABELS.index(label) for _, label in rows]
    pd.DataFrame({"text": texts, "aug_text": texts, "label": labels}).to_csv(folder / "train.csv", index=False)
    return root


def fetched_standin(name: str) -> Path:
    """The fetched stand-in's folder in fec's cache, or a skip: this test never downloads it."""
    path = standins.fetched_dir(name)
    if path is None:
        pytest.skip(f"{name} is not built in fec's cache: python -m fec.features.standins --fetch {name}")
    return path


def extract_embeddinggemma(tmp_path: Path, dtype: str) -> tuple[Path, list[str], torch.Tensor]:
    """(the model's folder, the texts, fec's last-layer `mean` of each) for EMOTIONAL, extracted as a user would."""
    data_dir = write_sentences_task(tmp_path / "data", "emo", EMOTIONAL)
    store = tmp_path / "dataset"
    extra = ["--slot", "gemma_enc", "--layers", "-1", "--pooling", "mean", "-dtype", dtype]  # the last -dtype counts
    assert main("bert", extract_argv(f"offline:{EMBEDDINGGEMMA}", data_dir, store, "train", *extra, task="emo")) == 0
    stored = load_features(feature_path(store, "emo", "gemma_enc-mean-Lm1", "train"))
    assert stored.manifest["layer_indices"] == [24] and stored.manifest["poolings"] == ["mean"]
    assert stored.manifest["model_class"] == "Gemma3TextModel" and stored.manifest["dtype"] == dtype
    assert stored.manifest["missing_weights"] == []
    return Path(stored.manifest["model_path"]), split_texts(data_dir, "emo", "train"), stored.features[:, 0, 0].float()


@pytest.mark.standins
def test_real_embeddinggemma_mean_is_its_sentence_transformers_pooling(tmp_path, monkeypatch):
    path = fetched_standin(EMBEDDINGGEMMA)

    def no_download(*args, **kwargs):
        pytest.fail(f"the test would have fetched {EMBEDDINGGEMMA}")

    monkeypatch.setattr(standins, "_build_fetched", no_download)
    resolved, texts, mean_last = extract_embeddinggemma(tmp_path, "float32")
    assert resolved == path
    pooled, embedded, head = sentence_transformer_references(path, texts)
    assert [type(m).__name__ for m in head] == ["Dense", "Dense", "Normalize"]
    assert_rows_match(mean_last, pooled, "EmbeddingGemma-300M: fec mean vs Transformer+Pooling")
    assert_rows_match(
        apply_modules(head, mean_last), embedded, "EmbeddingGemma-300M: fec mean + Dense, Dense, Normalize vs encode"
    )
