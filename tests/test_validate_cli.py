"""`jupyter-health validate` as a user meets it: line numbers and empty files."""
from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from jupyter_health.omh import validate_command
from jupyter_health.synthetic import synthetic_cohort


def _run(*args):
    app = typer.Typer()
    app.command()(validate_command)
    return CliRunner().invoke(app, [str(a) for a in args])


def test_one_line_jsonl_names_its_line_and_empty_file_is_invalid(tmp_path):
    dp = synthetic_cohort(n_patients=1, days=1, seed=1).patients[0].data_points[0]
    dp["body"]["effective_time_frame"]["date_time"] = \
        dp["body"]["effective_time_frame"]["date_time"][:19]
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(dp) + "\n")
    res = _run(one)
    assert res.exit_code == 1 and f"{one} line 1: body.effective_time_frame" in res.output
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = _run(empty)
    assert res.exit_code == 1 and "holds no data points" in res.output
