"""Train the fusion classifier on a task's stored features: one run folder, its seeds, test metrics
(mean±std over seeds).

    import fec
    run = fec.train("ED")                                          # python main.py -dataset ED
    run = fec.train("ED", runs=5)                                  # seeds 0..4, as the paper's 5 runs
    run = fec.train("ED", sources=["llama"])                       # ablation: LLaMA features only
    run = fec.train("ED", compat="reference")                      # the published recipe, defects included
    run = fec.train("ED", features=["llama:mean:-1,-9,-17", "roberta:mean:-1"])   # layers and poolings of variants
    run = fec.train("ED", recipe="recipes/ED.json", runs=5, lr=1e-3)   # a recipe file; the keywords win
    run.metrics["test"]["acc"], run.classifier().predict(["I finally got the job!"])

Reads dataset/{task}/{llama,bert,roberta}/{train,valid,test}.safetensors (made by the extractions)
and writes one folder per run under Logs/ plus a row in Logs/runs.csv (`fec.runs.training_run`).
test is optional: without it the run reports validation only. Multi-label features (multi-hot
labels in the store) are detected from the manifests and trained with BCE-with-logits. The loop
itself is `fec.classify.fusion_training`; the command is `fec train` (main.py).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fec.api.recipe_file import SEED_SETTINGS, recipe_file_values
from fec.api.run import Run
from fec.api.trainer_settings import TrainerSettings
from fec.classify.cross_validation import chosen_folds, train_seed_cv
from fec.classify.fusion import PN_FORMS, RAW_INPUTS, DownstreamModel
from fec.classify.fusion_inputs import SOURCES, FusionData, load_fusion_data
from fec.classify.fusion_training import (
    SATURATION_LEVEL,
    SeedResult,
    TrainConfig,
    at_chance,
    build_model,
    mean_probabilities,
    prior_entropy,
    seed_ensemble,
    step_flops,
    train_seed,
)
from fec.core.compat_setting import QUIRKS, resolve_compat, training_folders
from fec.core.data import read_text_column, split_path
from fec.core.errors import DataError, UsageError
from fec.core.settings import (
    BadValue,
    documented,
    dropout_rate,
    existing_file,
    given_path,
    given_record,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
    problem_check,
    setting,
)
from fec.core.threads import use_threads
from fec.features.backbones import pick_device
from fec.features.picks import FeaturePick, parse_pick
from fec.features.store_slots import slot_name_problem
from fec.runs.folder import save_checkpoint
from fec.runs.output_rule import check_outputs
from fec.runs.predictions import write_probabilities
from fec.runs.training_run import Closing, RunPlan, ScoredSplits, train_run

log = logging.getLogger(__name__)
TRAINING = TrainConfig()  # the defaults of the loop's settings, written once in fec.classify.fusion_training


def feature_pick(value) -> str:
    """A pick `SLOT:POOLING:LAYERS[@FOLDER]` (`fec.features.picks.parse_pick`), as its text: the
    text a run records and prediction reads back."""
    if not isinstance(value, str):
        raise BadValue(f"write SLOT:POOLING:LAYERS[@FOLDER], e.g. llama:mean:-1,-9 (got {value!r})")
    try:
        return parse_pick(value).text
    except UsageError as err:
        raise BadValue(str(err).removeprefix(f"--features {value}: ") + f" (got {value!r})") from None


@dataclass(kw_only=True)
class TrainSettings(TrainerSettings):
    """What `fec.train` trains and where it writes (`python main.py -h` lists the same settings as options)."""

    data_dir: Path = setting(
        Path("data"),
        check=given_path,
        help="folder holding TASK/MODE.csv: features extracted from another version of a CSV found there are refused as stale",
    )
    epochs: int = setting(TRAINING.epochs, check=positive_int, help="maximum number of epochs")
    early_stop: int = setting(
        TRAINING.early_stop,
        check=positive_int,
        help="stop after this many epochs without improvement (valid loss down OR valid wF1 up)",
    )
    batch_size: int = setting(TRAINING.batch_size, check=positive_int, help="training batch size")
    lr: float = setting(TRAINING.lr, check=positive_float, help="Adam learning rate")
    sigma: float = setting(TRAINING.sigma, check=positive_float, help="power-normalisation sigma")
    pn: str = setting(
        TRAINING.pn,
        choices=PN_FORMS,
        help="power normalisation: sigmoid = 2*sigmoid(sigma*P)-1 (published code), tanh = tanh(2*sigma*P) (published README)",
    )
    dropout: float = setting(TRAINING.dropout, check=dropout_rate, help="dropout after every hidden layer")
    fusion_dim: int | None = setting(
        TRAINING.fusion_dim,
        check=positive_int,
        help="width D of the fused vectors (default: the encoders' width, 1024 for the published models; the widest "
        "encoder when they differ)",
    )
    raw_inputs: str = setting(
        TRAINING.raw_inputs,
        choices=RAW_INPUTS,
        help="what the MLP sees beside the pooled Gram matrix: decoder = the layer-mean LLaMA vector (published; the "
        "encoders reach the MLP only through their power-normalised inner products), all = that and every "
        "encoder vector",
    )
    eval_batch_size: int = setting(TRAINING.eval_batch_size, check=positive_int, help="batch size for validation/test passes")
    cv: int | None = setting(
        TRAINING.cv,
        check=non_negative_int,
        help="choose the epoch count (and multi-label thresholds) by K-fold cross-validation on train, then train on all "
        "of train; 0 = select on valid (default: 5 folds when valid has under 1000 rows and under a tenth of train's; "
        "valid is then kept as a check)",
    )
    threshold: float | None = setting(
        TRAINING.threshold,
        check=probability,
        help="multi-label tasks: one global decision threshold on the sigmoid outputs (e.g. 0.5); default: one "
        "threshold per label, tuned over 0.05..0.95 to maximise that label's F1 on validation (out of fold under --cv)",
    )
    compat: str = setting(
        "none",
        choices=["none", "reference"],
        help="reference = the published recipe, defects included: -llama_pooling unmasked_padded -bert_source roberta -norm "
        "none -pn sigmoid (explicit options still win)",
    )
    llama_pooling: str | None = setting(
        None,
        choices=["masked", "unmasked_padded"],
        help="which LLaMA features to read: masked (dataset/TASK/llama/, default) or the published unmasked_padded "
        "(dataset/TASK/llama_unmasked_padded/)",
    )
    bert_source: str | None = setting(
        None,
        choices=["bert", "roberta"],
        help="features used in BERT's position: bert (default) or roberta, the published loader defect",
    )
    norm: str | None = setting(
        None,
        choices=["zscore", "none"],
        help="standardise each source per feature with train statistics (zscore, default), or feed raw features as published "
        "(none)",
    )
    sources: list[str] = setting(
        list(SOURCES),
        check=problem_check(slot_name_problem),
        many=True,
        help="slots to fuse, e.g. `llama`, `bert roberta`, or `llama bert roberta e5` with a slot of yours (extracted with "
        "--slot; read through a pick: --features e5:mean:-1). Without a decoder, the raw encoder vectors are concatenated "
        "beside the pooled interactions (a Gram matrix of one or two vectors carries almost nothing)",
    )
    features: list[str] | None = setting(
        None,
        check=feature_pick,
        many=True,
        help="read a source from a variant extraction (--pooling/--layers/--prompt): e.g. llama:mean:-1,-9,-17 (each "
        "decoder layer is a vector of the fusion), roberta:mean:-1,-2 (an encoder's layers are averaged); "
        "@FOLDER names the store folder (needed for prompted ones); slots not named read their published folder",
    )
    recipe: Path | None = setting(
        None,
        check=existing_file,
        help="a JSON file of option values (e.g. recipes/ED.json, the best recipe found on validation); options given "
        "on the command line (keywords of fec.train) win",
    )
    dataset_dir: Path = setting(Path("dataset"), check=given_path, help="feature store root")
    threads: int | None = setting(
        None,
        check=positive_int,
        help="CPU threads (default: from the work per step and the cores other jobs leave free, logged; fec.core.threads)",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.feature_picks()  # one pick per slot, each among the sources: refused before any work

    def feature_picks(self) -> dict[str, FeaturePick]:
        """The picks of `features` by slot: one per slot, each slot one of `sources`."""
        chosen: dict[str, FeaturePick] = {}
        for pick in map(parse_pick, self.features or []):
            if pick.slot not in self.sources:
                raise UsageError(f"--features {pick.text}: {pick.slot} is not among --sources {' '.join(self.sources)}")
            if pick.slot in chosen:
                raise UsageError(f"--features {chosen[pick.slot].text} {pick.text}: one pick per slot")
            chosen[pick.slot] = pick
        return chosen


# What a recipe file may set: what is trained. Where the data, store and runs are, the device and
# threads are given beside it, so a file never sends a run's writes somewhere the user did not name.
RECIPE_SETTINGS = (
    "epochs",
    "early_stop",
    "batch_size",
    "lr",
    "sigma",
    "pn",
    "dropout",
    "fusion_dim",
    "raw_inputs",
    "eval_batch_size",
    "cv",
    "threshold",
    "compat",
    "llama_pooling",
    "bert_source",
    "norm",
    "sources",
    "features",
    *SEED_SETTINGS,
)


def recipe_values(path: Path | str) -> dict:
    """A recipe file's values for `fec.train` (`fec.api.recipe_file`), each checked as its setting is."""
    return recipe_file_values(path, TrainSettings, RECIPE_SETTINGS)


def with_recipe(recipe: Path | str | None, given: dict) -> TrainSettings:
    """The settings of a run: the `given` ones, and a recipe file's values for the others; seeds or
    runs given replace the file's seed choice."""
    values = recipe_values(recipe) if recipe is not None else {}
    if given.keys() & set(SEED_SETTINGS):
        values = {name: value for name, value in values.items() if name not in SEED_SETTINGS}
    return TrainSettings(**(values | given), recipe=recipe)


@documented(TrainSettings)
def train(task: str | None = None, *, recipe: Path | str | None = None, settings: TrainSettings | None = None, **options) -> Run:
    """Train the fusion classifier on a task's stored features; the finished run folder.

    run = fec.train("ED", recipe="recipes/ED.json", runs=5)   # python main.py --task ED --recipe recipes/ED.json --runs 5
    """
    settings = given_record(TrainSettings, settings, task=task, recipe=recipe, **options) or with_recipe(
        recipe, {"task": task, **options}
    )
    check_outputs(settings)
    device = pick_device(settings.device)
    compat, quirks = resolve_compat(settings.compat, {key: getattr(settings, key) for key in QUIRKS}, settings.pn)
    picks = settings.feature_picks()
    if picks and compat == "reference":
        raise UsageError("--features with --compat reference: the published code reads the published folders only")
    slot_dirs = training_folders(quirks)
    data = load_fusion_data(
        settings.dataset_dir, settings.task, settings.sources, slot_dirs=slot_dirs, data_dir=settings.data_dir, picks=picks
    )
    if settings.threshold is not None and not data.multilabel:
        log.warning("-threshold applies to multi-label tasks only; %s is single-label, ignored", settings.task)
    # The published code selects on valid; elsewhere a small valid split means cross-validation.
    folds = chosen_folds(settings.cv, len(data.splits["valid"]), len(data.splits["train"]), 0 if compat == "reference" else None)
    loop = {field.name: getattr(settings, field.name) for field in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(
        **loop | {"threshold": settings.threshold if data.multilabel else None, "cv": folds, "norm": quirks["norm"]}
    )
    template = build_model(data, cfg)  # a bad combination fails here, before the run folder exists
    if device.type == "cpu":
        use_threads(settings.threads, step_flops(template, cfg.batch_size), "training")
    plan = RunPlan(
        task=settings.task,
        out=settings.out,
        folder_name=settings.task,
        method="fusion",
        seeds=settings.chosen_seeds(),
        sources=data.sources,
        config={
            # as resolved: the quirks the compat switch turned on, the folds the data decided
            "args": settings.record() | quirks | {"cv": folds if folds and settings.cv is None else settings.cv},
            "option_defaults": TrainSettings.defaults(),
            "compat": compat,
            "recipe_file": str(settings.recipe) if settings.recipe else None,
            "seeds": settings.chosen_seeds(),
            "train_config": vars(cfg),
            "device": str(device),
            "sources": data.sources,
            "rows": {m: len(s) for m, s in data.splits.items()},
            "feature_manifests": data.manifests,
        },
        splits=ScoredSplits(
            {m: s.labels.cpu().numpy() for m, s in data.splits.items()},
            split_texts(settings.data_dir, data),
            data.label_names,
            data.multilabel,
        ),
        model=model_record(data, cfg, template, compat, slot_dirs),
        threshold=cfg.threshold,
        compat=compat,
    )
    finished = train_run(plan, FusionSeeds(data, cfg, template, device, plan.splits.labels, settings.recipe))
    return Run(Path(finished["run_dir"]))


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
        self.run_dir = run_dir
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
        write_probabilities(self.run_dir, mean_probabilities(results))
        return Closing(settings, ensemble=seed_ensemble(results, self.labels, data.multilabel, cfg.threshold))


def split_texts(data_dir: Path | str, data: FusionData) -> dict[str, list[str]]:
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
