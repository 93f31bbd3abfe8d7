"""The features layer's error for a setting's value: worded with the setting's name as the
extraction config spells it, so each caller can say where the value came from.

    from fec.features.errors import SettingError
    raise SettingError("max_len", 300, "the model has positions for 258 tokens at most")
    # library: "max_len 300: the model has ..."; `python roberta_rep_extract.py -max_len 300`:
    # "error: --max_len 300: the model has ..."; a training pick: "--features llama:mean:40,: layers ..."

The library knows the value and what is wrong with it, not how the user gave it: the extraction
command line (`fec.cli.extract`) names its option (`SettingError.named`), a feature pick names itself.
"""

from __future__ import annotations

from fec.core.errors import UsageError


class SettingError(UsageError):
    """A setting's value that cannot be used: `SETTING VALUE: what is wrong` (`SETTING: ...` when
    the setting is a switch). `setting` is the ExtractionConfig field (or FeatureSpec part) it names."""

    def __init__(self, setting: str, value: object, problem: str):
        self.setting = setting
        self.detail = ("" if value is None else f" {value}") + f": {problem}"
        super().__init__(setting + self.detail)

    def named(self, name: str) -> str:
        """The message with the setting called `name`, e.g. the option `--max_len` that gave it."""
        return name + self.detail
