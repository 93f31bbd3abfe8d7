"""Members of the fusion classifier trained together as one batched model (fec/classify/members.py):
each member is the run it would be alone, whether selected on valid or on a cross-validation fold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fec.classify.cross_validation import fold_assignment, fold_data
from fec.classify.fusion_inputs import FusionData, SplitInputs
from fec.classify.fusion_training import SeedResult, TrainConfig, build_model, predict_logits, train_seed
from fec.classify.members import Member, train_members

SEEDS = (0, 1, 2)
# lr 1e-3 so that the small task is learnt and the seeds stop early, at different epochs.
CFG = TrainConfig(epochs=15, early_stop=3, batch_size=16, lr=1e-3)


def synthetic_data(train_rows: int = 120, valid_rows: int = 40, multilabel: bool = False) -> FusionData:
    """The fusion's shapes in small: a decoder source (rows, 3 layers, 12) and two encoders of widths
    8 and 6, with 3 labels read off a few of their features (the argmax, or multi-hot where positive)."""
    generator = torch.Generator().manual_seed(0)
    rows = train_rows + valid_rows
    decoder = torch.randn(rows, 3, 12, generator=generator)
    bert, roberta = torch.randn(rows, 8, generator=generator), torch.randn(rows, 6, generator=generator)
    signal = decoder[:, -1, :3] + bert[:, :3] - roberta[:, :3]
    labels = (signal > 0).float() if multilabel else signal.argmax(dim=1)

    def split(rows: slice) -> SplitInputs:
        return SplitInputs([decoder[rows], bert[rows], roberta[rows]], labels[rows])

    splits = {"train": split(slice(0, train_rows)), "valid": split(slice(train_rows, rows))}
    return FusionData("synthetic", ["llama", "bert", "roberta"], splits, ["a", "b", "c"], multilabel, {})


def assert_same_run(member: SeedResult, alone: SeedResult) -> None:
    """Bitwise the same run: selection, metrics, probabilities and every tensor of the selected state."""
    assert (member.best_epoch, member.epochs_run) == (alone.best_epoch, alone.epochs_run)
    assert member.valid == alone.valid
    assert np.array_equal(member.probabilities["valid"], alone.probabilities["valid"])
    assert member.state_dict.keys() == alone.state_dict.keys()
    for key, tensor in member.state_dict.items():
        assert torch.equal(tensor, alone.state_dict[key]), key


def assert_close_run(member: SeedResult, alone: SeedResult) -> None:
    """The same run up to last-bit differences of the arithmetic: the same epochs selected and run, the
    same valid accuracy (or macro-F1), probabilities within 1e-4 and weights within 1e-5."""
    assert (member.best_epoch, member.epochs_run) == (alone.best_epoch, alone.epochs_run)
    headline = "acc" if "acc" in alone.valid else "macro_f1"  # multi-label metrics have no accuracy
    assert member.valid[headline] == alone.valid[headline]
    np.testing.assert_allclose(member.probabilities["valid"], alone.probabilities["valid"], rtol=0, atol=1e-4)
    assert member.state_dict.keys() == alone.state_dict.keys()
    for key, tensor in member.state_dict.items():
        torch.testing.assert_close(tensor, alone.state_dict[key], rtol=0, atol=1e-5, msg=key)


@pytest.fixture(scope="module")
def data() -> FusionData:
    return synthetic_data()


@pytest.fixture(scope="module")
def together(data) -> list[SeedResult]:
    """Seeds 0, 1 and 2, each selected on valid, trained as one batch."""
    return train_members(data, CFG, [Member(seed) for seed in SEEDS])


def test_each_member_trained_together_is_bitwise_that_member_trained_alone(data, together):
    """The batch changes nothing for a member: its weights, shuffles and dropout masks are its own,
    and a member that stops leaves the batch without disturbing the others."""
    assert len({result.epochs_run for result in together}) > 1  # they stopped at different epochs
    for seed, member in zip(SEEDS, together, strict=True):
        (alone,) = train_members(data, CFG, [Member(seed)])
        assert_same_run(member, alone)


def test_a_member_is_train_seed_of_its_seed(data, together):
    """A member selected on valid is `train_seed(data, cfg, seed)`, within tolerance here: an epoch's
    last batch has 8 rows, and the 6-wide encoder's Linear(6, 8) on them (384 multiply-adds) is
    under the 400 below which torch.bmm runs a loop of its own, not the BLAS gemm nn.Linear calls.
    Its last-bit differences grow over 15 epochs to a few 1e-6 in the weights, 1e-7 in the probabilities."""
    for seed, member in zip(SEEDS, together, strict=True):
        alone = train_seed(data, CFG, seed)
        assert_close_run(member, alone)
        assert member.test is None and member.seed == seed
    # The selected state is a DownstreamModel's, on CPU: it loads into the model train_seed builds.
    model = build_model(data, CFG)
    model.load_state_dict(together[0].state_dict)
    probabilities = torch.softmax(predict_logits(model, data.splits["valid"], CFG.eval_batch_size), dim=1).numpy()
    np.testing.assert_array_equal(probabilities, together[0].probabilities["valid"])


def test_where_no_matrix_product_is_tiny_a_member_is_bitwise_train_seed():
    """With 122 train rows the last batch has 10 rows and every matrix product is at least 400
    multiply-adds: then a member's arithmetic is train_seed's, kernel for kernel, and so is its run."""
    data = synthetic_data(train_rows=122)
    for seed, member in zip((0, 1), train_members(data, CFG, [Member(0), Member(1)]), strict=True):
        assert_same_run(member, train_seed(data, CFG, seed))


def test_the_folds_of_a_seed_are_train_seed_on_each_fold():
    """The 5 cross-validation folds of seed 0, on the rows train_seed_cv gives them, are
    `train_seed(fold_data(data, fit, held), cfg, 0)` each. 122 train rows make folds of 24 and 25:
    the members' last batches (1 or 2 rows) and held rows differ in size, and their steps go in
    separate groups. Those last batches make tiny matrix products (see above), hence the tolerance."""
    data = synthetic_data(train_rows=122)
    assignment = torch.from_numpy(fold_assignment(122, 5, seed=0))
    folds = [((assignment != fold).nonzero().flatten(), (assignment == fold).nonzero().flatten()) for fold in range(5)]
    assert len({len(held) for _, held in folds}) == 2
    members = train_members(data, CFG, [Member(0, fit=fit, held=held) for fit, held in folds])
    for (fit, held), member in zip(folds, members, strict=True):
        assert len(member.probabilities["valid"]) == len(held)
        assert_close_run(member, train_seed(fold_data(data, fit, held), CFG, 0))


def test_multilabel_members_tune_their_thresholds_on_their_held_rows_as_train_seed_does():
    data = synthetic_data(multilabel=True)
    members = train_members(data, CFG, [Member(seed) for seed in (0, 1)])
    for seed, member in zip((0, 1), members, strict=True):
        alone = train_seed(data, CFG, seed)
        assert_close_run(member, alone)
        assert member.thresholds == alone.thresholds
        assert member.valid["macro_f1"] > 50  # it learnt the labels
        assert member.predictions["valid"].shape == (40, 3)
