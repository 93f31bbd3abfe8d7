"""Are an encoder's bfloat16 features as good as its float32 ones? The same folder extracted twice
(`--dtype float32` and `--dtype bfloat16`), compared view by view: the cosine of each row's two
vectors, and the linear probe of the best views on both.

    python roberta_rep_extract.py --task semeval_eng --mode all --layers all --pooling mean first \\
        --preset offline --dtype bfloat16 --dataset_dir /tmp/bf16/dataset
    python -m bench.bf16_features --task semeval_eng --folder roberta-mean+first-all \\
        --float32 dataset --bfloat16 /tmp/bf16/dataset --views 3

Prints one row per view (mean and minimum cosine over train's rows), then, for the `--views` best
views of the float32 features by their probe's selection score, both probes' selection scores (the
probe, C and folds as `probe.py` and `tune.py` choose them). Both extractions store bfloat16 (the
store's variant dtype), so the comparison is of the models' arithmetic, as a user gets it.
"""

from __future__ import annotations

import argparse

import torch

from fec.classify.cross_validation import folds_for
from fec.classify.probing import folder_views, load_folder, matrix, probe_row
from fec.core.metrics import selection_metric


def cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True)
    parser.add_argument("--folder", required=True, help="the store folder extracted in both dtypes")
    parser.add_argument("--float32", required=True, help="store root of the float32 extraction")
    parser.add_argument("--bfloat16", required=True, help="store root of the bfloat16 extraction")
    parser.add_argument("--views", type=int, default=3, help="probe this many best views (by a float32 probe of each)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    roots = {"float32": args.float32, "bfloat16": args.bfloat16}
    stores = {dtype: load_folder(root, args.task, args.folder, ("train", "valid")) for dtype, root in roots.items()}
    views = folder_views(stores["float32"]["train"].manifest, args.folder)
    print("| view | mean cosine | min cosine |\n|---|---|---|")
    for view in views:
        c = cosines(matrix(stores["float32"]["train"], view), matrix(stores["bfloat16"]["train"], view))
        print(f"| {view.pooling} layer {view.layer} | {c.mean():.5f} | {c.min():.5f} |")
    first = stores["float32"]
    multilabel = bool(first["train"].manifest.get("multilabel"))
    metric = f"selection_{selection_metric(multilabel)}"
    folds = folds_for(None, first["valid"].features.shape[0], first["train"].features.shape[0])
    scored = {}
    for view in views:
        x = {mode: matrix(s, view) for mode, s in first.items()}
        scored[view.name] = probe_row(x, first, multilabel, folds, args.seed, "cpu")[metric]
    best = sorted(views, key=lambda v: -scored[v.name])[: args.views]
    print(f"\n| view | float32 {metric} | bfloat16 {metric} |\n|---|---|---|")
    for view in best:
        x = {mode: matrix(s, view) for mode, s in stores["bfloat16"].items()}
        other = probe_row(x, stores["bfloat16"], multilabel, folds, args.seed, "cpu")[metric]
        print(f"| {view.pooling} layer {view.layer} | {scored[view.name]:.2f} | {other:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
