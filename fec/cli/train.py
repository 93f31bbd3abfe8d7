"""`main.py` (`fec train`): train the fusion classifier on stored features, report test metrics
(mean±std over seeds).

    python main.py -dataset ED                       # the published command line: corrected recipe, one seed
    python main.py --task ED --runs 5                # seeds 0..4, as the paper's 5 runs
    python main.py --task ED --sources llama         # ablation: LLaMA features only
    python main.py --task ED --compat reference      # the published recipe, defects included
    python main.py --task ED --raw_inputs all        # encoders also reach the MLP directly (not published)
    python main.py --task semeval_eng --runs 3       # multi-label: BCE, per-label thresholds tuned on valid
    python main.py --task ED --features llama:mean:-1,-9,-17 roberta:mean:-1   # layers and poolings of variant extractions
    python main.py --task ED --sources llama bert roberta e5 --features e5:mean:-1   # a fourth source (extracted with --slot e5)
    python main.py --task ED --recipe recipes/ED.json --runs 5                # the best recipe found on validation

Reads dataset/{task}/{llama,bert,roberta}/{train,valid,test}.safetensors (made by the three
extraction scripts) and writes one folder per run under Logs/ plus a row in Logs/runs.csv.
test is optional: without it the run reports validation only. Multi-label features (multi-hot
labels in the store) are detected from the manifests and trained with BCE-with-logits.
"""

from __future__ import annotations

import argparse
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fec.classify.cross_validation import chosen_folds, train_seed_cv
from fec.classify.fusion import PN_FORMS, RAW_INPUTS, DownstreamModel
from fec.classify.fusion_inputs import SOURCES, FusionData, load_fusion_data
from fec.classify.fusion_training import (
    SATURATION_LEVEL,
    SeedResult,
    TrainConfig,
    at_chance,
    build_model,
    prior_entropy,
    seed_ensemble,
    step_flops,
    train_seed,
)
from fec.cli.options import (
    THREADS_HELP,
    ArgumentParser,
    Distinct,
    add_fields,
    chosen_seeds,
    command_line_options,
    common_options,
    config_from,
    dropout_rate,
    existing_file,
    flag,
    non_negative_int,
    option_defaults,
    positive_float,
    positive_int,
    probability,
    seed_options,
    slot_name,
    trainer_options,
)
from fec.cli.recipe_file import SEED_OPTIONS, recipe_file_options
from fec.cli.script import run_script
from fec.core.compat_setting import QUIRKS, resolve_compat, training_folders
from fec.core.data import DataError, read_text_column, split_path
from fec.core.errors import UsageError
from fec.core.threads import use_threads
from fec.features.backbones import pick_device
from fec.features.picks import FeaturePick, parse_pick
from fec.runs.folder import save_checkpoint
from fec.runs.training_run import Closing, RunPlan, ScoredSplits, train_run

log = logging.getLogger(__name__)

# The options of TrainConfig's fields; their defaults come from TrainConfig.
TRAIN_OPTIONS = {
    "epochs": dict(type=positive_int, help="maximum number of epochs"),
    "early_stop": dict(
        type=positive_int,
        aliases=("-early-stop", "--early-stop"),
        help="stop after this many epochs without improvement (valid loss down OR valid wF1 up)",
    ),
    "batch_size": dict(type=positive_int, help="training batch size"),
    "lr": dict(type=positive_float, help="Adam learning rate"),
    "sigma": dict(type=positive_float, aliases=("-SIGMA", "--SIGMA"), help="power-normalisation sigma"),
    "pn": dict(
        choices=PN_FORMS,
        help="power normalisation: sigmoid = 2*sigmoid(sigma*P)-1 (published code), tanh = tanh(2*sigma*P) (published README)",
    ),
    "dropout": dict(type=dropout_rate, help="dropout after every hidden layer"),
    "fusion_dim": dict(
        type=positive_int,
        help="width D of the fused vectors (default: the encoders' width, 1024 for the published models; the widest "
        "encoder when they differ)",
    ),
    "raw_inputs": dict(
        choices=RAW_INPUTS,
        help="what the MLP sees beside the pooled Gram matrix: decoder = the layer-mean LLaMA vector (published; the "
        "encoders reach the MLP only through their power-normalised inner products), all = that and every "
        "encoder vector",
    ),
    "eval_batch_size": dict(type=positive_int, help="batch size for validation/test passes"),
    "cv": dict(
        type=non_negative_int,
        help="choose the epoch count (and multi-label thresholds) by K-fold cross-validation on train, then train on all "
        "of train; 0 = select on valid (default: 5 folds when valid has under 1000 rows and under a tenth of train's; "
        "valid is then kept as a check)",
    ),
    "threshold": dict(
        type=probability,
        help="multi-label tasks: one global decision threshold on the sigmoid outputs (e.g. 0.5); default: one "
        "threshold per label, tuned over 0.05..0.95 to maximise that label's F1 on validation (out of fold under --cv)",
    ),
}
# What a recipe file may set: what is trained. Where the data, store and runs are, the device and
# logging stay on the command line, so a file never sends a run's writes somewhere the user did not name.
RECIPE_FILE_OPTIONS = (*TRAIN_OPTIONS, "compat", "llama_pooling", "bert_source", "norm", "sources", "features", *SEED_OPTIONS)
DATA_HELP = "folder holding TASK/MODE.csv: features extracted from another version of a CSV found there are refused as stale"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Train the LLM-FusionClassifier head on stored features. Every option also has its single-dash spelling.",
        parents=[trainer_options(DATA_HELP), seed_options(), common_options()],
    )
    add_fields(parser, TrainConfig, TRAIN_OPTIONS)
    add_compat_options(parser)
    parser.add_argument(*flag("threads"), type=positive_int, default=None, help=THREADS_HELP)
    return parser


def add_compat_options(parser: argparse.ArgumentParser) -> None:
    """The compat switch (the published code's behaviour), the quirks it turns on, and which
    features are fused."""
    parser.add_argument(
        *flag("compat"),
        default="none",
        choices=["none", "reference"],
        help="reference = the published recipe, defects included: -llama_pooling unmasked_padded -bert_source roberta -norm "
        "none -pn sigmoid (explicit options still win)",
    )
    parser.add_argument(
        *flag("llama_pooling"),
        default=None,
        choices=["masked", "unmasked_padded"],
        help="which LLaMA features to read: masked (dataset/TASK/llama/, default) or the published unmasked_padded "
        "(dataset/TASK/llama_unmasked_padded/)",
    )
    parser.add_argument(
        *flag("bert_source"),
        default=None,
        choices=["bert", "roberta"],
        help="features used in BERT's position: bert (default) or roberta, the published loader defect",
    )
    parser.add_argument(
        *flag("norm"),
        default=None,
        choices=["zscore", "none"],
        help="standardise each source per feature with train statistics (zscore, default), or feed raw features as published "
        "(none)",
    )
    parser.add_argument(
        *flag("sources"),
        nargs="+",
        type=slot_name,
        action=Distinct,
        default=list(SOURCES),
        help="slots to fuse, e.g. `llama`, `bert roberta`, or `llama bert roberta e5` with a slot of yours (extracted with "
        "--slot; read through a pick: --features e5:mean:-1). Without a decoder, the raw encoder vectors are concatenated "
        "beside the pooled interactions (a Gram matrix of one or two vectors carries almost nothing)",
    )
    parser.add_argument(
        *flag("features"),
        nargs="+",
        type=pick_argument,
        default=None,
        metavar="SLOT:POOLING:LAYERS[@FOLDER]",
        help="read a source from a variant extraction (--pooling/--layers/--prompt): e.g. llama:mean:-1,-9,-17 (each "
        "decoder layer is a vector of the fusion), roberta:mean:-1,-2 (an encoder's layers are averaged); "
        "@FOLDER names the store folder (needed for prompted ones); slots not named read their published folder",
    )
    parser.add_argument(
        *flag("recipe"),
        type=existing_file,
        default=None,
        help="a JSON file of option values (e.g. recipes/ED.json, the best recipe found on validation); options given "
        "on the command line win",
    )
    parser.add_argument(*flag("dataset_dir"), default="dataset", help="feature store root")


def run(args: argparse.Namespace) -> dict:
    """Resolve the options into what trains (compat quirks, picks, folds: config.json records them as
    resolved), load the features, refuse a bad combination before the run folder exists, train."""
    device = pick_device(args.device)
    compat, quirks = resolve_compat(args.compat, {key: getattr(args, key) for key in QUIRKS}, args.pn)
    picks = distinct_picks(args.features or [], args.sources)
    if picks and compat == "reference":
        raise UsageError("--features with --compat reference: the published code reads the published folders only")
    slot_dirs = training_folders(quirks)
    data = load_fusion_data(args.dataset_dir, args.task, args.sources, slot_dirs=slot_dirs, data_dir=args.data_dir, picks=picks)
    if args.threshold is not None and not data.multilabel:
        log.warning("-threshold applies to multi-label tasks only; %s is single-label, ignored", args.task)
    # The published code selects on valid; elsewhere a small valid split means cross-validation.
    folds = chosen_folds(args.cv, len(data.splits["valid"]), len(data.splits["train"]), 0 if compat == "reference" else None)
    cfg = config_from(TrainConfig, args, threshold=args.threshold if data.multilabel else None, cv=folds, norm=quirks["norm"])
    template = build_model(data, cfg)  # a bad combination fails here, before the run folder exists
    if device.type == "cpu":
        use_threads(args.threads, step_flops(template, cfg.batch_size), "training")
    ran = vars(args) | quirks | {"cv": folds if folds and args.cv is None else args.cv}
    plan = RunPlan(
        task=args.task,
        out=args.out,
        folder_name=args.task,
        method="fusion",
        seeds=chosen_seeds(args),
        sources=data.sources,
        config={
            "args": ran,
            "option_defaults": option_defaults(build_parser()),
            "compat": compat,
            "recipe_file": str(args.recipe) if args.recipe else None,
            "seeds": chosen_seeds(args),
            "train_config": vars(cfg),
            "device": str(device),
            "sources": data.sources,
            "rows": {m: len(s) for m, s in data.splits.items()},
            "feature_manifests": data.manifests,
        },
        splits=ScoredSplits(
            {m: s.labels.cpu().numpy() for m, s in data.splits.items()},
            split_texts(args.data_dir, data),
            data.label_names,
            data.multilabel,
        ),
        model=model_record(data, cfg, template, compat, slot_dirs),
        threshold=cfg.threshold,
        compat=compat,
    )
    return train_run(plan, FusionSeeds(data, cfg, template, device, plan.splits.labels, args.recipe))


@dataclass
class FusionSeeds:
    """The fusion classifier's seeds (`fec.runs.training_run.SeedTrainer`): each trained on the stored
    features, its checkpoint saved, flagged when it never left chance."""

    data: FusionData
    cfg: TrainConfig
    template: DownstreamModel
    device: torch.device
    labels: dict[str, np.ndarray]  # per split, on the CPU: what the seed ensemble is scored against
    recipe_file: Path | None = None

    def start(self, run_dir: Path) -> None:
        for path in self.data.model_files.values():  # a fitted source (lexical) travels with the run
            shutil.copyfile(path, run_dir / path.name)
        log.info("device %s", self.device)
        log.info("model:\n%s", self.template.describe())
        self.data.to(self.device)
        self.chance_loss = None if self.data.multilabel else prior_entropy(self.data.splits["train"].labels)

    def train_seed(self, seed: int, run_dir: Path) -> SeedResult:
        data, cfg = self.data, self.cfg
        result = train_seed_cv(data, cfg, seed, self.device) if cfg.cv else train_seed(data, cfg, seed, self.device)
        save_checkpoint(run_dir, seed, result.state_dict)
        if self.chance_loss is not None:
            result.at_chance = at_chance(result.valid["loss"], self.chance_loss)
        return result

    def log_seed(self, result: SeedResult) -> None:
        log_seed(result, self.data.multilabel, self.cfg, self.template.config["raw_inputs"], self.chance_loss)

    def closing(self, results: list[SeedResult]) -> Closing:
        data, cfg = self.data, self.cfg
        settings = {"sources": "+".join(data.sources)}
        if data.picks:
            settings["features"] = " ".join(p["pick"] for p in data.picks.values())
        settings |= {"norm": cfg.norm, "pn": cfg.pn, "sigma": cfg.sigma} | ({"selection": f"cv{cfg.cv}"} if cfg.cv else {})
        settings |= {"raw_inputs": self.template.config["raw_inputs"], "lr": cfg.lr, "batch_size": cfg.batch_size}
        if self.recipe_file:
            settings["recipe"] = Path(self.recipe_file).name
        return Closing(settings, ensemble=seed_ensemble(results, self.labels, data.multilabel, cfg.threshold))


def pick_argument(text: str) -> FeaturePick:
    """`parse_pick` as an argparse type: its message, after argparse's own prefix naming the option."""
    try:
        return parse_pick(text)
    except UsageError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--features {text}: ") + f" (got {text!r})") from err


def distinct_picks(picks: list[FeaturePick], sources: list[str]) -> dict[str, FeaturePick]:
    chosen: dict[str, FeaturePick] = {}
    for pick in picks:
        if pick.slot not in sources:
            raise UsageError(f"--features {pick.text}: {pick.slot} is not among --sources {' '.join(sources)}")
        if pick.slot in chosen:
            raise UsageError(f"--features {chosen[pick.slot].text} {pick.text}: one pick per slot")
        chosen[pick.slot] = pick
    return chosen


def parse_with_recipe(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The options of `argv`, with a `--recipe` file's values where the command line gives none:
    the command line wins, and its --seeds or --runs replaces the file's seed choice."""
    args = parser.parse_args(argv)
    if not args.recipe:
        return args
    options = recipe_file_options(parser, args.recipe, RECIPE_FILE_OPTIONS)
    given = command_line_options(parser, argv)
    if given & set(SEED_OPTIONS):
        options = {k: v for k, v in options.items() if k not in SEED_OPTIONS}
    return argparse.Namespace(**(vars(args) | {k: v for k, v in options.items() if k not in given}))


def split_texts(data_dir: str, data: FusionData) -> dict[str, list[str]]:
    """Each split's texts from its CSV, for predictions.csv; a split whose CSV no longer matches its
    features row for row is left out (the run page then goes without its examples)."""
    texts = {}
    for mode, split in data.splits.items():
        path = split_path(data_dir, data.task, mode)
        try:
            column, _ = read_text_column(path)
        except (OSError, DataError) as err:
            log.warning("%s: texts not read for the run page (%s)", path, err)
            continue
        if len(column) == len(split.labels):
            texts[mode] = column
        else:
            log.warning("%s: %d rows, its features %d; no example texts on the run page", path, len(column), len(split.labels))
    return texts


def model_record(data: FusionData, cfg: TrainConfig, template, compat: str, slot_dirs: dict[str, str]) -> dict:
    """model.json: what rebuilds the model and its inputs (predict.py and explain.py read it)."""
    spec = {
        "model": template.config,
        "sources": data.sources,
        "label_names": data.label_names,
        "task": data.task,
        "norm": cfg.norm,
        "compat": compat,
        "store_dirs": {s: data.picks[s]["folder"] if s in data.picks else slot_dirs.get(s, s) for s in data.sources},
        "feature_manifests": data.manifests["train"],
        "feature_picks": data.picks,
    }
    if data.multilabel:
        rule = "global" if cfg.threshold is not None else f"per-label, tuned {'out of fold' if cfg.cv else 'on valid'}"
        spec |= {"multilabel": True, "threshold_rule": rule, "thresholds": {}}
    return spec


# The scores a seed's log line shows, single- and multi-label.
SEED_FIGURES = {
    False: {"acc": "acc", "wf1": "wF1", "macro_f1": "macro-F1"},
    True: {"macro_f1": "macro-F1", "micro_f1": "micro-F1", "subset_acc": "subset acc", "jaccard": "Jaccard"},
}
CHANCE_FIXES = {
    "none": "raw LLM features are nearly parallel across texts (a few dimensions hundreds of times larger than the rest): "
    "-norm zscore standardises them",
    "zscore": "try another -lr or -SIGMA",
}


def log_seed(result, multilabel: bool, cfg: TrainConfig, raw_inputs: str, chance_loss: float | None) -> None:
    """A seed's scores, how saturated its pooled values are, and a warning with the likely fix
    when it never left chance."""
    seed, split = result.seed, result.report_split
    shown = result.test if split == "test" else result.valid
    figures = " ".join(f"{name} {shown[key]:.2f}" for key, name in SEED_FIGURES[multilabel].items())
    log.info("seed %d: best epoch %d | %s %s | %.1fs", seed, result.best_epoch, split, figures, result.train_seconds)
    hint = ""
    # A seed at chance gets the warning below instead: saturation is then a symptom, not the cause.
    if result.pn_saturated > 50 and not result.at_chance:
        fixes = "a smaller -SIGMA" + (" or -raw_inputs all" if raw_inputs == "decoder" else "")
        hint = f"; the Gram matrix reaches the MLP as signs: try {fixes}"
    saturated = "seed %d: %.1f%% of the pooled values on valid are saturated (|value| > %.2f)%s"
    log.info(saturated, seed, result.pn_saturated, SATURATION_LEVEL, hint)
    if result.at_chance:
        log.warning(
            "seed %d never left chance: valid loss %.4f, no lower than guessing the train label frequencies (%.4f); %s",
            seed,
            result.valid["loss"],
            chance_loss,
            CHANCE_FIXES[cfg.norm],
        )


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv, parse=parse_with_recipe)
