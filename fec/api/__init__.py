"""The public API: one module per job, each a settings record (`fec.core.settings.Settings`,
checked on construction) and a function that takes it or its settings as keywords, and returns a
result object. The command line (`fec.cli`) is a thin face over these functions; every name here
is also importable from `fec` itself (`fec.train`, `fec.tune`, ...). Worked example: docs/api.md.

    import fec
    fec.prepare_data(frame, task="mine", text_column="text", label_column="emotion")
    found = fec.tune("mine", extract=True, preset="offline", budget_minutes=20)
    found.candidates            # the search's table (a DataFrame)
    found.run.metrics           # the chosen recipe's final run: {"test": {"acc": ..., ...}, ...}
    found.run.classifier().predict(["I finally got the job!"])
"""
