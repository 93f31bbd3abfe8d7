"""Feature variants: every pooling mode, any layers, prompts; each checked against a hand
computation on a tiny real model, and stored so several variants of one model coexist."""

from __future__ import annotations

import pytest
import torch
from helpers import SPLIT_ROWS, TINY_HIDDEN, extract_argv

from fec.cli.extract import main
from fec.core.errors import SettingError, UsageError
from fec.features.backbones import load_backbone
from fec.features.forward_pass import Batching, PoolingPlan, encode_texts, extract_features
from fec.features.picks import parse_pick
from fec.features.pooling import POOLINGS, Pooling, register
from fec.features.spec import FeatureSpec, LayerChoice, parse_layers
from fec.features.store import feature_path, load_features

CPU = torch.device("cpu")
SHORT, LONG = "happy", "i was at home today with my friend and the dog crying"
PROMPT = 'this sentence : "{text}" means in one word:"'


def hand_states(backbone, text: str) -> tuple[torch.Tensor, ...]:
    """Every hidden state of one text run alone (no padding at all)."""
    ids = torch.tensor([backbone.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return backbone.model(input_ids=ids, output_hidden_states=True).hidden_states


@pytest.mark.parametrize("slot", ["llama", "bert"])
def test_each_pooling_at_every_layer_equals_a_hand_computation_with_right_padding(tiny_models, slot):
    backbone = load_backbone(str(tiny_models[slot]), CPU, torch.float32)
    spec = FeatureSpec(slot, ("mean", "first", "last"), LayerChoice(every=True))
    # The short text is padded on the right to the long one's length in the same batch.
    feats, _ = extract_features(backbone, [SHORT, LONG], slot, plan=PoolingPlan(spec=spec), batching=Batching(batch_size=2))
    layers = backbone.num_hidden_states
    assert feats.shape == (2, 3, layers, TINY_HIDDEN[slot])
    for row, text in enumerate([SHORT, LONG]):
        hidden = hand_states(backbone, text)
        for layer in range(layers):
            states = hidden[layer][0]
            torch.testing.assert_close(feats[row, 0, layer], states.mean(dim=0), atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(feats[row, 1, layer], states[0], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(feats[row, 2, layer], states[-1], atol=1e-5, rtol=1e-5)


def test_pooler_variant_is_the_trained_pooler_and_is_refused_without_one(tiny_models):
    backbone = load_backbone(str(tiny_models["bert"]), CPU, torch.float32)
    feats, _ = extract_features(backbone, [LONG], "bert", plan=PoolingPlan(spec=FeatureSpec("bert", ("pooler",))))
    ids = torch.tensor([backbone.tokenizer(LONG)["input_ids"]])
    with torch.no_grad():
        expected = backbone.model(input_ids=ids).pooler_output[0]
    torch.testing.assert_close(feats[0, 0, 0], expected, atol=1e-5, rtol=1e-5)
    without = load_backbone(str(tiny_models["bert_nopooler"]), CPU, torch.float32)
    with pytest.raises(SettingError, match="pooling pooler: .* has no trained pooler"):
        extract_features(without, [LONG], "bert", plan=PoolingPlan(spec=FeatureSpec("bert", ("pooler",))))


def masked_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The largest value of each hidden unit over the real tokens."""
    return hidden.float().masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(dim=1)


@pytest.fixture
def max_pooling():
    """`max`, a pooling of the test's own: registered for the test, removed after it."""
    pooling = register(Pooling("max", "the largest value of each unit over the real tokens", ("decoder", "encoder"), masked_max))
    yield pooling
    del POOLINGS[pooling.name]


def test_a_registered_pooling_is_extracted_stored_and_picked_by_its_name(data_dir, tmp_path, tiny_models, max_pooling):
    backbone = load_backbone(str(tiny_models["bert"]), CPU, torch.float32)
    spec = FeatureSpec("bert", ("mean", "max"), LayerChoice(every=True))
    # The short text is padded on the right in the long one's batch; its padding is not a token of it.
    feats, _ = extract_features(backbone, [SHORT, LONG], "bert", plan=PoolingPlan(spec=spec), batching=Batching(batch_size=2))
    for row, text in enumerate([SHORT, LONG]):
        for layer, states in enumerate(hand_states(backbone, text)):
            torch.testing.assert_close(feats[row, 1, layer], states[0].amax(dim=0), atol=1e-5, rtol=1e-5)
    store = tmp_path / "ds"
    argv = extract_argv(tiny_models["bert"], data_dir, store, "valid", "--layers", "all", "--pooling", "mean", "max")
    assert main("bert", argv) == 0
    stored = load_features(feature_path(store, "toy", "bert-mean+max-all", "valid"))
    assert stored.manifest["poolings"] == ["mean", "max"]
    picked = parse_pick("bert:max:-1").select(stored.features, stored.manifest)
    torch.testing.assert_close(picked, stored.features[:, 1, [-1]].float())


def test_a_pooling_is_registered_once_under_a_plain_name():
    with pytest.raises(ValueError, match="registered already"):
        register(Pooling("mean", "another mean", ("encoder",), masked_max))
    with pytest.raises(ValueError, match="lowercase letters"):
        register(Pooling("max+min", "two in one", ("encoder",), masked_max))  # + joins poolings in folder names
    with pytest.raises(SettingError, match="pooling median: is not a pooling; choose mean, first, pooler, last"):
        FeatureSpec("bert", ("median",))


def test_layer_choices_parse_to_counts_all_and_indices():
    assert parse_layers(["5"]) == LayerChoice(count=5)
    assert parse_layers(["all"]) == LayerChoice(every=True)
    assert parse_layers(["-1", "-3", "0"]).resolve(7) == [6, 4, 0]
    assert parse_layers(["2,4"]).resolve(7) == [2, 4]
    assert parse_layers(["3,"]).resolve(7) == [3]  # a single index, not a count
    assert LayerChoice(count=3).resolve(7) == [6, 5, 4]  # last first, as published
    assert LayerChoice(every=True).resolve(3) == [0, 1, 2]
    for bad, message in [(["7", "1"], "outside"), (["-1", "6"], "twice"), (["0"], "at least 1"), (["x"], "give a count")]:
        with pytest.raises(UsageError, match=message):
            parse_layers(bad).resolve(7)


def test_a_variant_without_pooling_or_layers_takes_the_slots_choice(data_dir, tmp_path, tiny_models):
    store = tmp_path / "ds"
    assert main("roberta", extract_argv(tiny_models["roberta"], data_dir, store, "valid", "--layers", "all")) == 0
    assert main("llama", extract_argv(tiny_models["llama"], data_dir, store, "valid", "--pooling", "last")) == 0
    encoder = load_features(feature_path(store, "toy", "roberta-first-all", "valid")).manifest
    decoder = load_features(feature_path(store, "toy", "llama-last-last5", "valid")).manifest
    assert encoder["poolings"] == ["first"] and encoder["layer_indices"] == [0, 1, 2]  # CLS, as the slot publishes
    assert decoder["poolings"] == ["last"] and decoder["layer_indices"] == [6, 5, 4, 3, 2]  # the last 5, last first


def test_variants_coexist_in_the_store_with_indices_poolings_and_half_precision(data_dir, tmp_path, tiny_models):
    store = tmp_path / "ds"
    model = tiny_models["llama"]
    assert main("llama", extract_argv(model, data_dir, store, "valid", "--layers", "all", "--pooling", "mean", "last")) == 0
    assert main("llama", extract_argv(model, data_dir, store, "valid", "--layers", "-1", "-3", "--pooling", "last")) == 0
    assert main("llama", extract_argv(model, data_dir, store, "valid")) == 0  # the published one, in llama/
    every = load_features(feature_path(store, "toy", "llama-mean+last-all", "valid"))
    picked = load_features(feature_path(store, "toy", "llama-last-Lm1_m3", "valid"))
    published = load_features(feature_path(store, "toy", "llama", "valid"))
    assert every.features.shape == (SPLIT_ROWS["valid"], 2, 7, TINY_HIDDEN["llama"])
    assert every.features.dtype == torch.bfloat16 and every.manifest["feature_dtype"] == "bfloat16"
    assert every.manifest["poolings"] == ["mean", "last"] and every.manifest["layer_indices"] == list(range(7))
    assert every.manifest["feature_axes"] == ["row", "pooling", "layer", "hidden"]
    assert picked.manifest["layer_indices"] == [6, 4]
    torch.testing.assert_close(picked.features[:, 0], every.features[:, 1, [6, 4]])
    # The published mean of the last 5 layers is the same numbers as the variant's, in float32.
    torch.testing.assert_close(published.features, every.features[:, 0, [6, 5, 4, 3, 2]].float(), atol=0.02, rtol=0.01)


def test_prompts_are_recorded_averaged_and_survive_truncation(data_dir, tmp_path, tiny_models):
    backbone = load_backbone(str(tiny_models["llama"]), CPU, torch.float32)
    other = "in one word , {text} means"
    one = FeatureSpec("llama", ("last",), LayerChoice(count=1), (PROMPT,))
    two = FeatureSpec("llama", ("last",), LayerChoice(count=1), (PROMPT, other))
    first, _ = extract_features(backbone, [LONG], "llama", plan=PoolingPlan(spec=one))
    other_spec = FeatureSpec("llama", ("last",), LayerChoice(count=1), (other,))
    second, _ = extract_features(backbone, [LONG], "llama", plan=PoolingPlan(spec=other_spec))
    both, _ = extract_features(backbone, [LONG], "llama", plan=PoolingPlan(spec=two))
    torch.testing.assert_close(both, (first + second) / 2)
    # Cut to 12 tokens, the text loses words but the prompt keeps its ending.
    ids = encode_texts(backbone.tokenizer, [LONG * 3], 12, PROMPT)[0]
    ending = backbone.tokenizer('in one word:"', add_special_tokens=False)["input_ids"]
    assert len(ids) <= 12 and ids[-len(ending) :] == ending
    store = tmp_path / "ds"
    argv = extract_argv(tiny_models["llama"], data_dir, store, "valid", "--pooling", "last", "--prompt", PROMPT)
    assert main("llama", argv) == 0
    (folder,) = [p for p in (store / "toy").iterdir() if p.name.startswith("llama-last-last5-p")]
    assert load_features(folder / "valid.safetensors").manifest["prompts"] == [PROMPT]


def test_chat_template_wraps_the_prompted_text(tiny_models):
    backbone = load_backbone(str(tiny_models["llama"]), CPU, torch.float32)
    backbone.tokenizer.chat_template = "{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}"
    (ids,) = encode_texts(backbone.tokenizer, [SHORT], 50, PROMPT, chat=True)
    assert backbone.tokenizer.decode(ids) == backbone.tokenizer.decode(
        backbone.tokenizer(f"<s> {PROMPT.replace('{text}', SHORT)} </s>", add_special_tokens=False)["input_ids"]
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layers", "9", "2"], "outside the model's 7 hidden states"),
        (["--layers", "12"], "the model has 7 hidden states"),
        (["--prompt", "no field here"], "must contain {text} exactly once"),
        (["--pooling", "mean", "mean"], "names a pooling twice"),
        (["--pooling", "pooler", "mean"], "ask for it on its own"),
        (["--pooling", "pooler", "--prompt", PROMPT], "ask for it on its own"),
        (["--store_dtype", "float16"], "applies to variants"),
        (["--pooling", "last", "--chat_template"], "this tokenizer has no chat template"),
        (["--pooling", "last", "--prompt", PROMPT, "--max_len", "8"], "the prompt alone takes"),
        (["--pooling", "last", "--compat", "reference"], "published extraction"),
    ],
)
def test_bad_variant_options_are_one_line_errors_before_the_model_loads(data_dir, tmp_path, tiny_models, capsys,
                                                                         monkeypatch, extra, message):  # fmt: skip
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", refuse)
    assert main("llama", extract_argv(tiny_models["llama"], data_dir, tmp_path / "ds", "valid", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
