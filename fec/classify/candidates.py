"""The recipe search's candidates, read off the probe curves instead of a fixed list.

    from fec.classify.candidates import search_space
    space = search_space(probe_rows, "acc", manifests)
    space.sources["llama"]   # ['off', 'published', 'llama:mean:19,@llama-mean+last-all', 'llama:mean:15,17,19,21,23@...', ...]

Per source (a slot of the store), the probes say which folder and pooling carry the most (the
best view of each curve) and where along the depth its peak is. The options for that source are
a few layer sets around the peak of its best curve (the peak alone, a near and a wide spread
around it, the best-probed layers; for an encoder also every layer from the peak to the last),
and the peak and near spread of its second-best curve (another pooling or prompt), each a
`--features` pick; its published folder, when the store has one (the lexical source has only
that); and `off`, so the search can drop a source that does not help. A decoder's picked layers are each a
vector of the fusion; an encoder's are averaged into one (`fec.features.picks`). The head's
options are a small grid around what worked by hand on the stand-ins (docs/features.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fec.core.slots import LEXICAL_SLOT, slot_kind

OFF = "off"  # the source is left out
PUBLISHED_FOLDER = "published"  # the source's published folder (its published pooling and layers)
HEAD_GRID = {"raw_inputs": ["decoder", "all"], "sigma": [1.0, 0.001], "lr": [1e-4, 2.5e-4], "dropout": [0.5, 0.6]}
# The head that won by hand on all three tasks (docs/features.md): the search's first candidates use it.
HEAD_PRIOR = {"raw_inputs": "all", "sigma": 0.001, "lr": 1e-4, "dropout": 0.6}
# Layers around a curve's peak, near and wide: a decoder's each its own vector, an encoder's averaged.
SPREADS = {"decoder": ((-4, -2, 0, 2, 4), (-8, -4, 0, 4, 8)), "encoder": ((-1, 0, 1), (-2, 0, 2))}
TOP_LAYERS = {"decoder": 5, "encoder": 3}


@dataclass(frozen=True)
class Curve:
    """One probe curve: a variant folder's pooling, its score at each probed layer."""

    slot: str
    folder: str
    pooling: str
    scores: dict[int, float]  # absolute layer index -> selection score

    @property
    def peak(self) -> int:
        return max(self.scores, key=lambda layer: (self.scores[layer], -layer))


@dataclass
class SearchSpace:
    """What the search chooses from: per source its options, and the head's grid; `first`, the
    candidates the probes point at, tried before the sampler chooses (each a choice per source
    and head option, as `fec.classify.search.candidate` names them)."""

    sources: dict[str, list[str]]
    head: dict[str, list] = field(default_factory=lambda: {k: list(v) for k, v in HEAD_GRID.items()})
    first: list[dict] = field(default_factory=list)

    def size(self) -> int:
        count = 1
        for options in [*self.sources.values(), *self.head.values()]:
            count *= len(options)
        return count


def curves(rows: list[dict], metric: str) -> list[Curve]:
    """The probe rows of variant folders (absolute layer indices), one curve per folder and pooling."""
    found: dict[tuple[str, str, str], dict[int, float]] = {}
    for row in rows:
        if row.get("num_hidden_states") in (None, "") or row["folder"] == "combined":
            continue  # a published folder's views have no absolute depth
        key = (row["slot"], row["folder"], row["pooling"])
        found.setdefault(key, {})[int(row["layer"])] = float(row[f"selection_{metric}"])
    return [Curve(slot, folder, pooling, scores) for (slot, folder, pooling), scores in found.items()]


def named_layer_sets(curve: Curve, kind: str) -> dict[str, list[int]]:
    """The layer sets read off a curve, by name: its `peak` alone, a `near` and a `wide` spread
    around it, its `best`-probed layers, and for an encoder every layer from the peak `to_last`."""
    peak, available = curve.peak, set(curve.scores)
    near, wide = ([peak + step for step in spread if peak + step in available] for spread in SPREADS[kind])
    sets = {"peak": [peak], "near": near, "wide": wide}
    sets["best"] = sorted(curve.scores, key=lambda layer: -curve.scores[layer])[: TOP_LAYERS[kind]]
    if kind == "encoder":
        sets["to_last"] = [layer for layer in available if layer >= peak]
    return {name: sorted(set(layers)) for name, layers in sets.items()}


def layer_sets(curve: Curve, kind: str, runner_up: bool = False) -> list[list[int]]:
    """A few layer sets around the curve's peak (`named_layer_sets`; a `runner_up` curve: the peak
    and the near spread only); each set in depth order, duplicates dropped."""
    named = named_layer_sets(curve, kind)
    unique: list[list[int]] = []
    for name, layers in named.items():
        if runner_up and name not in ("peak", "near"):
            continue
        if layers and layers not in unique:
            unique.append(layers)
    return unique


def pick_text(curve: Curve, layers: list[int]) -> str:
    """The `--features` pick of these layers of the curve's folder (one index is written `12,`,
    since a lone number is a count of last layers)."""
    indices = ",".join(map(str, layers)) + ("," if len(layers) == 1 else "")
    return f"{curve.slot}:{curve.pooling}:{indices}@{curve.folder}"


def search_space(rows: list[dict], metric: str, manifests: dict[str, dict]) -> SearchSpace:
    """The options of every source the store holds (`manifests`: folder -> its train manifest),
    from the probe `rows` scored by `metric`."""
    by_slot: dict[str, list[Curve]] = {}
    for curve in curves(rows, metric):
        by_slot.setdefault(curve.slot, []).append(curve)
    published = {m["slot"] for folder, m in manifests.items() if m.get("feature_axes") is None and folder == m["slot"]}
    sources, leads = {}, {}
    for slot in sorted(set(by_slot) | set(published)):
        options = [OFF] + ([PUBLISHED_FOLDER] if slot in published else [])
        ranked = sorted(by_slot.get(slot, []), key=lambda c: -c.scores[c.peak])
        for rank, curve in enumerate(ranked[:2]):
            kind = slot_kind(manifests[curve.folder])
            options += [pick_text(curve, layers) for layers in layer_sets(curve, kind, runner_up=rank > 0)]
        sources[slot] = list(dict.fromkeys(options))
        if ranked:
            leads[slot] = lead_options(ranked[0], slot_kind(manifests[ranked[0].folder]))
        else:  # no probe curve: the published folder alone
            leads[slot] = (PUBLISHED_FOLDER, PUBLISHED_FOLDER)
    return SearchSpace(sources, first=first_candidates(leads))


def lead_options(curve: Curve, kind: str) -> tuple[str, str]:
    """The source's options in the first candidates: its best curve's near spread, and its wide
    spread (an encoder: its layers from the peak to the last)."""
    named = named_layer_sets(curve, kind)
    return pick_text(curve, named["near"]), pick_text(curve, named["to_last" if kind == "encoder" else "wide"])


def first_candidates(leads: dict[str, tuple[str, str]]) -> list[dict]:
    """What the probes point at, with the hand-won head: every source at its near spread; the
    same without the lexical source (does it help?); every source at its wide spread."""
    near = {f"source.{slot}": options[0] for slot, options in leads.items()} | HEAD_PRIOR
    wide = {f"source.{slot}": options[1] for slot, options in leads.items()} | HEAD_PRIOR
    without_lexical = near | {f"source.{LEXICAL_SLOT}": OFF} if LEXICAL_SLOT in leads else near
    return [dict(c) for c in dict.fromkeys(tuple(c.items()) for c in (near, without_lexical, wide))]
