"""The fusion classifier's shapes, pooling and normalisation against hand computations."""

from __future__ import annotations

import pytest
import torch

from DownstreamModel import DownstreamModel, FusionOptions, power_normalise
from fec.classify.fusion_inputs import FusionData, SplitInputs
from fec.classify.fusion_training import TrainConfig, build_model


def published_parameter_count(classes: int) -> int:
    compress = 5 * (4096 * 1024 + 1024)
    mlp = (4145 * 1024 + 1024) + (1024 * 256 + 256) + (256 * classes + classes)
    return compress + mlp


@pytest.mark.parametrize("classes", [32, 27])
def test_published_dims_give_exactly_the_published_layers_and_parameter_count(classes):
    model = DownstreamModel(num_classes=classes, decoder_shape=(5, 4096), encoder_dims=[1024, 1024])
    assert [tuple(m[0].weight.shape) for m in model.compress_layers] == [(1024, 4096)] * 5
    assert all(isinstance(p, torch.nn.Identity) for p in model.encoder_projections)
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(4145, 1024), (1024, 256), (256, classes)]
    assert sum(p.numel() for p in model.parameters()) == published_parameter_count(classes)
    out = model(torch.randn(3, 5, 4096), torch.randn(3, 1024), torch.randn(3, 1024))
    assert out.shape == (3, classes)
    assert "Gram 7x7" in model.describe() and "49 + mean of decoder layers (4096) = 4145" in model.describe()


@pytest.mark.parametrize(
    "decoder, encoders, fusion, head_in",
    [
        ((5, 576), [384, 768], 768, 49 + 576),  # the offline stand-ins: projections for the narrow encoder
        ((3, 32), [24], 24, 16 + 32),
        ((5, 64), [], 64, 25 + 64),  # llama only
        (None, [384, 768], 768, 4 + 384 + 768),  # encoders only: raw vectors join the pooled ones
        (None, [20], 20, 1 + 20),
    ],
)
def test_sizes_follow_the_features(decoder, encoders, fusion, head_in):
    model = DownstreamModel(num_classes=4, decoder_shape=decoder, encoder_dims=encoders)
    assert model.config["fusion_dim"] == fusion and model.head_in == head_in
    for width, proj in zip(encoders, model.encoder_projections, strict=False):
        assert isinstance(proj, torch.nn.Identity) == (width == fusion)
    inputs = ([torch.randn(2, *decoder)] if decoder else []) + [torch.randn(2, w) for w in encoders]
    assert model(*inputs).shape == (2, 4)


def test_gram_pooling_and_both_power_normalisations_match_hand_computation():
    torch.manual_seed(0)
    model = DownstreamModel(
        num_classes=2, decoder_shape=(2, 3), encoder_dims=[3], options=FusionOptions(dropout=0.0, sigma=0.5)
    ).eval()
    decoder, encoder = torch.randn(1, 2, 3), torch.randn(1, 3)
    captured = {}
    model.mlp.register_forward_hook(lambda mod, inp, out: captured.setdefault("x", inp[0]))
    with torch.no_grad():
        model(decoder, encoder)
        x = torch.stack([model.compress_layers[0](decoder[:, 0]), model.compress_layers[1](decoder[:, 1]), encoder], dim=1)[0]
        gram = torch.tensor([[float(x[i] @ x[j]) for j in range(3)] for i in range(3)]).flatten()
    expected = torch.cat([2 / (1 + torch.exp(-0.5 * gram)) - 1, decoder[0].mean(dim=0)])
    torch.testing.assert_close(captured["x"][0], expected, atol=1e-5, rtol=1e-5)
    p = torch.tensor([-2.0, 0.0, 3.0])
    torch.testing.assert_close(power_normalise(p, "sigmoid", 1.0), torch.tanh(p / 2))  # the two published forms differ
    torch.testing.assert_close(power_normalise(p, "tanh", 1.0), torch.tanh(2 * p))
    with pytest.raises(ValueError, match="choose one of sigmoid, tanh"):
        DownstreamModel(num_classes=2, options=FusionOptions(pn="cosh"))


def test_raw_inputs_all_feeds_every_encoder_vector_to_the_mlp_beside_the_decoder_mean():
    torch.manual_seed(0)
    model = DownstreamModel(
        num_classes=2, decoder_shape=(2, 3), encoder_dims=[4, 3], options=FusionOptions(raw_inputs="all")
    ).eval()
    assert model.head_in == 16 + 3 + 4 + 3
    assert "mean of decoder layers (3) + raw encoder vectors (7) = 26" in model.describe()
    decoder, narrow, wide = torch.randn(1, 2, 3), torch.randn(1, 4), torch.randn(1, 3)
    captured = {}
    model.mlp.register_forward_hook(lambda mod, inp, out: captured.setdefault("x", inp[0]))
    with torch.no_grad():
        model(decoder, narrow, wide)
    torch.testing.assert_close(captured["x"][0, 16:], torch.cat([decoder[0].mean(dim=0), narrow[0], wide[0]]))
    published = DownstreamModel(num_classes=2, decoder_shape=(2, 3), encoder_dims=[4, 3])
    assert published.head_in == 16 + 3 and published.config["raw_inputs"] == "decoder"
    encoders_only = DownstreamModel(num_classes=2, decoder_shape=None, encoder_dims=[4, 3])
    assert encoders_only.config["raw_inputs"] == "all" and encoders_only.head_in == 4 + 4 + 3  # recorded as what happens
    with pytest.raises(ValueError, match="choose one of decoder, all"):
        DownstreamModel(num_classes=2, options=FusionOptions(raw_inputs="everything"))


def test_a_saved_config_builds_the_same_model_again():
    """model.json's `model` (every setting named, as existing runs hold it) rebuilds the model it
    describes; a setting the model does not know, or a config that is no dict, is a TypeError."""
    shapes = {"num_classes": 3, "decoder_shape": [2, 8], "encoder_dims": [6]}
    saved = shapes | {"fusion_dim": 6, "sigma": 0.5, "pn": "tanh", "dropout": 0.1, "hidden": [16, 8], "raw_inputs": "all"}
    model = DownstreamModel.from_config(saved)
    assert model.config == saved
    assert [m.out_features for m in model.mlp if isinstance(m, torch.nn.Linear)] == [16, 8, 3]
    assert DownstreamModel.from_config({"num_classes": 4}).config == DownstreamModel(num_classes=4).config  # the published
    with pytest.raises(TypeError, match="colour"):
        DownstreamModel.from_config(saved | {"colour": "red"})
    with pytest.raises(TypeError):
        DownstreamModel.from_config(["not", "a", "dict"])


def toy_fusion_data() -> FusionData:
    torch.manual_seed(0)
    train = SplitInputs([torch.randn(40, 2, 6) * 100 + 7, torch.randn(40, 4)], torch.arange(40) % 2)
    valid = SplitInputs([torch.randn(10, 2, 6) * 1e4, torch.randn(10, 4) + 50], torch.arange(10) % 2)
    return FusionData("t", ["llama", "bert"], {"train": train, "valid": valid}, ["a", "b"], False, {})


def test_standardisation_uses_training_statistics_only():
    data = toy_fusion_data()
    model = build_model(data, TrainConfig(norm="zscore"))
    train_decoder = data.splits["train"].inputs[0]
    torch.testing.assert_close(model.input_mean_0, train_decoder.mean(dim=0))
    torch.testing.assert_close(model.input_std_0, train_decoder.std(dim=0, unbiased=False))
    # Changing valid features (wildly different scale) does not move the statistics.
    data.splits["valid"].inputs[0].mul_(1000)
    torch.testing.assert_close(build_model(data, TrainConfig(norm="zscore")).input_mean_0, model.input_mean_0)
    raw = build_model(data, TrainConfig(norm="none"))
    assert torch.equal(raw.input_mean_0, torch.zeros(2, 6)) and torch.equal(raw.input_std_0, torch.ones(2, 6))
    assert "input_mean_0" in model.state_dict()  # the checkpoint carries its normalisation


def test_cpu_training_keeps_gradient_buffers_instead_of_refaulting_them_every_step():
    import resource
    import sys

    from fec.classify.allocator import keep_freed_memory

    if not sys.platform.startswith("linux"):
        pytest.skip("the allocator setting is glibc's")
    assert keep_freed_memory() and keep_freed_memory()  # idempotent
    model = DownstreamModel(num_classes=4, decoder_shape=(2, 2048), encoder_dims=[1024])  # 8 MB gradients
    optimizer = torch.optim.Adam(model.parameters(), fused=True)
    inputs, labels = (torch.randn(4, 2, 2048), torch.randn(4, 1024)), torch.arange(4)

    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(*inputs), labels).backward()
        optimizer.step()

    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    faults_per_step = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
    assert faults_per_step < 500  # without the setting: one per 4 KB page of each new gradient, thousands


def test_saturation_counts_pooled_values_pinned_at_plus_or_minus_one():
    from fec.classify.fusion_training import pooled_saturation

    torch.manual_seed(0)
    split = SplitInputs([torch.randn(30, 2, 64), torch.randn(30, 64)], torch.zeros(30, dtype=torch.long))
    captured = {}
    saturations = {}
    for sigma in (100.0, 1e-6):
        model = DownstreamModel(
            num_classes=2, decoder_shape=(2, 64), encoder_dims=[64], options=FusionOptions(sigma=sigma)
        ).eval()
        model.mlp.register_forward_hook(lambda mod, inp, out: captured.__setitem__("x", inp[0]))
        with torch.no_grad():
            model(*split.inputs)
        torch.testing.assert_close(model.pooled(*split.inputs), captured["x"][:, :9])  # what the MLP sees first
        saturations[sigma] = pooled_saturation(model, split, batch_size=7)
    assert saturations[100.0] > 90 and saturations[1e-6] == 0.0
