"""The lexical source's C search computes exactly what its definition computes, only cheaper.

The definition: for each C of the grid, every fold is scored by `LexicalModel.fit` on the other
folds, with a vectorizer and a regression fitted from scratch. The C with the best out-of-fold
score is kept, and its out-of-fold probabilities are train's. `lexical_source` fits each fold's
vectorizer once for all C. The vectorizer does not depend on C, and every regression still
starts from zero, so the probabilities and scores are the same to the bit. There is no tolerance
to state (a warm start would need one, and on real data it did not stay small: see
`fec.classify.lexical`).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from fec.classify.lexical import LexicalModel, LexicalSettings, fold_assignment, lexical_source, oof_score, out_of_fold_per_C

# The grid out of order: the scores are kept, and a tie goes, in the grid's order.
SETTINGS = LexicalSettings(min_df=1, C_grid=(4.0, 0.25, 1.0, 16.0), folds=4)
TASKS = {"single-label": (160, 4, False), "multi-label": (160, 3, True)}


def labelled_texts(rows: int, n_labels: int, multilabel: bool, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """Texts of shared filler words with two cue words for each label the row has, and one cue of
    a random label as noise. The labels can be learnt, though not perfectly, so the C values score
    differently."""
    rng = np.random.default_rng(seed)
    cues = [[f"cue{label}w{k}" for k in range(5)] for label in range(n_labels)]
    filler = [f"filler{k}" for k in range(30)]
    if multilabel:
        labels = (rng.random((rows, n_labels)) < 0.35).astype(np.int64)
    else:
        labels = rng.integers(n_labels, size=rows)
    texts = []
    for row in range(rows):
        shown = np.flatnonzero(labels[row]) if multilabel else [labels[row]]
        words = list(rng.choice(filler, size=5))
        for label in shown:
            words += list(rng.choice(cues[label], size=2))
        words.append(rng.choice(cues[rng.integers(n_labels)]))
        rng.shuffle(words)
        texts.append(" ".join(words))
    return texts, labels


def out_of_fold(texts: list[str], labels: np.ndarray, assignment: np.ndarray, fit) -> np.ndarray:
    """The definition of out of fold: each row's probabilities come from the model that
    `fit(texts, labels)` gives when fitted on the other folds."""
    scored = None
    for fold in range(int(assignment.max()) + 1):
        held = assignment == fold
        model = fit([t for t, h in zip(texts, held, strict=True) if not h], labels[~held])
        probabilities = model.predict_proba([t for t, h in zip(texts, held, strict=True) if h])
        scored = np.zeros((len(texts), probabilities.shape[1]), dtype=np.float32) if scored is None else scored
        scored[held] = probabilities
    return scored


def reference_per_C(texts: list[str], labels: np.ndarray, n_labels: int, multilabel: bool) -> dict[float, np.ndarray]:
    """Every C's out-of-fold probabilities by the definition: a fresh `LexicalModel.fit` per fold and C."""
    assignment = fold_assignment(labels, multilabel, SETTINGS.folds, SETTINGS.seed)
    fit = partial(LexicalModel.fit, settings=SETTINGS, n_labels=n_labels, multilabel=multilabel)
    return {C: out_of_fold(texts, labels, assignment, partial(fit, C=C)) for C in SETTINGS.C_grid}


@pytest.mark.parametrize("task", TASKS)
def test_sharing_each_folds_vectorizer_chooses_the_C_scores_and_probabilities_of_the_definition(task):
    rows, n_labels, multilabel = TASKS[task]
    texts, labels = labelled_texts(rows, n_labels, multilabel)
    expected = reference_per_C(texts, labels, n_labels, multilabel)
    expected_scores = {C: oof_score(labels, probabilities, multilabel) for C, probabilities in expected.items()}
    expected_C = max(SETTINGS.C_grid, key=expected_scores.get)  # on a tie, the first in the grid, as lexical_source
    assert len(set(expected_scores.values())) > 1  # the C values disagree, so the test covers choosing between them

    source = lexical_source(texts, labels, SETTINGS, n_labels, multilabel)

    assert source.C == expected_C
    assert source.scores == expected_scores and list(source.scores) == list(SETTINGS.C_grid)
    np.testing.assert_array_equal(source.train, expected[expected_C])
    # Every C's probabilities, not only those of the C that was chosen:
    assignment = fold_assignment(labels, multilabel, SETTINGS.folds, SETTINGS.seed)
    per_C = out_of_fold_per_C(texts, labels, assignment, SETTINGS, n_labels, multilabel)
    for C in SETTINGS.C_grid:
        assert per_C[C].dtype == expected[C].dtype
        np.testing.assert_array_equal(per_C[C], expected[C])
    # The model for all of train is `LexicalModel.fit`, as before:
    full = LexicalModel.fit(texts, labels, SETTINGS, expected_C, n_labels, multilabel)
    np.testing.assert_array_equal(source.model.weights, full.weights)
    np.testing.assert_array_equal(source.model.predict_proba(texts), full.predict_proba(texts))


def test_folds_fitted_by_two_workers_give_the_same_source(task="single-label"):
    """`workers` processes take a fold each: the same C, scores and probabilities, bit for bit."""
    rows, n_labels, multilabel = TASKS[task]
    texts, labels = labelled_texts(rows, n_labels, multilabel)
    alone = lexical_source(texts, labels, SETTINGS, n_labels, multilabel)
    shared = lexical_source(texts, labels, SETTINGS, n_labels, multilabel, workers=2)
    assert (shared.C, shared.scores) == (alone.C, alone.scores)
    np.testing.assert_array_equal(shared.train, alone.train)
