"""Train the fusion classifier on stored features and report test metrics (mean±std over seeds).

    python main.py -dataset ED                       # published recipe, one seed
    python main.py -dataset ED -runs 5               # seeds 0..4, as the paper's 5 runs
    python main.py -dataset ED -sources llama        # ablation: LLaMA features only
    python main.py -dataset ED -norm none            # the published raw (unstandardised) inputs
    python main.py -dataset ED -compat reference     # the published recipe, defects included
    python main.py -dataset ED -raw_inputs all       # encoders also reach the MLP directly (not published)
    python main.py -dataset semeval_eng -runs 3      # multi-label: BCE, per-label thresholds tuned on valid
    python main.py -dataset semeval_eng -threshold 0.5   # multi-label with one global threshold

Reads dataset/{dataset}/{llama,bert,roberta}/{train,valid,test}.safetensors (made by the three
extraction scripts) and writes one folder per run under Logs/ plus a row in Logs/runs.csv.
test is optional: without it the run reports validation only; extract a test.csv added later
(`-mode all` or `-mode test`) and the next run evaluates on it.

Multi-label features (the store records multi-hot labels for CSVs with one 0/1 column per label)
are detected from the manifests and trained with BCE-with-logits; see fec/train.py.
"""

from __future__ import annotations

import argparse
import logging
import sys

from fec.backbones import ModelError, pick_device
from fec.cli import add_common_logging, run_script
from fec.data import DataError
from fec.fusion_data import SOURCES, load_fusion_data
from fec.options import (
    ArgumentParser,
    Distinct,
    add_seed_options,
    chosen_seeds,
    device,
    dropout_rate,
    positive_float,
    positive_int,
    probability,
    task_name,
)
from fec.provenance import provenance
from fec.runlog import finish_run, run_folder, save_checkpoint, write_json, write_results
from fec.store import StoreError
from fec.train import SATURATION_LEVEL, TrainConfig, at_chance, build_model, prior_entropy, train_seed

log = logging.getLogger("fec.main")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Train the LLM-FusionClassifier head on stored features. Single- and double-dash spellings both work.",
    )
    parser.add_argument("-dataset", "--dataset", type=task_name, required=True, help="task name: features are read from DATASET_DIR/DATASET/")
    parser.add_argument("-device", "--device", type=device, default="auto", help="cuda, cpu, or auto (cuda when available)")
    parser.add_argument("-epochs", "--epochs", type=positive_int, default=200, help="maximum number of epochs")
    parser.add_argument("-early-stop", "--early-stop", "-early_stop", dest="early_stop", type=positive_int, default=10, help="stop after this many epochs without improvement (valid loss down OR valid wF1 up)")
    parser.add_argument("-batch_size", "--batch_size", type=positive_int, default=10, help="training batch size")
    parser.add_argument("-lr", "--lr", type=positive_float, default=1e-4, help="Adam learning rate")
    parser.add_argument("-SIGMA", "--SIGMA", "-sigma", dest="sigma", type=positive_float, default=1.0, help="power-normalisation sigma")
    parser.add_argument("-compat", "--compat", default="none", choices=["none", "reference"], help="reference = the published recipe, defects included: -llama_pooling unmasked_padded -bert_source roberta -norm none -pn sigmoid (explicit options still win)")
    parser.add_argument("-llama_pooling", "--llama_pooling", default=None, choices=["masked", "unmasked_padded"], help="which LLaMA features to read: masked (dataset/TASK/llama/, default) or the published unmasked_padded (dataset/TASK/llama_unmasked_padded/)")
    parser.add_argument("-bert_source", "--bert_source", default=None, choices=["bert", "roberta"], help="features used in BERT's position: bert (default) or roberta, the published loader defect")
    parser.add_argument("-pn", "--pn", default="sigmoid", choices=["sigmoid", "tanh"], help="power normalisation: sigmoid = 2*sigmoid(sigma*P)-1 (published code), tanh = tanh(2*sigma*P) (published README)")
    parser.add_argument("-dropout", "--dropout", type=dropout_rate, default=0.5, help="dropout after every hidden layer")
    parser.add_argument("-fusion_dim", "--fusion_dim", type=positive_int, default=None, help="width D of the fused vectors (default: the encoders' width, 1024 for the published models; the widest encoder when they differ)")
    parser.add_argument("-raw_inputs", "--raw_inputs", default="decoder", choices=["decoder", "all"], help="what the MLP sees beside the pooled Gram matrix: decoder = the layer-mean LLaMA vector (published; the encoders reach the MLP only through their power-normalised inner products), all = that and every encoder vector")
    parser.add_argument("-norm", "--norm", default=None, choices=["zscore", "none"], help="standardise each source per feature with train statistics (zscore, default), or feed raw features as published (none)")
    parser.add_argument("-sources", "--sources", nargs="+", action=Distinct, default=list(SOURCES), choices=SOURCES, help="feature sets to fuse, e.g. `llama`, `bert roberta`. Without llama, the raw encoder vectors are concatenated beside the pooled interactions (a Gram matrix of one or two vectors carries almost nothing)")
    add_seed_options(parser)
    parser.add_argument("-eval_batch_size", "--eval_batch_size", type=positive_int, default=2048, help="batch size for validation/test passes")
    parser.add_argument("-threshold", "--threshold", type=probability, default=None, help="multi-label tasks: one global decision threshold on the sigmoid outputs (e.g. 0.5); default: one threshold per label, tuned on validation over 0.05..0.95 to maximise that label's F1")
    parser.add_argument("-dataset_dir", "--dataset_dir", default="dataset", help="feature store root")
    parser.add_argument("-data_dir", "--data_dir", default="data", help="folder holding DATASET/MODE.csv: features extracted from another version of a CSV found there are refused as stale")
    parser.add_argument("-out", "--out", default="Logs", help="folder for run folders and runs.csv")
    add_common_logging(parser)
    return parser


CORRECTED = {"llama_pooling": "masked", "bert_source": "bert", "norm": "zscore"}
REFERENCE = {"llama_pooling": "unmasked_padded", "bert_source": "roberta", "norm": "none"}


def apply_compat(args: argparse.Namespace) -> str:
    """Fill unset quirk options from -compat; return the run's mode for Logs/runs.csv:
    `corrected`, `reference`, or `custom:` plus the quirks that are on."""
    base = REFERENCE if args.compat == "reference" else CORRECTED
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.compat == "reference" and args.pn != "sigmoid":
        log.warning("-compat reference with -pn %s: the published code used sigmoid", args.pn)
    quirks = [f"{k}={getattr(args, k)}" for k, v in CORRECTED.items() if getattr(args, k) != v]
    if not quirks:
        return "corrected"
    if len(quirks) == len(REFERENCE) and args.pn == "sigmoid":
        return "reference"
    return "custom:" + "+".join(quirks)


def run(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    seeds = chosen_seeds(args)
    mode = apply_compat(args)
    slot_dirs = {"bert": args.bert_source}
    if args.llama_pooling != "masked":
        slot_dirs["llama"] = f"llama_{args.llama_pooling}"
    data = load_fusion_data(args.dataset_dir, args.dataset, args.sources, slot_dirs=slot_dirs, data_dir=args.data_dir)
    if args.threshold is not None and not data.multilabel:
        log.warning("-threshold applies to multi-label tasks only; %s is single-label, ignored", args.dataset)
    cfg = TrainConfig(
        epochs=args.epochs, early_stop=args.early_stop, batch_size=args.batch_size, lr=args.lr, sigma=args.sigma,
        pn=args.pn, dropout=args.dropout, norm=args.norm, fusion_dim=args.fusion_dim, raw_inputs=args.raw_inputs,
        eval_batch_size=args.eval_batch_size,
        threshold=args.threshold if data.multilabel else None,
    )
    template = build_model(data, cfg)  # a bad combination fails here, before the run folder exists
    with run_folder(args.out, args.dataset) as run_dir:
        return train_run(args, run_dir, data, cfg, template, seeds, mode, slot_dirs, device)


def train_run(args: argparse.Namespace, run_dir, data, cfg: TrainConfig, template, seeds: list[int], mode: str,
              slot_dirs: dict[str, str], device) -> dict:
    """Train every seed into `run_dir` and write the run's files (config, model spec, results)."""
    log.info("run folder %s; mode %s; device %s; seeds %s", run_dir, mode, device, seeds)
    log.info("model:\n%s", template.describe())
    write_json(run_dir / "config.json", {
        "args": vars(args), "mode": mode, "seeds": seeds, "train_config": vars(cfg), "device": str(device),
        "sources": data.sources, "rows": {m: len(s) for m, s in data.splits.items()},
        "feature_manifests": data.manifests, **provenance(),
    })
    model_spec = {
        "model": template.config, "sources": data.sources, "label_names": data.label_names, "task": data.task,
        "norm": cfg.norm, "store_dirs": {s: slot_dirs.get(s, s) for s in data.sources}, "mode": mode,
        "feature_manifests": data.manifests["train"],
    }
    if data.multilabel:
        model_spec |= {"multilabel": True, "threshold_rule": "global" if cfg.threshold is not None else "per-label, tuned on valid",
                       "thresholds": {}}
    write_json(run_dir / "model.json", model_spec)
    data.to(device)
    chance_loss = None if data.multilabel else prior_entropy(data.splits["train"].labels)
    results = []
    for seed in seeds:
        result = train_seed(data, cfg, seed, device)
        save_checkpoint(run_dir, seed, result.state_dict)
        if data.multilabel:
            # Thresholds belong to the checkpoint they were tuned for: predict.py reads them from here.
            model_spec["thresholds"][str(seed)] = result.thresholds
            write_json(run_dir / "model.json", model_spec)
        if chance_loss is not None:
            result.at_chance = at_chance(result.valid["loss"], chance_loss)
        log_seed(result, data.multilabel, cfg, template.config["raw_inputs"], chance_loss)
        results.append(result)
        write_results(run_dir, data.task, results, sources=data.sources, multilabel=data.multilabel, finished=False)
    settings = {"sources": "+".join(data.sources), "mode": mode, "norm": cfg.norm, "pn": cfg.pn,
                "sigma": cfg.sigma, "raw_inputs": template.config["raw_inputs"], "lr": cfg.lr, "batch_size": cfg.batch_size, "seeds": " ".join(map(str, seeds))}
    labels = {m: s.labels.cpu().numpy() for m, s in data.splits.items()}
    return finish_run(run_dir, args.out, data.task, results, sources=data.sources, labels=labels, label_names=data.label_names,
                      multilabel=data.multilabel, threshold=cfg.threshold, settings=settings)


def log_seed(result, multilabel: bool, cfg: TrainConfig, raw_inputs: str, chance_loss: float | None) -> None:
    """A seed's scores, how saturated its pooled values are, and a warning with the likely fix
    when it never left chance."""
    seed, shown, split = result.seed, result.test or result.valid, "test" if result.test else "valid"
    if multilabel:
        log.info("seed %d: best epoch %d | %s macro-F1 %.2f micro-F1 %.2f subset acc %.2f Jaccard %.2f | %.1fs",
                 seed, result.best_epoch, split, shown["macro_f1"], shown["micro_f1"], shown["subset_acc"],
                 shown["jaccard"], result.train_seconds)
    else:
        log.info("seed %d: best epoch %d | %s acc %.2f wF1 %.2f macro-F1 %.2f | %.1fs", seed, result.best_epoch,
                 split, shown["acc"], shown["wf1"], shown["macro_f1"], result.train_seconds)
    hint = ""
    # A seed at chance gets the warning below instead: saturation is then a symptom, not the cause.
    if result.pn_saturated > 50 and not result.at_chance:
        fixes = "a smaller -SIGMA" + (" or -raw_inputs all" if raw_inputs == "decoder" else "")
        hint = f"; the Gram matrix reaches the MLP as signs: try {fixes}"
    log.info("seed %d: %.1f%% of the pooled values on valid are saturated (|value| > %.2f)%s", seed,
             result.pn_saturated, SATURATION_LEVEL, hint)
    if result.at_chance:
        why = ("; raw LLM features are nearly parallel across texts (a few dimensions hundreds of times larger "
               "than the rest): -norm zscore standardises them" if cfg.norm == "none" else "; try another -lr or -SIGMA")
        log.warning("seed %d never left chance: valid loss %.4f, no lower than guessing the train label frequencies (%.4f)%s",
                    seed, result.valid["loss"], chance_loss, why)


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, (StoreError, ModelError, DataError), argv)


if __name__ == "__main__":
    sys.exit(main())
