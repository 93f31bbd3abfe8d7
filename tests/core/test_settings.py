"""Settings records (`fec.core.settings`): what every job of `fec.api` takes, checked when the
record is made, with the messages the command line gives for the same options."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest

from fec.core.errors import SettingError
from fec.core.settings import Settings, documented, given_record, positive_int, setting, task_name


@dataclass(kw_only=True)
class ProbeLike(Settings):
    task: str = setting(check=task_name, help="task folder")
    folds: int = setting(5, check=positive_int, help="cross-validation folds")
    sources: list[str] = setting(["llama", "bert"], many=True, choices=("llama", "bert", "roberta"), help="slots to read")
    combine: bool = setting(False, help="also probe every view combined")
    out: Path = setting(Path("Logs"), help="where the probe folder goes")


def refusal(**values) -> str:
    with pytest.raises(SettingError) as refused:
        ProbeLike(**values)
    return str(refused.value)


def test_values_are_checked_and_converted_as_the_command_line_would():
    record = ProbeLike(task="ED", folds="3", sources=("roberta",))
    assert (record.folds, record.sources, record.combine) == (3, ["roberta"], False)
    assert record.record() == {"task": "ED", "folds": 3, "sources": ["roberta"], "combine": False, "out": "Logs"}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"task": "E D"}, "task: 'E D' is not a task name"),
        ({"task": "ED", "folds": 0}, "folds: must be a positive integer, got 0"),
        ({"task": "ED", "folds": 2.5}, "folds: must be a positive integer, got 2.5"),
        ({"task": "ED", "folds": True}, "folds: must be a positive integer, got True"),
        ({"task": "ED", "sources": ["bert", "bert"]}, "sources: bert is given twice"),
        ({"task": "ED", "sources": ["e5"]}, "sources 'e5': choose one of llama, bert, roberta"),
        ({"task": "ED", "sources": []}, "sources: an empty list"),
        ({"task": "ED", "combine": "no"}, "combine: must be True or False, got 'no'"),
        ({"task": None}, "task: required"),
    ],
)
def test_a_value_that_can_only_be_a_mistake_is_refused_naming_the_setting(values, message):
    assert refusal(**values).startswith(message)


def test_a_record_or_keywords_but_not_both():
    record = ProbeLike(task="ED")
    assert given_record(ProbeLike, record, task=None) is record
    assert given_record(ProbeLike, None, task="ED") is None  # the keywords make the record
    with pytest.raises(SettingError, match=r"settings: a ProbeLike record or keyword settings \(folds\), not both"):
        given_record(ProbeLike, record, folds=3)
    with pytest.raises(SettingError, match="must be a ProbeLike record"):
        given_record(ProbeLike, {"task": "ED"})


def test_a_documented_function_shows_every_setting_with_its_default_and_help():
    @documented(ProbeLike)
    def probe(task: str | None = None, *, settings: ProbeLike | None = None, **options) -> None:
        """Probe every view of a task."""

    parameters = inspect.signature(probe).parameters
    assert list(parameters) == ["task", "settings", "folds", "sources", "combine", "out"]
    assert parameters["folds"].default == 5 and parameters["out"].default == "Logs"
    assert "folds: cross-validation folds" in probe.__doc__
    assert "sources: slots to read (one of: llama, bert, roberta)" in probe.__doc__
