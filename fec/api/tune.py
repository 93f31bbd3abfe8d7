"""The recipe search: from a task's store to its best fusion recipe, searched automatically and
honestly (test is read once, by the final run of the chosen recipe).

    import fec
    found = fec.tune("ED")                                    # search what dataset/ED/ holds, 30 min budget
    found = fec.tune("mine", extract=True, preset="offline")  # first extract the default search space
    found = fec.tune("mine", extract=True, preset="offline",  # ... and two more sources, slots of yours
                     model={"gemma_enc": "offline:embeddinggemma-300m", "gemma_dec": "offline:gemma-3-270m"})
    found = fec.tune("ED", budget_minutes=90, save="recipes/ED_tuned.json")
    found = fec.tune("ED", resume="Logs/tune_ED_20261205-190000")   # continue an interrupted search
    found.candidates, found.recipe, found.run.metrics["test"]

Steps: (1) with `extract`, every layer of every slot (the published three and the user's slots
in `model`) with two poolings (mean and last for a decoder, mean and first for an encoder) and
a decoder's PromptEOL prompt, resumable like any extraction, and the lexical source
(`fec.classify.lexical`: TF-IDF probabilities, train's out of fold); (2) a linear probe of every
view on train and valid (`fec.classify.probing`; a probe run of the same store and selection is
reused); (3) candidates from the probe curves
(`fec.classify.candidates`), searched by Optuna with successive halving over seeds
(`fec.classify.search`) on valid, or by cross-validation on train when valid is small; (4) the
chosen recipe written as a recipe file and trained with `final_seeds` seeds by `fec.train` into a
run folder of its own, which the report lists beside the others. The search folder is
`Logs/tune_{task}_{stamp}/` (`fec.runs.tune_folder`); the command is `fec tune` (tune.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import shutil
import statistics
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from fec.api.ensemble import ensemble_run
from fec.api.extract import ExtractSettings, extraction_config
from fec.api.probe import recorded_fold_seed
from fec.api.run import Run
from fec.api.train import train
from fec.classify.candidates import search_space
from fec.classify.cross_validation import chosen_folds
from fec.classify.ensemble import EnsembleChoice, select_ensemble
from fec.classify.fusion_training import TrainConfig
from fec.classify.lexical import LexicalSettings
from fec.classify.lexical_store import store_lexical_source
from fec.classify.probing import probe_rows, store_fingerprint, store_folders
from fec.classify.search import (
    SEARCH_MODES,
    Search,
    absolute_url,
    candidate_probabilities_path,
    check_storage,
    check_study_file,
    open_study,
    recipe_options,
    run_search,
    shown_url,
    sqlite_file,
)
from fec.core.data import load_splits
from fec.core.errors import FecError, RunFileError, SettingError, StoreError, StudyError, UsageError
from fec.core.files import atomic_write
from fec.core.logs import also_log_to, log_as_worker
from fec.core.metrics import selection_metric
from fec.core.provenance import provenance
from fec.core.settings import (
    BadValue,
    Settings,
    about,
    documented,
    existing_dir,
    given_path,
    given_record,
    non_negative_int,
    output_dir,
    output_file,
    positive_float,
    positive_int,
    setting,
    task_name,
    text,
)
from fec.core.settings import device as usable_device
from fec.core.slots import LEXICAL_SLOT, PUBLISHED_KINDS, SLOT_NAMES, slot_models
from fec.features.backbones import DTYPES, pick_device
from fec.features.config import ExtractionConfig
from fec.features.extract import checked_splits
from fec.features.extract import run as run_extraction
from fec.features.standins import PRESETS, StandinError, is_standin, standin_entry
from fec.features.store import read_manifest
from fec.features.store_slots import slot_name_problem, store_manifests
from fec.runs.folder import make_run_dir, write_json
from fec.runs.output_rule import check_outputs, inputs_of, output_problem
from fec.runs.run_files import Fields, read_run_json
from fec.runs.tune_folder import (
    ENSEMBLE_RECORD,
    PREDICTIONS_DIR,
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
# The default search space's extractions per slot kind: every layer, two poolings; a decoder also prompted.
EXTRACTIONS = {
    "decoder": [{"pooling": ["mean", "last"]}, {"pooling": ["last"], "prompt": [PROMPTEOL]}],
    "encoder": [{"pooling": ["mean", "first"]}],
}
# What a probe.py run's config.json must hold to be reused.
PROBE_CONFIG = Fields(optional={"store": dict, "setup": dict, "args": dict, "cv": int, "seed": int})
# How every candidate trains (fec.train's settings); batch 64 and early stop 10 are the CPU recipe of the demo.
TRAINING = {"epochs": 200, "early_stop": 10, "batch_size": 64}
DEFAULT_BUDGET_MINUTES = 30.0  # sized for a 2-core CPU
DEFAULT_ENSEMBLE_SIZE = 20  # greedy steps: weights in twentieths
# The search's own settings; with `resume`, a setting not given is the resumed search's.
SEARCH_DEFAULTS = {"sampler_seed": 0, "max_seeds": 3}


def slot_pairs(value, what: str) -> list[str]:
    """A dict {slot: what} or the command line's SLOT=WHAT pairs, as pairs."""
    if isinstance(value, dict):
        return [f"{slot}={given}" for slot, given in value.items()]
    if isinstance(value, list | tuple) and all(isinstance(pair, str) for pair in value):
        return list(value)
    raise BadValue(f"give {{slot: {what.lower()}}} or SLOT={what} pairs, got {value!r}")


def is_own_slot(slot: str) -> bool:
    """A slot of the user's: a slot name that is neither a published slot nor the lexical source."""
    return slot not in SLOT_NAMES and slot != LEXICAL_SLOT and not slot_name_problem(slot)


def models_by_slot(value) -> dict[str, str]:
    """The models of the extractions by slot: a dict {slot: model}, or the command line's
    `SLOT=MODEL` pairs; each slot a published one or one of the user's, given once."""
    accepted = f"{', '.join(SLOT_NAMES)} or a slot of yours"
    return slot_models(slot_pairs(value, "MODEL"), lambda slot: slot in SLOT_NAMES or is_own_slot(slot), accepted)


def kinds_by_slot(value) -> dict[str, str]:
    """The kinds of the user's slots: a dict {slot: kind}, or the command line's `SLOT=KIND` pairs,
    each KIND decoder or encoder."""
    yours = f"yours ({', '.join(SLOT_NAMES)} have their own)"
    kinds = slot_models(slot_pairs(value, "KIND"), is_own_slot, yours, setting="slot_kind", value="KIND")
    wrong = next((slot for slot, kind in kinds.items() if kind not in EXTRACTIONS), None)
    if wrong:
        raise SettingError("slot_kind", f"{wrong}={kinds[wrong]}", f"the kind is {' or '.join(EXTRACTIONS)}")
    return kinds


@dataclass(kw_only=True)
class TuneSettings(Settings):
    """What `fec.tune` searches and where it writes (`fec tune -h` lists the same settings as options);
    a search setting left None is the resumed search's, else its default."""

    task: str = setting(check=task_name, help="task folder, e.g. ED, go_emotion, semeval_eng")
    device: str = setting("auto", check=usable_device, help="cuda, cuda:N, cpu, or auto (cuda when available)")
    data_dir: Path = setting(Path("data"), check=given_path, help="folder holding TASK/MODE.csv")
    dataset_dir: Path = setting(Path("dataset"), check=given_path, help="feature store root")
    out: Path = setting(Path("Logs"), check=output_dir, help="where the search folder and the final run go")
    extract: bool = setting(
        False,
        help="first extract the default search space: every layer of the three slots and of the slots of yours in "
        "--model, with mean and last (decoders) or first (encoders) pooling, the decoders also with the PromptEOL prompt, "
        "and the lexical source (TF-IDF probabilities, train's out of fold); resumable, finished splits are skipped",
    )
    preset: str | None = setting(None, choices=sorted(PRESETS), help="with --extract: the models, offline or offline-large")
    dtype: str = setting(
        "auto",
        choices=["auto", *DTYPES],
        help="with --extract: the models' dtype (auto: bfloat16 on CUDA and on CPUs with bf16 matrix units, where it "
        "is several times faster than float32 with the same features: docs/features.md; else float32)",
    )
    model: dict[str, str] | None = setting(
        None,
        check=models_by_slot,
        help="with --extract: a slot's model, e.g. llama=DIR, or a slot of yours extracted as one more source, e.g. "
        "gemma_enc=offline:embeddinggemma-300m ({slot: model} in Python)",
    )
    slot_kind: dict[str, str] | None = setting(
        None,
        check=kinds_by_slot,
        help="with --extract: the kind of a slot of yours in --model, e.g. e5=encoder or qwen=decoder ({slot: kind} in "
        "Python); a stand-in's is known (offline:gemma-3-270m is a decoder)",
    )
    compile: bool = setting(
        False,
        help="with --extract: " + about(ExtractSettings.__dataclass_fields__["compile"])["help"],
    )
    overwrite: bool = setting(
        False, help="with --extract: extract again and replace finished splits extracted with other settings"
    )
    budget_minutes: float | None = setting(
        None,
        check=positive_float,
        help=f"stop starting candidates after this many minutes (default: {DEFAULT_BUDGET_MINUTES:g}; with --trials, none: "
        "every trial runs)",
    )
    trials: int | None = setting(None, check=positive_int, help="at most this many candidates (default: budget)")
    max_seeds: int | None = setting(
        None, check=positive_int, help="seeds of a candidate that survives halving (default: 3; with --resume, the search's)"
    )
    final_seeds: int = setting(5, check=positive_int, help="seeds of the chosen recipe's final run")
    sampler_seed: int | None = setting(
        None,
        check=non_negative_int,
        help="seed of the sampler and the probes' folds (default: 0; with --resume, the search's)",
    )
    cv: int | None = setting(
        None,
        check=non_negative_int,
        help="select by K-fold cross-validation on train (0: on valid; default: 5 folds when valid is small, as main.py; "
        "with --resume, the search's)",
    )
    resume: Path | None = setting(
        None,
        check=existing_dir,
        help="continue the search of this tune folder, with its settings and its study (its search.json says which); a "
        "setting given otherwise, another task or a store changed since are refused",
    )
    storage: str | None = setting(
        None,
        check=text,
        help="an Optuna RDB URL for the study, e.g. sqlite:///PATH or postgresql://USER@HOST/DB, checked before any work "
        "(default: SQLite in the tune folder; with --resume, the search's own)",
    )
    workers: int = setting(
        1,
        check=positive_int,
        help="processes working at once (candidates of the one study, probes, lexical folds, final runs), one CPU thread "
        "each unless --threads says; on several machines: --storage a server's URL, and `--resume FOLDER --no_final` on "
        "the others",
    )
    ensemble_size: int = setting(
        DEFAULT_ENSEMBLE_SIZE,
        check=non_negative_int,
        help="greedy steps of the ensemble chosen from every trained candidate's selection probabilities (Caruana et al. "
        "2004); its members are trained and saved as one run beside the chosen recipe's (0: the chosen recipe alone)",
    )
    save: Path | None = setting(None, check=output_file, help="also copy the chosen recipe file here (its folder is made)")
    no_final: bool = setting(False, help="choose the recipe without training it on test")
    threads: int | None = setting(
        None,
        check=positive_int,
        help="CPU threads (default: from the work per step and the cores other jobs leave free, logged; fec.core.threads)",
    )
    epochs: int | None = setting(
        None,
        check=positive_int,
        help=f"main.py's --epochs for every candidate (default: {TRAINING['epochs']}; with --resume, the search's)",
    )
    early_stop: int | None = setting(
        None,
        check=positive_int,
        help=f"main.py's --early_stop for every candidate (default: {TRAINING['early_stop']}; with --resume, the search's)",
    )
    batch_size: int | None = setting(
        None,
        check=positive_int,
        help=f"main.py's --batch_size for every candidate (default: {TRAINING['batch_size']}; with --resume, the search's)",
    )

    def record(self) -> dict:
        """The settings as JSON values, the models and kinds as the command line's SLOT=MODEL and SLOT=KIND pairs."""
        models = slot_pairs(self.model, "MODEL") if self.model else None
        kinds = slot_pairs(self.slot_kind, "KIND") if self.slot_kind else None
        return super().record() | {"model": models, "slot_kind": kinds}


@dataclass(frozen=True)
class TuneResult:
    """What a search found: its folder, the chosen recipe (a recipe file's settings, the file
    beside), every candidate as candidates.csv holds them (best first), and the final run of the
    chosen recipe (None with `no_final`)."""

    path: Path
    recipe: dict
    recipe_file: Path
    candidates: pd.DataFrame
    run: Run | None
    ensemble: Run | None = None  # the ensemble of candidates, saved as one run (None: size 0, one member, or no final run)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search: its table is written, and `resume_command` continues it."""

    def __init__(self, folder: Path, resume_command: str):
        super().__init__(f"{folder}: stopped; continue with: {resume_command}")
        self.folder, self.resume_command = folder, resume_command


@documented(TuneSettings)
def tune(task: str | None = None, *, settings: TuneSettings | None = None, **options) -> TuneResult:
    """Search the best fusion recipe of a task's stored features, then train it; what it found.

    found = fec.tune("mine", extract=True, preset="offline")   # python tune.py --task mine --extract --preset offline

    Everything the settings alone decide is checked first (a resumed folder against its
    search.json, the study's storage), then the extractions (with `extract`), then the store;
    Ctrl-C stops the search with its table written and raises `SearchInterrupted`, whose
    command continues it (`resume`).
    """
    settings = given_record(TuneSettings, settings, task=task, **options) or TuneSettings(task=task, **options)
    check_outputs(settings)
    check_extraction_settings(settings)
    if settings.extract and settings.resume:
        raise UsageError(
            "--extract and --resume: a search folder exists once its extraction is done, and a resumed search searches the "
            "store it recorded; drop --extract"
        )
    recorded = read_search_record(settings.resume) if settings.resume else None
    settings = settled(settings, recorded)
    storage = chosen_storage(settings, recorded)
    if recorded:
        refuse_other_search(settings.resume, recorded, search_identity(settings))
    if settings.extract:
        extract_search_space(settings, extraction_configs(settings))
    folders = searchable_folders(settings)
    manifests = {folder: m for folder, m in store_manifests(settings.dataset_dir, settings.task).items() if folder in folders}
    valid_rows = read_manifest(settings.dataset_dir / settings.task / folders[0] / "valid.safetensors")["rows"]
    folds = chosen_folds(settings.cv, valid_rows, manifests[folders[0]]["rows"])
    metric = selection_metric(bool(next(iter(manifests.values())).get("multilabel")))
    store = store_fingerprint(settings.dataset_dir, settings.task, folders)  # which features are searched
    identity = search_identity(settings) | {"metric": metric, "cv": folds, "store": store}
    if recorded:
        refuse_other_search(settings.resume, recorded, identity)
        tune_dir = settings.resume
    else:
        tune_dir = make_run_dir(settings.out, f"tune_{settings.task}")
        write_search_record(
            tune_dir, identity | {"storage": storage and shown_url(absolute_url(storage)), "study": tune_dir.name}
        )
    name = recorded["study"] if recorded else tune_dir.name
    with also_log_to(tune_dir / "tune.log"):
        try:
            url = storage or folder_storage(tune_dir)
            study = open_study(name, url, settings.sampler_seed, settings.max_seeds, existing=bool(recorded))
            return search_and_train(settings, tune_dir, identity, manifests, study, url)
        except KeyboardInterrupt:
            command = resume_command(settings, tune_dir)
            log.error("stopped; continue the search (a candidate cut short is trained again) with: %s", command)
            raise SearchInterrupted(tune_dir, command) from None


def check_extraction_settings(settings: TuneSettings) -> None:
    """The extraction settings apply with `extract` only, and each slot to extract has its kind."""
    if settings.extract:
        extracted_kinds(settings)
        return
    extraction_only = {
        "preset": settings.preset,
        "model": settings.model,
        "slot_kind": settings.slot_kind,
        "dtype": settings.dtype != "auto",
        "compile": settings.compile,
        "overwrite": settings.overwrite,
    }
    given = next((name for name, on in extraction_only.items() if on), None)
    if given:
        raise SettingError(given, None, "applies to the extractions of --extract; add --extract")


def settled(settings: TuneSettings, recorded: dict | None) -> TuneSettings:
    """The settings with every search setting decided: as given, else the resumed search's, else
    its default (the folds left to the store when neither says)."""
    fallback = SEARCH_DEFAULTS | TRAINING | {"cv": None}
    if recorded:
        fallback = {name: recorded.get(name) for name in (*SEARCH_DEFAULTS, "cv")} | {
            name: recorded["training"].get(name) for name in TRAINING
        }
    chosen = {name: fallback[name] if getattr(settings, name) is None else getattr(settings, name) for name in fallback}
    return dataclasses.replace(settings, **chosen)


def search_identity(settings: TuneSettings) -> dict:
    """What makes a search this search, as far as the settings say (the store and the folds come from the store)."""
    identity = {"task": settings.task, "sampler_seed": settings.sampler_seed, "max_seeds": settings.max_seeds}
    identity["training"] = {name: getattr(settings, name) for name in TRAINING}
    return identity | ({"cv": settings.cv} if settings.cv is not None else {})  # (None: from the store, compared once known)


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


def chosen_storage(settings: TuneSettings, recorded: dict | None) -> str | None:
    """The study's storage URL, checked before any work (None: SQLite in the search folder):
    `storage`, else the resumed search's own; a resumed search's storage cannot change."""
    storage = settings.storage
    if recorded:
        kept = recorded["storage"]
        if storage is not None and shown_url(absolute_url(storage)) != kept:
            where = kept or "its folder's study.db"
            raise StudyError(f"--resume {settings.resume}: its study is in {where}, not {shown_url(storage)}; drop --storage")
        if storage is None and kept and "***" in kept:
            raise StudyError(f"--resume {settings.resume}: its study is in {kept}; give that URL with its password as --storage")
        storage = storage or kept
        database = sqlite_file(storage) if storage else settings.resume / STUDY_FILE
        if database is not None:  # checked whole, holding the search's study: check_storage has no more to say
            check_study_file(database, study=recorded["study"])
            return storage
    database = sqlite_file(settings.storage) if settings.storage else None
    problem = database and output_problem(database, inputs_of(settings))
    if problem:  # a study database is written: the rule of every output
        raise SettingError("storage", shown_url(settings.storage), problem)
    if storage is not None:
        check_storage(storage)
    return storage


def folder_storage(tune_dir: Path) -> str:
    return f"sqlite:///{(tune_dir / STUDY_FILE).resolve()}"


def resume_command(settings: TuneSettings, tune_dir: Path) -> str:
    """The command that continues the search in `tune_dir`: its settings are recorded there."""
    defaults = TuneSettings.defaults()
    places = [
        f"--{name} {getattr(settings, name)}"
        for name in ("data_dir", "dataset_dir", "out")
        if str(getattr(settings, name)) != defaults[name]
    ]
    if settings.storage and shown_url(settings.storage) != settings.storage:  # its password is not recorded: given again
        places.append(f"--storage {shown_url(settings.storage).replace('***', 'PASSWORD')}")
    places += [f"--workers {settings.workers}"] if settings.workers != 1 else []  # how it ran, not what it searches
    return " ".join(["python tune.py --task", settings.task, *places, "--resume", str(tune_dir)])


def extracted_kinds(settings: TuneSettings) -> dict[str, str]:
    """The slots `extract` extracts, with their kinds: the published three, then the user's slots of
    `model`, each of the kind `slot_kind` names or, for a stand-in, of the slot it stands in for."""
    chosen, named = settings.model or {}, settings.slot_kind or {}
    stray = next((slot for slot in named if slot not in chosen), None)
    if stray:
        raise SettingError("slot_kind", f"{stray}={named[stray]}", f"{stray} is not a slot of --model; give its model there")
    kinds = dict(PUBLISHED_KINDS)
    for slot, model in chosen.items():
        if slot in kinds:
            continue
        if slot in named:
            kinds[slot] = named[slot]
        elif is_standin(model):
            try:
                kinds[slot] = PUBLISHED_KINDS[standin_entry(model).slot]
            except StandinError as unknown:
                raise SettingError("model", f"{slot}={model}", str(unknown)) from None
        else:
            raise SettingError(
                "model", f"{slot}={model}", f"{slot} is a slot of yours: name its kind, e.g. --slot_kind {slot}=encoder"
            )
    return kinds


def extraction_configs(settings: TuneSettings) -> list[tuple[ExtractionConfig, dict]]:
    """The default search space's extractions as `fec.extract` would run them, each with its
    splits, every one checked (data, model folder, what its configuration rules out) before the
    first starts."""
    chosen = settings.model or {}
    configs = []
    for slot, kind in extracted_kinds(settings).items():
        source = {"model": chosen[slot]} if slot in chosen else {"preset": settings.preset}
        for variant in EXTRACTIONS[kind]:
            extraction = ExtractSettings(
                task=settings.task,
                slot=slot,
                slot_kind=None if slot in PUBLISHED_KINDS else kind,
                mode="all",
                layers="all",
                **variant,
                **source,
                device=settings.device,
                dtype=settings.dtype,
                data_dir=settings.data_dir,
                dataset_dir=settings.dataset_dir,
                threads=settings.threads,
                compile=settings.compile,
                overwrite=settings.overwrite,
            )
            configs.append(extraction_config(extraction))
    return [(config, checked_splits(config)) for config in configs]


def extract_search_space(settings: TuneSettings, extractions: list[tuple[ExtractionConfig, dict]]) -> None:
    """The default search space's extractions (resumable: finished splits are skipped) and the lexical source."""
    for config, splits in extractions:
        run_extraction(config, splits)
    store_lexical_source(settings.data_dir, settings.dataset_dir, settings.task, LexicalSettings(), workers=settings.workers)


def searchable_folders(settings: TuneSettings) -> list[str]:
    """The store folders with train and valid features; none is an error that says how to make them."""
    if not (settings.data_dir / settings.task).is_dir():
        raise StoreError(
            f"{settings.data_dir / settings.task}: no data for task {settings.task!r}; bring it with "
            f"`python prepare_data.py --from FILE --task {settings.task}`"
        )
    return store_folders(settings.dataset_dir, settings.task)


def probes(settings: TuneSettings, tune_dir: Path, store: dict, folds: int) -> list[dict]:
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
    found = earlier_probe_rows(settings, store, folds)
    missing = [folder for folder in store if folder not in found]
    if missing:
        device = str(pick_device(settings.device))
        rows, _ = probe_rows(
            settings.dataset_dir,
            settings.task,
            missing,
            cv=folds,
            seed=settings.sampler_seed,
            device=device,
            modes=SEARCH_MODES,
            workers=settings.workers,
        )
        for row in rows:
            found.setdefault(row["folder"], []).append(row)
    table = pd.DataFrame([row for folder in store for row in found[folder]])
    table.to_csv(own, index=False, float_format="%.6f")
    write_json(tune_dir / "probe.json", {"store": store, "cv": folds, "seed": settings.sampler_seed})
    return read_probe(own)


def earlier_probe_rows(settings: TuneSettings, store: dict, folds: int) -> dict[str, list[dict]]:
    """Folder -> its probe rows from the newest earlier probe.py run or search that probed the same
    features (sha256) with the same folds and seed."""
    out, task, found = settings.out, settings.task, {}
    records = [
        *out.glob(f"probe_{task}_*/config.json"),  # probe.py runs
        *out.glob(f"tune_{task}_*/probe.json"),  # searches, from their probes on
        *out.glob(f"tune_{task}_*/config.json"),  # finished searches
    ]
    for record in sorted(records, key=lambda path: path.parent.name.rsplit("_", 1)[-1], reverse=True):
        try:
            config = read_run_json(record, PROBE_CONFIG)
        except RunFileError as err:  # a damaged probe folder is not reused; its folders are probed again
            log.warning("%s: not reused (%s)", record, err.problem)
            continue
        cv = config.get("setup", {}).get("cv", config.get("cv", config.get("args", {}).get("cv")))
        seed = recorded_fold_seed(config)
        same = [f for f, sha in (config.get("store") or {}).items() if store.get(f) == sha and f not in found]
        if cv != folds or seed != settings.sampler_seed or not same or not (record.parent / "probe.csv").is_file():
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


def search_and_train(
    settings: TuneSettings, tune_dir: Path, identity: dict, manifests: dict, study: optuna.Study, storage: str
) -> TuneResult:
    """The probes, the search of `study` (at `storage`, its URL), the recipe file, the final run, the
    ensemble and the page, into `tune_dir`; `identity` is what the search is (its search.json: metric,
    folds, store, ...), `manifests` the train manifests of its store's folders."""
    metric, folds, store = identity["metric"], identity["cv"], identity["store"]
    space = search_space(probes(settings, tune_dir, store, folds), metric, manifests)
    log.info("candidates: %s", "; ".join(f"{slot}: {len(options)} options" for slot, options in space.sources.items()))
    training = {name: getattr(settings, name) for name in TRAINING}
    search = Search(
        dataset_dir=settings.dataset_dir,
        task=settings.task,
        space=space,
        base=TrainConfig(**training, cv=folds),
        budget_minutes=settings.budget_minutes or (None if settings.trials else DEFAULT_BUDGET_MINUTES),
        trials=settings.trials,
        max_seeds=settings.max_seeds,
        seed=settings.sampler_seed,
        device=str(pick_device(settings.device)),
        threads=settings.threads or (1 if settings.workers > 1 else None),
        workers=settings.workers,
        predictions_dir=tune_dir / PREDICTIONS_DIR,
    )
    try:
        run_search(search, study, storage, tune_dir / "tune.log")
    finally:  # stopped too: the table shows what was trained, the interrupted candidate as such
        rows = candidate_rows(study)
        candidates = write_candidates(tune_dir, rows)
    if not any(row["state"] == "complete" for row in rows):
        raise FecError(f"{tune_dir}: no candidate trained every seed within the budget; raise --budget_minutes or --trials")
    where = f"{folds}-fold cross-validation on train" if folds else "valid"
    options = recipe_options(study.best_trial.params) | training | {"cv": folds}
    notes = {
        "_about": f"chosen by tune.py for {settings.task}: python main.py --task {settings.task} --recipe FILE --runs 5",
        "_found_by": found_by(rows, metric, where),
    }
    recipe = write_recipe(tune_dir, options, notes)
    if settings.save:
        atomic_write(settings.save, lambda tmp: shutil.copyfile(recipe, tmp))
        log.info("recipe copied to %s", settings.save)
    ensemble = chosen_ensemble(settings, tune_dir, study, metric, folds, bool(next(iter(manifests.values())).get("multilabel")))
    final, candidate_ensemble = None, None
    if not settings.no_final:
        final, candidate_ensemble = final_runs(settings, tune_dir, recipe, ensemble, study, training, folds)
    record = {
        "args": settings.record() | {"cv": folds, "storage": settings.storage and shown_url(settings.storage)},
        "option_defaults": TuneSettings.defaults(),
        "metric": metric,
        "selection": where,
        "store": store,
        "search_space": {"sources": space.sources, "head": space.head, "first": space.first},
        "final_run": final and str(final.path),
        "ensemble_run": candidate_ensemble and str(candidate_ensemble.path),
    }
    write_json(tune_dir / "config.json", record | provenance())
    chosen = next(row for row in rows if row["number"] == study.best_trial.number)
    view = {
        "task": settings.task,
        "metric": metric,
        "cv": folds,
        "command": f"python tune.py --task {settings.task}",
        "chosen": chosen,
        "chosen_recipe": json.dumps(options, indent=2),
        "final_run": str(Path("..") / final.path.name) if final else None,
        "ensemble_run": str(Path("..") / candidate_ensemble.path.name) if candidate_ensemble else None,
    }
    page = write_tune_page(tune_dir, rows, view)
    log.info("search folder %s: %s; recipe %s; final run %s", tune_dir, page.name, recipe, final)
    if final and candidate_ensemble:
        log_side_by_side(final, candidate_ensemble)
    return TuneResult(
        path=tune_dir,
        recipe=options,
        recipe_file=recipe,
        candidates=pd.read_csv(candidates),
        run=final,
        ensemble=candidate_ensemble,
    )


def final_runs(
    settings: TuneSettings,
    tune_dir: Path,
    recipe: Path,
    ensemble: EnsembleChoice | None,
    study: optuna.Study,
    training: dict,
    folds: int,
) -> tuple[Run, Run | None]:
    """The only step that reads test: the chosen recipe trained by `fec.train` with `final_seeds`
    seeds, and the ensemble's other members likewise (by `workers` processes at once), then the
    ensemble saved as one run (None without one of several members)."""
    members = [] if ensemble is None or len(ensemble.members) == 1 else list(ensemble.members)
    others = [number for number in members if int(number) != study.best_trial.number]
    jobs = [{"recipe": recipe}] + [
        recipe_options(study.trials[int(number)].params) | training | {"cv": folds}  # trials are in number order
        for number in others
    ]
    places = {
        "runs": settings.final_seeds,
        "data_dir": settings.data_dir,
        "dataset_dir": settings.dataset_dir,
        "out": settings.out,
        "device": settings.device,
    }
    runs = trained_recipes(settings, jobs, places, tune_dir / "tune.log")
    final = runs[0]
    if not members:
        return final, None
    by_number = {study.best_trial.number: final} | {int(n): run for n, run in zip(others, runs[1:], strict=True)}
    weights = {by_number[int(n)]: w for n, w in zip(ensemble.members, ensemble.weights, strict=True)}
    selection = {
        "search": tune_dir.name,
        "candidates": [int(n) for n in ensemble.members],
        "score": ensemble.score,
        "best_single": {"candidate": int(ensemble.best_single[0]), "score": ensemble.best_single[1]},
    }
    # Under cross-validation, multi-label thresholds are the ones the choice tuned out of fold (valid stays a check).
    thresholds = ensemble.thresholds if folds else None
    return final, ensemble_run(
        settings.task, weights, data_dir=settings.data_dir, out=settings.out, selection=selection, thresholds=thresholds
    )


def trained_recipes(settings: TuneSettings, jobs: list[dict], places: dict, log_file: Path) -> list[Run]:
    """Each job (`recipe`: a recipe file, or a recipe's settings) trained by `fec.train` into a run of its own,
    in order; several at once by `workers` processes of one thread each (unless `threads` says)."""
    workers = min(settings.workers, len(jobs))
    if workers == 1:
        return [train(settings.task, **job, **places, threads=settings.threads) for job in jobs]
    log.info("training %d recipes by %d workers", len(jobs), workers)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks inherited
    threads = settings.threads or 1
    with ProcessPoolExecutor(workers, mp_context=context, initializer=log_as_worker, initargs=("final runs", log_file)) as pool:
        paths = list(pool.map(train_recipe, [settings.task] * len(jobs), jobs, [places | {"threads": threads}] * len(jobs)))
    return [Run(Path(path)) for path in paths]


def train_recipe(task: str, job: dict, places: dict) -> str:
    """One recipe trained in a worker process; its run folder."""
    return str(train(task, **job, **places).path)


def selection_labels(settings: TuneSettings, folds: int, multilabel: bool) -> np.ndarray:
    """The labels of the rows candidates are selected on: valid's, or train's when selection is cross-validated."""
    mode = "train" if folds else "valid"
    return load_splits(settings.data_dir, settings.task, [mode], multilabel=multilabel)[mode].labels


def chosen_ensemble(
    settings: TuneSettings, tune_dir: Path, study: optuna.Study, metric: str, folds: int, multilabel: bool
) -> EnsembleChoice | None:
    """The ensemble of the trained candidates, those the halving stopped included (their selection
    probabilities, best mean score first), chosen greedily by the selection metric and written to
    ensemble.json; None with `ensemble_size` 0 or fewer than two candidates to choose from."""
    if not settings.ensemble_size:
        return None
    trained = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    finished = sorted(
        (t for t in study.get_trials(deepcopy=False, states=trained) if t.user_attrs.get("scores")),
        key=lambda t: -statistics.fmean(t.user_attrs["scores"]),
    )
    library, seen = {}, set()
    for trial in finished:
        path = candidate_probabilities_path(tune_dir / PREDICTIONS_DIR, trial.number)
        options = json.dumps(trial.params, sort_keys=True)
        if not path.is_file() or options in seen:  # two workers can train one candidate at once: it counts once
            continue
        probabilities = np.load(path)
        if not np.isfinite(probabilities).all():
            log.warning("ensemble: candidate #%d left out (its probabilities are not all finite)", trial.number)
            continue
        library[str(trial.number)], seen = probabilities, seen | {options}
    if len(library) < 2:
        log.info("ensemble: %d finished candidate(s) with predictions; the chosen recipe alone", len(library))
        return None
    choice = select_ensemble(library, selection_labels(settings, folds, multilabel), multilabel, settings.ensemble_size, metric)
    shown = ", ".join(f"#{n} x{w:.2f}" for n, w in zip(choice.members, choice.weights, strict=True))
    log.info(
        "ensemble of %d candidates (%s): %s %.2f on the selection rows; the best alone (#%s) %.2f",
        len(choice.members),
        shown,
        metric,
        choice.score,
        *choice.best_single,
    )
    params = {t.number: t.params for t in finished}
    record = {
        "metric": metric,
        "size": settings.ensemble_size,
        "library": len(library),
        "members": [
            {"candidate": int(n), "weight": w, "recipe": recipe_options(params[int(n)])}
            for n, w in zip(choice.members, choice.weights, strict=True)
        ],
        "score": choice.score,
        "best_single": {"candidate": int(choice.best_single[0]), "score": choice.best_single[1]},
        "steps": choice.steps,
        "thresholds": choice.thresholds,
    }
    write_json(tune_dir / ENSEMBLE_RECORD, record)
    return choice


def log_side_by_side(final: Run, ensemble: Run) -> None:
    """The chosen recipe and the candidates' ensemble on the report split, each with what one prediction costs."""
    split = "test" if "test" in final.metrics else "valid"
    metric = "acc" if "acc" in final.metrics[split] else "macro_f1"
    seeds = len(final.config.get("seeds") or [])
    seed_ensemble = (final.results.get("ensemble") or {}).get(split, {}).get(metric)
    averaged = f", its {seeds} seeds averaged {seed_ensemble:.2f} with {seeds} heads" if seed_ensemble is not None else ""
    cost = ensemble.config["ensemble"]["prediction_cost"]
    log.info(
        "on %s, %s: the chosen recipe %.2f (mean of %d seeds, one head each, over %d sources%s); "
        "the candidates' ensemble of %d runs %.2f (%d heads over %d sources)",
        split,
        metric,
        final.metrics[split][metric],
        seeds,
        len(final.config.get("sources") or []),
        averaged,
        len(ensemble.config["ensemble"]["members"]),
        ensemble.metrics[split][metric],
        cost["heads"],
        cost["feature_sources"],
    )
