"""What every trainer's settings hold (`fec.train`, `fec.finetune`, `fec.tfidf`): the task, where
its data and its runs are, the seeds to train and the device.

    @dataclass(kw_only=True)
    class FinetuneSettings(TrainerSettings):
        model: str = setting("roberta-large", help="encoder to fine-tune")

    FinetuneSettings(task="ED", runs=5).chosen_seeds()   # [0, 1, 2, 3, 4]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fec.core.errors import SettingError
from fec.core.settings import Settings, device, given_path, non_negative_int, output_dir, positive_int, setting, task_name


@dataclass(kw_only=True)
class TrainerSettings(Settings):
    """A trainer's task, folders, seeds and device; one run folder holds every seed."""

    task: str = setting(check=task_name, help="task folder, e.g. ED, go_emotion, semeval_eng")
    data_dir: Path = setting(Path("data"), check=given_path, help="folder holding TASK/MODE.csv")
    out: Path = setting(Path("Logs"), check=output_dir, help="folder for run folders and runs.csv")
    seeds: list[int] | None = setting(
        None, check=non_negative_int, many=True, help="one run per seed, each seed once (default: 0)"
    )
    runs: int | None = setting(None, check=positive_int, help="N runs with seeds 0..N-1")
    device: str = setting("auto", check=device, help="cuda, cuda:N, cpu, or auto (cuda when available)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seeds is not None and self.runs is not None:
            raise SettingError("runs", self.runs, "give seeds or runs, not both")

    def chosen_seeds(self) -> list[int]:
        """The seeds asked for: `seeds`, else 0..runs-1, else seed 0."""
        if self.seeds is not None:
            return list(self.seeds)
        return list(range(self.runs)) if self.runs else [0]
