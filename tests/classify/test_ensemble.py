"""Ensemble selection (Caruana et al., 2004): greedy forward selection with replacement of the
candidates whose mean of probabilities scores best, on small synthetic candidates built here."""

from __future__ import annotations

import numpy as np
import pytest

from fec.classify.ensemble import ensemble_probabilities, select_ensemble
from fec.core.metrics import THRESHOLD_GRID, classification_metrics, multilabel_metrics, tune_thresholds


def accuracy(labels: np.ndarray, probs: np.ndarray) -> float:
    return 100 * float(np.mean(probs.argmax(axis=1) == labels))


def tuned_macro_f1(labels: np.ndarray, probs: np.ndarray) -> float:
    """Macro-F1 at thresholds tuned on the same rows, the way the project scores a multi-label model."""
    return multilabel_metrics(labels, (probs >= tune_thresholds(labels, probs)).astype(np.int64))["macro_f1"]


def candidate(rng: np.random.Generator, labels: np.ndarray, classes: int, skill: float) -> np.ndarray:
    """Softmax of noise plus `skill` on the true class: more skill, more often right."""
    logits = rng.normal(size=(len(labels), classes))
    logits[np.arange(len(labels)), labels] += skill
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def multilabel_fixture(seed: int, rows: int = 300, labels: int = 5, candidates: int = 6):
    """Multi-hot labels (about 30% positive) and sigmoid candidates, each skilled on its own labels."""
    rng = np.random.default_rng(seed)
    gold = (rng.random((rows, labels)) < 0.3).astype(np.int64)
    probabilities = {}
    for c in range(candidates):
        skill = rng.uniform(0.2, 2.5, size=labels)  # per label: some candidates know some labels better
        logits = skill * (2 * gold - 1) + rng.normal(size=(rows, labels)) - 0.5
        probabilities[f"sigmoid-{c}"] = 1 / (1 + np.exp(-logits))
    return probabilities, gold


def test_complementary_candidates_are_chosen_together_and_beat_each_alone():
    rng = np.random.default_rng(0)
    rows, classes = 400, 4
    labels = rng.integers(0, classes, rows)
    first_half = np.arange(rows) < rows // 2

    def confident_on(rows_known: np.ndarray) -> np.ndarray:
        """0.85 on the truth where it knows, nearly uniform (no real opinion) elsewhere."""
        probs = rng.dirichlet(np.full(classes, 20.0), size=rows)
        probs[rows_known] = 0.05
        probs[rows_known, labels[rows_known]] = 0.85
        return probs

    mediocre = np.full((rows, classes), 0.1)
    right_rows = rng.random(rows) < 0.55  # right on 55% of the rows, anywhere
    mediocre[np.arange(rows), np.where(right_rows, labels, (labels + 1) % classes)] = 0.7
    probabilities = {"left": confident_on(first_half), "right": confident_on(~first_half), "mediocre": mediocre}

    choice = select_ensemble(probabilities, labels, multilabel=False, size=6)

    assert set(choice.members) == {"left", "right"}
    assert sum(choice.weights) == pytest.approx(1.0)
    ensemble_accuracy = accuracy(labels, ensemble_probabilities(probabilities, choice.members, choice.weights))
    assert ensemble_accuracy == pytest.approx(choice.score)
    for name in choice.members:
        assert ensemble_accuracy > accuracy(labels, probabilities[name])
    assert choice.thresholds is None
    assert len(choice.steps) == 6


@pytest.mark.parametrize("seed", range(5))
def test_never_worse_on_the_selection_rows_than_the_best_single_candidate(seed):
    rng = np.random.default_rng(seed)
    rows, classes = 250, 5
    labels = rng.integers(0, classes, rows)
    probabilities = {f"model-{i}": candidate(rng, labels, classes, skill) for i, skill in enumerate(rng.uniform(0, 2, 8))}

    choice = select_ensemble(probabilities, labels, multilabel=False, size=10)

    singles = {name: accuracy(labels, probs) for name, probs in probabilities.items()}
    best = max(singles.values())
    assert choice.best_single[1] == best and singles[choice.best_single[0]] == best
    assert choice.score >= best
    assert choice.score == max(choice.steps) and choice.steps[0] == best
    assert choice.score == pytest.approx(accuracy(labels, ensemble_probabilities(probabilities, choice.members, choice.weights)))
    assert len(set(choice.members)) == len(choice.members)
    assert choice.weights == sorted(choice.weights, reverse=True)  # best-weighted first
    assert sum(choice.weights) == pytest.approx(1.0)


def test_a_dominating_candidate_is_chosen_alone_with_weight_one():
    rng = np.random.default_rng(7)
    rows, classes = 200, 3
    labels = rng.integers(0, classes, rows)
    probabilities = {f"weak-{i}": candidate(rng, labels, classes, 0.5) for i in range(3)}
    probabilities["oracle"] = candidate(rng, labels, classes, 8.0)  # right on every row, and sure of it
    probabilities["weak-late"] = candidate(rng, labels, classes, 0.5)
    assert accuracy(labels, probabilities["oracle"]) == 100.0

    choice = select_ensemble(probabilities, labels, multilabel=False, size=5)

    # Later steps cannot beat 100%; the best prefix is the shortest one, the oracle alone.
    assert choice.members == ["oracle"] and choice.weights == [1.0]
    assert choice.score == 100.0 and choice.best_single == ("oracle", 100.0)


def test_size_one_is_the_best_single_candidate_and_ties_go_to_the_earlier_one():
    rng = np.random.default_rng(3)
    rows, classes = 150, 4
    labels = rng.integers(0, classes, rows)
    weak, strong = candidate(rng, labels, classes, 0.3), candidate(rng, labels, classes, 2.0)

    choice = select_ensemble({"weak": weak, "strong": strong}, labels, multilabel=False, size=1)
    assert choice.members == ["strong"] and choice.weights == [1.0]
    assert choice.score == accuracy(labels, strong) and choice.steps == [choice.score]

    twin = strong.copy()  # the same predictions: a tie, settled by input order
    assert select_ensemble({"weak": weak, "a": strong, "b": twin}, labels, False, size=1).members == ["a"]
    assert select_ensemble({"weak": weak, "b": twin, "a": strong}, labels, False, size=1).members == ["b"]


@pytest.mark.parametrize("seed", range(3))
def test_multilabel_selection_tunes_thresholds_and_is_never_worse_than_the_best_single(seed):
    probabilities, gold = multilabel_fixture(seed)

    choice = select_ensemble(probabilities, gold, multilabel=True, size=8)

    singles = {name: tuned_macro_f1(gold, probs) for name, probs in probabilities.items()}
    assert choice.best_single[1] == pytest.approx(max(singles.values()))
    assert choice.best_single[1] == pytest.approx(singles[choice.best_single[0]])
    assert choice.score >= choice.best_single[1]
    assert choice.thresholds is not None and len(choice.thresholds) == gold.shape[1]
    assert set(choice.thresholds) <= set(THRESHOLD_GRID.tolist())
    ensemble = ensemble_probabilities(probabilities, choice.members, choice.weights)
    predictions = (ensemble >= np.array(choice.thresholds)).astype(np.int64)
    assert multilabel_metrics(gold, predictions)["macro_f1"] == pytest.approx(choice.score)


def test_other_metrics_are_asked_for_by_name_and_scored_by_fec_core_metrics():
    rng = np.random.default_rng(11)
    rows, classes = 120, 4
    labels = rng.integers(0, classes, rows)
    probabilities = {f"model-{i}": candidate(rng, labels, classes, 1.0) for i in range(4)}
    choice = select_ensemble(probabilities, labels, multilabel=False, size=4, metric="macro_f1")
    ensemble = ensemble_probabilities(probabilities, choice.members, choice.weights)
    assert choice.score == pytest.approx(classification_metrics(labels, ensemble.argmax(axis=1))["macro_f1"])

    probabilities, gold = multilabel_fixture(5, rows=120, candidates=3)
    choice = select_ensemble(probabilities, gold, multilabel=True, size=3, metric="micro_f1")
    ensemble = ensemble_probabilities(probabilities, choice.members, choice.weights)
    predictions = (ensemble >= np.array(choice.thresholds)).astype(np.int64)
    assert choice.score == pytest.approx(multilabel_metrics(gold, predictions)["micro_f1"])


def test_bad_inputs_are_refused_with_a_message_naming_the_problem():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 10)
    good = rng.dirichlet(np.ones(3), size=10)
    with pytest.raises(ValueError, match="no candidates"):
        select_ensemble({}, labels, multilabel=False, size=3)
    for size in (0, -1, 2.5):
        with pytest.raises(ValueError, match="size"):
            select_ensemble({"a": good}, labels, multilabel=False, size=size)
    with pytest.raises(ValueError, match="shapes differ"):
        select_ensemble({"a": good, "b": good[:, :2]}, labels, multilabel=False, size=3)
    with pytest.raises(ValueError, match="labels have 9 rows, the probabilities 10"):
        select_ensemble({"a": good}, labels[:9], multilabel=False, size=3)
    with pytest.raises(ValueError, match="ids in 0..2"):
        select_ensemble({"a": good}, labels + 3, multilabel=False, size=3)
    with pytest.raises(ValueError, match="multi-hot"):
        select_ensemble({"a": good}, labels, multilabel=True, size=3)
    with pytest.raises(ValueError, match="non-finite"):
        select_ensemble({"a": good, "b": np.full_like(good, np.nan)}, labels, multilabel=False, size=3)
    with pytest.raises(ValueError, match="unknown single-label metric 'jaccard'"):
        select_ensemble({"a": good}, labels, multilabel=False, size=3, metric="jaccard")
    with pytest.raises(ValueError, match="without probabilities"):
        ensemble_probabilities({"a": good}, ["a", "missing"], [0.5, 0.5])
    with pytest.raises(ValueError, match="2 members but 1 weights"):
        ensemble_probabilities({"a": good, "b": good}, ["a", "b"], [1.0])


def test_permuting_the_rows_changes_nothing_and_repeating_gives_the_same_choice():
    rng = np.random.default_rng(21)
    rows, classes = 300, 6
    labels = rng.integers(0, classes, rows)
    probabilities = {f"model-{i}": candidate(rng, labels, classes, skill) for i, skill in enumerate(rng.uniform(0, 1.5, 7))}
    ml_probabilities, gold = multilabel_fixture(4)

    for probs, targets, multilabel in ((probabilities, labels, False), (ml_probabilities, gold, True)):
        choice = select_ensemble(probs, targets, multilabel, size=12)
        order = rng.permutation(len(targets))
        shuffled = select_ensemble({name: p[order] for name, p in probs.items()}, targets[order], multilabel, size=12)
        assert (shuffled.members, shuffled.weights, shuffled.score) == (choice.members, choice.weights, choice.score)
        assert shuffled.steps == choice.steps and shuffled.thresholds == choice.thresholds
        assert select_ensemble(probs, targets, multilabel, size=12) == choice  # no randomness
