"""The search's candidates are read off the probe curves: per source, layer sets around the peak of
its best curve, the peak and a near spread of its second-best, its published folder, and `off`.

    python tune.py --task ED      # the candidates are in Logs/tune_ED_*/config.json, search_space
"""

from __future__ import annotations

from fec.classify.candidates import OFF, PUBLISHED_FOLDER, search_space


def curve_rows(slot: str, folder: str, pooling: str, scores: dict[int, float], depth: int) -> list[dict]:
    return [
        {"slot": slot, "folder": folder, "pooling": pooling, "layer": layer, "num_hidden_states": depth, "selection_acc": score}
        for layer, score in scores.items()
    ]


def peaked(peak: int, depth: int, height: float) -> dict[int, float]:
    return {layer: height - abs(layer - peak) for layer in range(depth)}


MANIFESTS = {
    "llama-mean+last-all": {"slot": "llama", "slot_kind": "decoder", "feature_axes": ["row", "pooling", "layer", "hidden"]},
    "roberta-mean+first-all": {"slot": "roberta", "slot_kind": "encoder", "feature_axes": ["row", "pooling", "layer", "hidden"]},
    "roberta": {"slot": "roberta", "slot_kind": "encoder"},
    "tfidf": {"slot": "tfidf", "slot_kind": "lexical"},
}
ROWS = [
    *curve_rows("llama", "llama-mean+last-all", "last", peaked(20, 31, 50.0), 31),
    *curve_rows("llama", "llama-mean+last-all", "mean", peaked(10, 31, 45.0), 31),
    *curve_rows("roberta", "roberta-mean+first-all", "mean", peaked(9, 13, 55.0), 13),
    *curve_rows("roberta", "roberta-mean+first-all", "first", peaked(12, 13, 40.0), 13),
]


def test_a_decoder_gets_near_and_wide_spreads_around_its_best_curves_peak_and_its_runner_up_curve():
    options = search_space(ROWS, "acc", MANIFESTS).sources["llama"]
    folder = "@llama-mean+last-all"
    assert options == [
        OFF,
        f"llama:last:20,{folder}",
        f"llama:last:16,18,20,22,24{folder}",
        f"llama:last:12,16,20,24,28{folder}",
        f"llama:last:18,19,20,21,22{folder}",  # the five best-probed layers
        f"llama:mean:10,{folder}",  # the second-best curve: its peak and near spread
        f"llama:mean:6,8,10,12,14{folder}",
    ]


def test_an_encoder_also_gets_its_layers_from_the_peak_to_the_last_and_keeps_its_published_folder():
    options = search_space(ROWS, "acc", MANIFESTS).sources["roberta"]
    assert options[:2] == [OFF, PUBLISHED_FOLDER]
    assert "roberta:mean:9,10,11,12@roberta-mean+first-all" in options
    assert "roberta:mean:7,9,11@roberta-mean+first-all" in options  # the wide spread
    assert "roberta:first:12,@roberta-mean+first-all" in options


def test_the_lexical_source_is_fused_or_left_out():
    assert search_space(ROWS, "acc", MANIFESTS).sources["tfidf"] == [OFF, PUBLISHED_FOLDER]


def test_the_search_starts_where_the_probes_point_with_the_head_that_won_by_hand():
    near, without_lexical, wide = search_space(ROWS, "acc", MANIFESTS).first
    head = {"raw_inputs": "all", "sigma": 0.001, "lr": 1e-4, "dropout": 0.6}
    assert (
        near
        == {
            "source.llama": "llama:last:16,18,20,22,24@llama-mean+last-all",
            "source.roberta": "roberta:mean:8,9,10@roberta-mean+first-all",
            "source.tfidf": PUBLISHED_FOLDER,
        }
        | head
    )
    assert without_lexical == near | {"source.tfidf": OFF}
    assert wide["source.llama"] == "llama:last:12,16,20,24,28@llama-mean+last-all"
    assert wide["source.roberta"] == "roberta:mean:9,10,11,12@roberta-mean+first-all"  # from the peak to the last
