"""`tune.py` (`fec tune`): from a task's store to its best fusion recipe, searched automatically and
honestly: test is read once, by the final run of the chosen recipe.

    python tune.py --task ED                                   # search what dataset/ED/ holds, 30 min budget
    python tune.py --task mine --extract --preset offline      # first extract the default search space
    python tune.py --task ED --budget_minutes 90 --save recipes/ED_tuned.json
    python tune.py --task ED --resume Logs/tune_ED_20261205-190000   # continue an interrupted search

Steps: (1) with --extract, every layer of every slot with two poolings (mean and last for the
decoder, mean and first for the encoders) and the decoder's PromptEOL prompt, resumable like any
extraction, and the lexical source (`fec.classify.lexical`: TF-IDF probabilities, train's out of
fold); (2) a linear probe of every view on train and valid (`fec.classify.probing`; a probe
run of the same store and selection is reused); (3) candidates from the probe curves
(`fec.classify.candidates`), searched by Optuna with successive halving over seeds
(`fec.classify.search`) on valid, or by cross-validation on train when valid is small; (4) the
chosen recipe written as a recipe file and trained with --final_seeds seeds by main.py into a run
folder of its own, which `report.py` lists beside the others. The search folder is
`Logs/tune_{task}_{stamp}/` (`fec.runs.tune_folder`).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import optuna
import pandas as pd

from fec.classify.candidates import search_space
from fec.classify.cross_validation import chosen_folds
from fec.classify.fusion_training import TrainConfig
from fec.classify.lexical import LexicalSettings
from fec.classify.lexical_store import store_lexical_source
from fec.classify.linear_probe import selection_metric
from fec.classify.probing import probe_rows, store_fingerprint, store_folders
from fec.classify.search import (
    SEARCH_MODES,
    Search,
    absolute_url,
    check_storage,
    check_study_file,
    open_study,
    recipe_options,
    run_search,
    shown_url,
    sqlite_file,
)
from fec.cli import extract, train
from fec.cli.options import (
    COMPILE_HELP,
    THREADS_HELP,
    ArgumentParser,
    common_options,
    existing_dir,
    flag,
    non_negative_int,
    option_defaults,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    slot_models,
    task_name,
)
from fec.cli.outputs import command_inputs, output_problem
from fec.cli.script import run_script
from fec.core.errors import FecError, SettingError, StudyError, UsageError
from fec.core.files import atomic_write
from fec.core.logs import also_log_to
from fec.core.provenance import provenance
from fec.core.slots import SLOT_NAMES
from fec.features.backbones import DTYPES, pick_device
from fec.features.config import ExtractionConfig
from fec.features.extract import checked_splits
from fec.features.extract import run as run_extraction
from fec.features.standins import PRESETS
from fec.features.store import StoreError, read_manifest
from fec.features.store_slots import store_manifests
from fec.runs.folder import make_run_dir, write_json
from fec.runs.run_files import Fields, RunFileError, read_run_json
from fec.runs.tune_folder import (
    STUDY_FILE,
    candidate_rows,
    found_by,
    read_search_record,
    search_differences,
    store_differences,
    write_candidates,
    write_recipe,
    write_search_record,
    write_tune_page,
)

log = logging.getLogger(__name__)

PROMPTEOL = 'This sentence : "{text}" means in one word:"'
# The default search space's extractions per slot: every layer, two poolings; the decoder also prompted.
EXTRACTIONS = {
    "llama": [["--pooling", "mean", "last"], ["--pooling", "last", "--prompt", PROMPTEOL]],
    "bert": [["--pooling", "mean", "first"]],
    "roberta": [["--pooling", "mean", "first"]],
}
# What a probe.py run's config.json must hold to be reused.
PROBE_CONFIG = Fields(optional={"store": dict, "setup": dict, "args": dict, "cv": int, "seed": int})
# How every candidate trains (main.py's options); batch 64 and early stop 10 are the CPU recipe of the demo.
TRAINING = {"epochs": 200, "early_stop": 10, "batch_size": 64}
DEFAULT_BUDGET_MINUTES = 30.0  # sized for a 2-core CPU
# The search's own settings; with --resume, a setting not given is the resumed search's.
SEARCH_DEFAULTS = {"seed": 0, "max_seeds": 3}
PLACES = ("data_dir", "dataset_dir", "out")  # where a search reads and writes: a resume command names them


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        description="Search the best fusion recipe of a task's stored features (Optuna, successive halving over seeds), "
        "then train it. Every option also has its single-dash spelling.",
        parents=[common_options()],
    )
    parser.add_argument(*flag("task"), type=task_name, required=True, help="task folder, e.g. ED, go_emotion, semeval_eng")
    parser.add_argument(*flag("data_dir"), default="data", help="folder holding TASK/MODE.csv")
    parser.add_argument(*flag("dataset_dir"), default="dataset", help="feature store root")
    parser.add_argument(*flag("out"), type=output_dir, default="Logs", help="where the search folder and the final run go")
    add_extraction_options(parser)
    add_search_options(parser)
    for name, default in TRAINING.items():
        parser.add_argument(
            *flag(name),
            type=positive_int,
            default=None,
            help=f"main.py's --{name} for every candidate (default: {default}; with --resume, the search's)",
        )
    return parser


def add_extraction_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        *flag("extract"),
        action="store_true",
        help="first extract the default search space: every layer with mean and last (decoder) or first (encoders) "
        "pooling, the decoder with the PromptEOL prompt, and the lexical source (TF-IDF probabilities, train's out of "
        "fold); resumable, finished splits are skipped",
    )
    parser.add_argument(*flag("preset"), default=None, choices=sorted(PRESETS), help="with --extract: the models, e.g. offline")
    parser.add_argument(
        *flag("dtype"),
        default="auto",
        choices=["auto", *DTYPES],
        help="with --extract: the models' dtype (auto: bfloat16 on CUDA and on CPUs with bf16 matrix units, where it "
        "is several times faster than float32 with the same features: docs/features.md; else float32)",
    )
    parser.add_argument(
        *flag("model"), nargs="+", default=None, metavar="SLOT=MODEL", help="with --extract: a slot's model, e.g. llama=DIR"
    )
    parser.add_argument(*flag("compile"), action="store_true", help=f"with --extract: {COMPILE_HELP}")
    parser.add_argument(
        *flag("overwrite"),
        action="store_true",
        help="with --extract: extract again and replace finished splits extracted with other settings",
    )


def add_search_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        *flag("budget_minutes"),
        type=positive_float,
        default=None,
        help=f"stop starting candidates after this many minutes (default: {DEFAULT_BUDGET_MINUTES:g}; with --trials, none: "
        "every trial runs)",
    )
    parser.add_argument(*flag("trials"), type=positive_int, default=None, help="at most this many candidates (default: budget)")
    parser.add_argument(
        *flag("max_seeds"),
        type=positive_int,
        default=None,
        help="seeds of a candidate that survives halving (default: 3; with --resume, the search's)",
    )
    parser.add_argument(*flag("final_seeds"), type=positive_int, default=5, help="seeds of the chosen recipe's final run")
    parser.add_argument(
        *flag("seed"),
        type=non_negative_int,
        default=None,
        help="seed of the sampler and the probes' folds (default: 0; with --resume, the search's)",
    )
    parser.add_argument(
        *flag("cv"),
        type=non_negative_int,
        default=None,
        help="select by K-fold cross-validation on train (0: on valid; default: 5 folds when valid is small, as main.py; "
        "with --resume, the search's)",
    )
    parser.add_argument(
        *flag("resume"),
        type=existing_dir,
        default=None,
        help="continue the search of this tune folder, with its settings and its study (its search.json says which); a "
        "setting given otherwise, another task or a store changed since are refused",
    )
    parser.add_argument(
        *flag("storage"),
        default=None,
        help="an Optuna RDB URL for the study, e.g. sqlite:///PATH or postgresql://USER@HOST/DB, checked before any work "
        "(default: SQLite in the tune folder; with --resume, the search's own)",
    )
    parser.add_argument(
        *flag("save"), type=output_file, default=None, help="also copy the chosen recipe file here (its folder is made)"
    )
    parser.add_argument(*flag("no_final"), action="store_true", help="choose the recipe without training it on test")
    parser.add_argument(*flag("threads"), type=positive_int, default=None, help=THREADS_HELP)


def extraction_configs(args: argparse.Namespace) -> list[tuple[ExtractionConfig, dict]]:
    """The default search space's extractions as the extraction command would run them, each with
    its splits, every one checked (data, model folder, what its configuration rules out) before
    the first starts."""
    chosen = slot_models(args.model, SLOT_NAMES.__contains__, ", ".join(SLOT_NAMES))
    configs = []
    for slot, variants in EXTRACTIONS.items():
        source = ["--model", chosen[slot]] if slot in chosen else (["--preset", args.preset] if args.preset else [])
        for variant in variants:
            argv = [
                "--task",
                args.task,
                "--mode",
                "all",
                "--layers",
                "all",
                *variant,
                *source,
                "--device",
                args.device,
                "--dtype",
                args.dtype,
                "--data_dir",
                args.data_dir,
                "--dataset_dir",
                args.dataset_dir,
                *(["--threads", str(args.threads)] if args.threads else []),
                *(["--compile"] if args.compile else []),
                *(["--overwrite"] if args.overwrite else []),
            ]
            configs.append(extract.extraction_config(extract.build_parser(slot).parse_args(argv), slot))
    return [(config, checked_splits(config)) for config in configs]


def extract_search_space(args: argparse.Namespace, extractions: list[tuple[ExtractionConfig, dict]]) -> None:
    """The default search space's extractions (resumable: finished splits are skipped) and the lexical source."""
    for config, splits in extractions:
        run_extraction(config, splits)
    store_lexical_source(args.data_dir, args.dataset_dir, args.task, LexicalSettings())


def probes(args: argparse.Namespace, tune_dir: Path, store: dict, folds: int) -> list[dict]:
    """The probe rows of every view of `store` (folder -> its features' sha256, as
    `store_fingerprint` gives): this search's own (resumed); else, folder by folder, those of an
    earlier probe.py run or search of the same features and selection (reused, test columns
    left out), and new ones on train and valid for the folders no earlier probe covers."""
    own = tune_dir / "probe.csv"
    if own.is_file():
        rows = read_probe(own)
        if {row["folder"] for row in rows} != set(store):
            raise RunFileError(own, f"probes other folders than the search's store ({', '.join(store)}); it was edited")
        return rows
    found = earlier_probe_rows(args, store, folds)
    missing = [folder for folder in store if folder not in found]
    if missing:
        device = str(pick_device(args.device))
        rows, _ = probe_rows(args.dataset_dir, args.task, missing, cv=folds, seed=args.seed, device=device, modes=SEARCH_MODES)
        for row in rows:
            found.setdefault(row["folder"], []).append(row)
    table = pd.DataFrame([row for folder in store for row in found[folder]])
    table.to_csv(own, index=False, float_format="%.6f")
    write_json(tune_dir / "probe.json", {"store": store, "cv": folds, "seed": args.seed})
    return read_probe(own)


def earlier_probe_rows(args: argparse.Namespace, store: dict, folds: int) -> dict[str, list[dict]]:
    """Folder -> its probe rows from the newest earlier probe.py run or search that probed the same
    features (sha256) with the same folds and seed."""
    out, found = Path(args.out), {}
    records = [
        *out.glob(f"probe_{args.task}_*/config.json"),  # probe.py runs
        *out.glob(f"tune_{args.task}_*/probe.json"),  # searches, from their probes on
        *out.glob(f"tune_{args.task}_*/config.json"),  # finished searches
    ]
    for record in sorted(records, key=lambda path: path.parent.name.rsplit("_", 1)[-1], reverse=True):
        try:
            config = read_run_json(record, PROBE_CONFIG)
        except RunFileError as err:  # a damaged probe folder is not reused; its folders are probed again
            log.warning("%s: not reused (%s)", record, err.problem)
            continue
        cv = config.get("setup", {}).get("cv", config.get("cv", config.get("args", {}).get("cv")))
        seed = config.get("args", {}).get("seed", config.get("seed"))
        same = [f for f, sha in (config.get("store") or {}).items() if store.get(f) == sha and f not in found]
        if cv != folds or seed != args.seed or not same or not (record.parent / "probe.csv").is_file():
            continue
        try:
            rows = [
                {k: v for k, v in row.items() if not k.startswith("test_")} for row in read_probe(record.parent / "probe.csv")
            ]
        except RunFileError as err:  # a damaged earlier table is not reused; its folders are probed again
            log.warning("%s: not reused (%s)", err.path, err.problem)
            continue
        reused = {folder: [row for row in rows if row["folder"] == folder] for folder in same}
        found |= {folder: kept for folder, kept in reused.items() if kept}
        log.info("probes of %s: reused from %s", ", ".join(f for f in reused if reused[f]), record.parent)
    return found


PROBE_COLUMNS = ("folder", "slot", "pooling", "layer", "num_hidden_states")  # what the candidates are made from


def read_probe(path: Path) -> list[dict]:
    """A probe table's rows; a file that is not one (damaged, edited) is a RunFileError naming it."""
    try:
        table = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise RunFileError(path, f"not a probe table ({' '.join(str(err).split())})") from err
    missing = [column for column in PROBE_COLUMNS if column not in table.columns]
    if missing or not any(column.startswith("selection_") for column in table.columns):
        raise RunFileError(path, f"not a probe table (no {', '.join(missing) or 'selection_*'} column)")
    return table.to_dict("records")


def run(args: argparse.Namespace) -> dict | int:
    """Check everything the options alone decide, extract (with --extract), read the store, check a
    resumed folder against it, then search and train in the search folder."""
    check_extraction_options(args)
    if args.extract and args.resume:
        raise UsageError(
            "--extract and --resume: a search folder exists once its extraction is done, and a resumed search searches the "
            "store it recorded; drop --extract"
        )
    recorded = read_search_record(args.resume) if args.resume else None
    args = settled(args, recorded)
    storage = chosen_storage(args, recorded)
    if recorded:
        refuse_other_search(args.resume, recorded, search_settings(args))
    if args.extract:
        extract_search_space(args, extraction_configs(args))
    folders = searchable_folders(args)
    manifests = {folder: m for folder, m in store_manifests(args.dataset_dir, args.task).items() if folder in folders}
    valid_rows = read_manifest(Path(args.dataset_dir) / args.task / folders[0] / "valid.safetensors")["rows"]
    folds = chosen_folds(args.cv, valid_rows, manifests[folders[0]]["rows"])
    metric = selection_metric(bool(next(iter(manifests.values())).get("multilabel")))
    store = store_fingerprint(args.dataset_dir, args.task, folders)  # which features are searched
    identity = search_settings(args) | {"metric": metric, "cv": folds, "store": store}
    if recorded:
        refuse_other_search(args.resume, recorded, identity)
        tune_dir = args.resume
    else:
        tune_dir = make_run_dir(args.out, f"tune_{args.task}")
        write_search_record(
            tune_dir, identity | {"storage": storage and shown_url(absolute_url(storage)), "study": tune_dir.name}
        )
    name = recorded["study"] if recorded else tune_dir.name
    with also_log_to(tune_dir / "tune.log"):
        try:
            study = open_study(name, storage or folder_storage(tune_dir), args.seed, args.max_seeds, existing=bool(recorded))
            return search_and_train(args, tune_dir, identity, manifests, study)
        except KeyboardInterrupt:
            command = resume_command(args, tune_dir)
            log.error("stopped; continue the search (a candidate cut short is trained again) with: %s", command)
            return 130


def check_extraction_options(args: argparse.Namespace) -> None:
    """The extraction options apply with --extract only."""
    if args.extract:
        return
    extraction_only = {
        "preset": args.preset,
        "model": args.model,
        "dtype": args.dtype != "auto",
        "compile": args.compile,
        "overwrite": args.overwrite,
    }
    given = next((name for name, on in extraction_only.items() if on), None)
    if given:
        raise SettingError(given, None, "applies to the extractions of --extract; add --extract")


def settled(args: argparse.Namespace, recorded: dict | None) -> argparse.Namespace:
    """The options with every search setting decided: as given, else the resumed search's, else
    its default (the folds left to the store when neither says)."""
    fallback = SEARCH_DEFAULTS | TRAINING | {"cv": None}
    if recorded:
        fallback = {"seed": recorded["seed"], "max_seeds": recorded["max_seeds"], "cv": recorded["cv"], **recorded["training"]}
    values = {name: fallback[name] if getattr(args, name) is None else getattr(args, name) for name in fallback}
    return argparse.Namespace(**(vars(args) | values))


def resume_command(args: argparse.Namespace, tune_dir: Path) -> str:
    """The command that continues the search in `tune_dir`: its settings are recorded there."""
    defaults = option_defaults(build_parser())
    places = [
        f"--{name} {getattr(args, name)}"
        for name in ("data_dir", "dataset_dir", "out")
        if str(getattr(args, name)) != defaults[name]
    ]
    if args.storage and shown_url(args.storage) != args.storage:  # its password is not recorded: the user gives it again
        places.append(f"--storage {shown_url(args.storage).replace('***', 'PASSWORD')}")
    return " ".join(["python tune.py --task", args.task, *places, "--resume", str(tune_dir)])


def search_settings(args: argparse.Namespace) -> dict:
    """What makes a search this search, as far as the options say (the store and the folds come from the store)."""
    settings = {"task": args.task, "seed": args.seed, "max_seeds": args.max_seeds}
    settings["training"] = {name: getattr(args, name) for name in TRAINING}
    return settings | ({"cv": args.cv} if args.cv is not None else {})  # (None: from the store, compared once known)


def refuse_other_search(folder: Path, recorded: dict, wanted: dict) -> None:
    """A resumed folder must hold a search of this task with these settings, over this store."""
    if recorded["task"] != wanted["task"]:
        raise StudyError(f"--resume {folder}: a search of task {recorded['task']!r}, not {wanted['task']!r}")
    differences = search_differences(recorded, wanted)
    if differences:
        raise StudyError(
            f"--resume {folder}: searched with other settings ({'; '.join(differences)}); resume with that search's "
            "settings, or start a new search without --resume"
        )
    changes = store_differences(recorded["store"], wanted["store"]) if "store" in wanted else []
    if changes:
        raise StudyError(
            f"--resume {folder}: the store changed since that search ({', '.join(changes)}); start a new search without --resume"
        )


def chosen_storage(args: argparse.Namespace, recorded: dict | None) -> str | None:
    """The study's storage URL, checked before any work (None: SQLite in the search folder): --storage,
    else the resumed search's own; a resumed search's storage cannot change."""
    storage = args.storage
    if recorded:
        kept = recorded["storage"]
        if storage is not None and shown_url(absolute_url(storage)) != kept:
            where = kept or "its folder's study.db"
            raise StudyError(f"--resume {args.resume}: its study is in {where}, not {shown_url(storage)}; drop --storage")
        if storage is None and kept and "***" in kept:
            raise StudyError(f"--resume {args.resume}: its study is in {kept}; give that URL with its password as --storage")
        storage = storage or kept
        database = sqlite_file(storage) if storage else args.resume / STUDY_FILE
        if database is not None:  # checked whole, holding the search's study: check_storage has no more to say
            check_study_file(database, study=recorded["study"])
            return storage
    database = sqlite_file(args.storage) if args.storage else None
    problem = database and output_problem(database, command_inputs(args))
    if problem:  # a study database is written: the rule of every output
        raise SettingError("storage", shown_url(args.storage), problem)
    if storage is not None:
        check_storage(storage)
    return storage


def folder_storage(tune_dir: Path) -> str:
    return f"sqlite:///{(tune_dir / STUDY_FILE).resolve()}"


def searchable_folders(args: argparse.Namespace) -> list[str]:
    """The store folders with train and valid features; none is an error that says how to make them."""
    if not (Path(args.data_dir) / args.task).is_dir():
        raise StoreError(
            f"{Path(args.data_dir) / args.task}: no data for task {args.task!r}; bring it with "
            f"`python prepare_data.py --from FILE --task {args.task}`"
        )
    return store_folders(args.dataset_dir, args.task)


def search_and_train(args: argparse.Namespace, tune_dir: Path, identity: dict, manifests: dict, study: optuna.Study) -> dict:
    """The probes, the search of `study`, the recipe file, the final run and the page, into
    `tune_dir`; `identity` is what the search is (its search.json: metric, folds, store, ...),
    `manifests` the train manifests of its store's folders."""
    metric, folds, store = identity["metric"], identity["cv"], identity["store"]
    space = search_space(probes(args, tune_dir, store, folds), metric, manifests)
    log.info("candidates: %s", "; ".join(f"{slot}: {len(options)} options" for slot, options in space.sources.items()))
    base = TrainConfig(**{name: getattr(args, name) for name in TRAINING}, cv=folds)
    device = str(pick_device(args.device))
    search = Search(
        dataset_dir=args.dataset_dir,
        task=args.task,
        space=space,
        base=base,
        budget_minutes=args.budget_minutes or (None if args.trials else DEFAULT_BUDGET_MINUTES),
        trials=args.trials,
        max_seeds=args.max_seeds,
        seed=args.seed,
        device=device,
        threads=args.threads,
    )
    try:
        run_search(search, study)
    finally:  # stopped too: the table shows what was trained, the interrupted candidate as such
        rows = candidate_rows(study)
        write_candidates(tune_dir, rows)
    if not any(row["state"] == "complete" for row in rows):
        raise FecError(f"{tune_dir}: no candidate trained every seed within the budget; raise --budget_minutes or --trials")
    where = f"{folds}-fold cross-validation on train" if folds else "valid"
    options = recipe_options(study.best_trial.params) | {name: getattr(args, name) for name in TRAINING}
    options |= {"cv": folds}
    notes = {
        "_about": f"chosen by tune.py for {args.task}: python main.py --task {args.task} --recipe FILE --runs 5",
        "_found_by": found_by(rows, metric, where),
    }
    recipe = write_recipe(tune_dir, options, notes)
    if args.save:
        atomic_write(Path(args.save), lambda tmp: shutil.copyfile(recipe, tmp))
        log.info("recipe copied to %s", args.save)
    final = None if args.no_final else final_run(args, recipe)
    record = {
        "args": vars(args) | {"cv": folds, "storage": args.storage and shown_url(args.storage)},
        "option_defaults": option_defaults(build_parser()),
        "metric": metric,
        "selection": where,
        "store": store,
        "search_space": {"sources": space.sources, "head": space.head, "first": space.first},
        "final_run": final,
    }
    write_json(tune_dir / "config.json", record | provenance())
    chosen = next(row for row in rows if row["number"] == study.best_trial.number)
    view = {
        "task": args.task,
        "metric": metric,
        "cv": folds,
        "command": f"python tune.py --task {args.task}",
        "chosen": chosen,
        "chosen_recipe": json.dumps(options, indent=2),
        "final_run": str(Path("..") / Path(final).name) if final else None,
    }
    page = write_tune_page(tune_dir, rows, view)
    log.info("search folder %s: %s; recipe %s; final run %s", tune_dir, page.name, recipe, final)
    return {"tune_dir": str(tune_dir), "recipe": str(recipe), "final_run": final}


def final_run(args: argparse.Namespace, recipe: Path) -> str:
    """The chosen recipe trained by main.py with --final_seeds seeds: the only step that reads test."""
    argv = [
        "--task",
        args.task,
        "--recipe",
        str(recipe),
        "--runs",
        str(args.final_seeds),
        "--data_dir",
        args.data_dir,
        "--dataset_dir",
        args.dataset_dir,
        "--out",
        str(args.out),
        "--device",
        args.device,
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    parser = train.build_parser()
    return train.run(train.parse_with_recipe(parser, argv))["run_dir"]


def main(argv: list[str] | None = None) -> int:
    return run_script(build_parser(), run, argv)
