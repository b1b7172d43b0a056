"""The main job as a user runs it: `jupyter-health demo`, on synthetic and on own data."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import tool
from jupyter_health.synthetic import synthetic_cohort, write_jsonl


def _demo(*args, cwd, env=None):
    return subprocess.run([tool("jupyter-health"), "demo", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env=env)


def _printed_counts(out: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"│ (\w+)\s+│\s+(\d+) │", out)}


def test_default_demo_writes_what_it_counts(tmp_path):
    "The README's main job with its defaults: exit 0, every file, counts printed and agreeing."
    res = _demo(cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = tmp_path / "jupyter-health-demo"
    names = {p.name for p in out.iterdir()}
    assert {"readings.csv", "readings.parquet", "summary.csv", "summary.json", "report.md",
            "cohort_overview.png", "cohort_categories.png"} <= names
    assert {f"bp_patient-00{i}.png" for i in range(1, 6)} <= names
    counts = _printed_counts(res.stdout)
    assert counts["patients"] == 5
    assert counts["uploaded"] == counts["stored"] == counts["fetched"] == counts["decrypted"]
    assert counts["rows"] + counts["excluded"] == counts["decrypted"]
    assert counts["plotted"] == counts["valid"] > 0
    readings = pd.read_parquet(out / "readings.parquet")
    assert len(readings) == len(pd.read_csv(out / "readings.csv")) == counts["readings"]
    summary = json.loads((out / "summary.json").read_text())
    assert sum(r["n_readings"] for r in summary) == counts["valid"]
    report = (out / "report.md").read_text()
    for name in names - {"report.md"}: assert name in report, name


def test_same_seed_same_readings(tmp_path):
    for d in ["a", "b"]:
        assert _demo("--patients", "3", "--days", "5", "--seed", "11", "--out", d,
                     cwd=tmp_path).returncode == 0
    for f in ["readings.csv", "readings.parquet"]:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def _versioned(dp: dict, version: str) -> dict:
    "The same reading written as an older blood-pressure schema with an Open mHealth header."
    body = dict(dp["body"])
    h = dp["header"]
    header = {"id": h["uuid"], "creation_date_time": h["source_creation_date_time"],
              "schema_id": {"namespace": "omh", "name": "blood-pressure", "version": version},
              "acquisition_provenance": {"source_name": "test cuff", "modality": "sensed"}}
    if version in ("1.0", "2.0", "3.0", "3.1"):
        body.pop("measurement_location", None)
    return {"header": header, "body": body}


def test_own_data_counts_out_as_in(tmp_path):
    "--data with blood-pressure points of several versions and zones: as many out as in."
    cohort = synthetic_cohort(n_patients=3, days=4, seed=3)
    points, n_bp = [], 0
    versions = ["4.0", "3.1", "3.0", "2.0"]
    for p in cohort:
        for i, dp in enumerate(x for x in p.data_points
                               if x["header"]["schema_id"]["name"] == "blood-pressure"):
            v = versions[i % len(versions)]
            points.append(dict(dp if v == "4.0" else _versioned(dp, v), patient_id=p.patient_id))
            n_bp += 1
    assert len({p["header"]["schema_id"].get("version") for p in points}) == 4
    data = write_jsonl(tmp_path / "mine.jsonl", points)
    res = _demo("--data", str(data), "--out", "out", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = _printed_counts(res.stdout)
    assert counts["uploaded"] == counts["decrypted"] == counts["readings"] == n_bp, counts
    assert counts["valid"] == n_bp and counts["patients"] == 3
    readings = pd.read_csv(tmp_path / "out" / "readings.csv")
    assert readings.utc_offset_min.nunique() > 2  # several home time zones came through


def test_ctrl_c_stops_the_server_and_cleans_up(tmp_path):
    "SIGINT mid-run: exit 130, no temporary folder of the demo or its cloud left behind."
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([tool("jupyter-health"), "demo", "--patients", "200", "--days", "60"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob("jh-cloud-*")):
        time.sleep(0.2)
    assert list(tmp_path.glob("jh-cloud-*")), "the demo never started its local cloud"
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Interrupted" in out
    left = [p.name for p in tmp_path.iterdir() if p.name.startswith(("jh-", "tmp"))]
    assert not left, f"left behind: {left}"


def test_left_out_points_are_listed_in_the_results(tmp_path):
    "A data point the frames leave out is counted and named, with its reason, in left_out.csv."
    points = [dict(dp, patient_id=p.patient_id)
              for p in synthetic_cohort(n_patients=2, days=3, seed=5) for dp in p.data_points]
    bad = next(p for p in points if p["header"]["schema_id"]["name"] == "blood-pressure")
    bad["body"]["effective_time_frame"]["date_time"] = \
        bad["body"]["effective_time_frame"]["date_time"][:19]  # drop the UTC offset
    res = _demo("--data", str(write_jsonl(tmp_path / "d.jsonl", points)), "-o", "out",
                cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    counts = _printed_counts(res.stdout)
    assert counts["excluded"] == counts["left_out"] == 1
    left = pd.read_csv(tmp_path / "out" / "left_out.csv")
    assert left.data_point_id.tolist() == [bad["header"]["uuid"]]
    assert "UTC offset" in left.reason[0]
    assert "left_out.csv" in (tmp_path / "out" / "report.md").read_text()
