"""A run folder as a Python object: what `fec.train` (and the other trainers) return, whose
records are read when asked for.

    run = fec.train("ED", runs=5)
    run.path                    # Logs/ED_20261207-153000
    run.metrics["test"]["acc"]  # mean over the seeds
    run.classifier().predict(["I finally got the job!"])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fec.runs.run_files import read_config, read_results


@dataclass(frozen=True)
class Run:
    """A finished run folder (`Logs/TASK_STAMP`); its records are read when asked for."""

    path: Path

    @property
    def results(self) -> dict:
        """results.json: per seed, the summary over seeds, the best seed."""
        return read_results(self.path)

    @property
    def config(self) -> dict:
        """config.json: the settings the run was trained with, as resolved, and its provenance."""
        return read_config(self.path)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """The mean over seeds of each split's metrics: {"valid": {"acc": ..}, "test": {...}}."""
        return {
            split: {name: stats["mean"] for name, stats in scores.items() if isinstance(stats, dict) and "mean" in stats}
            for split, scores in self.results["summary"].items()
        }

    def classifier(self, seed: int | None = None, device: str = "auto", ensemble: bool = False):
        """The trained model, ready for raw text (`fec.EmotionClassifier.load`)."""
        from fec.inference.classifier import EmotionClassifier

        return EmotionClassifier.load(self.path, seed=seed, device=device, ensemble=ensemble)

    def __str__(self) -> str:
        return str(self.path)
