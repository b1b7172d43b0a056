"""Blood-pressure statistics, categories and plots against values worked out by hand.

The frames here are laid out in the `bp_frame` column contract directly from plain rows, so the
arithmetic under test is visible; the command-line tests go through the real JSON Lines reader
and `jupyter_health.frames.bp_frame`.
"""
from __future__ import annotations

import io
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

from jupyter_health.bp import bp_summary, category, category_counts, classify, exclusion_reasons
from jupyter_health.plots import plot_blood_pressure, plot_category_grid, plot_time_of_day

NOW = "2026-06-01T00:00Z"
LATER = "2027-01-01T00:00Z"  # after the synthetic cohort's dates too


def frame(rows, patient_id="p1"):
    "Wide BP frame from `(iso local time with offset, systolic, diastolic)` rows."
    ts = [pd.Timestamp(t) for t, *_ in rows]
    utc = pd.to_datetime([t.tz_convert("UTC") for t in ts], utc=True)
    return pd.DataFrame({
        "patient_id": pd.array([patient_id] * len(rows), dtype="string"),
        "data_point_id": pd.array([f"{patient_id}-{i:03d}" for i in range(len(rows))],
                                  dtype="string"),
        "time_utc": utc, "end_utc": utc,
        "local_time": pd.to_datetime([t.tz_localize(None) for t in ts]),
        "utc_offset_min": pd.array([int(t.utcoffset().total_seconds() // 60) for t in ts],
                                   dtype="Int64"),
        "date_only": False, "part_of_day": pd.array([None] * len(rows), dtype="string"),
        "systolic": np.array([r[1] for r in rows], dtype=float),
        "diastolic": np.array([r[2] for r in rows], dtype=float),
        "heart_rate": np.nan, "body_posture": "sitting", "measurement_location": pd.NA,
        "activity": pd.NA, "source": pd.NA, "modality": "sensed", "flags": "",
    })


# Ten readings of one patient in UTC+02:00, in time order. Windows: morning 04:00-11:59,
# evening 18:00-23:59 local time. Reading 8 (04:00 local) is 02:00 UTC, reading 7 (23:30 local)
# is 21:30 UTC: a statistic computed on UTC clock hours would put them in other windows.
TEN = [
    ("2025-05-04T07:00:00+02:00", 130, 85),  # 1 morning
    ("2025-05-04T19:00:00+02:00", 122, 78),  # 2 evening
    ("2025-05-05T06:30:00+02:00", 138, 88),  # 3 morning
    ("2025-05-05T12:00:00+02:00", 118, 76),  # 4 neither
    ("2025-05-05T20:30:00+02:00", 126, 80),  # 5 evening
    ("2025-05-06T08:00:00+02:00", 142, 92),  # 6 morning
    ("2025-05-06T23:30:00+02:00", 120, 79),  # 7 evening
    ("2025-05-07T04:00:00+02:00", 134, 84),  # 8 morning (first minute of the window)
    ("2025-05-07T11:59:00+02:00", 128, 82),  # 9 morning (last minute of the window)
    ("2025-05-07T18:00:00+02:00", 136, 86),  # 10 evening (first minute)
]


@pytest.fixture
def ten():
    f = frame(TEN, "ten")
    extra = frame([("2025-05-05T09:00:00+02:00", 131, None),  # incomplete
                   ("2027-01-01T09:00:00+02:00", 131, 85)], "ten")  # future
    extra["data_point_id"] = ["ten-x1", "ten-x2"]
    # shuffled, so the summary must put readings in time order itself
    return pd.concat([f, extra], ignore_index=True).sample(frac=1, random_state=3)


def test_ten_readings_statistics(ten):
    s = bp_summary(ten, now=NOW).loc["ten"]
    # systolic 130 122 138 118 126 142 120 134 128 136: sum 1294
    sys_mean = 1294 / 10  # 129.4
    # squared deviations from 129.4: .36 54.76 73.96 129.96 11.56 158.76 88.36 21.16 1.96 43.56
    sys_sd = math.sqrt(584.4 / 9)
    # successive |changes|: 8 16 20 8 16 22 14 6 8 = 118
    sys_arv = 118 / 9
    # diastolic 85 78 88 76 80 92 79 84 82 86: sum 830, deviations 2 -5 5 -7 -3 9 -4 1 -1 3
    dia_mean, dia_sd = 83.0, math.sqrt(220 / 9)
    dia_arv = (7 + 10 + 12 + 4 + 12 + 13 + 5 + 2 + 4) / 9  # 69 / 9
    assert s.n_readings == 10 and s.days == 4
    assert s.systolic_mean == pytest.approx(sys_mean, abs=1e-12)
    assert s.systolic_sd == pytest.approx(sys_sd, abs=1e-12)
    assert s.systolic_cv == pytest.approx(sys_sd / sys_mean * 100, abs=1e-12)
    assert s.systolic_arv == pytest.approx(sys_arv, abs=1e-12)
    assert s.diastolic_mean == pytest.approx(dia_mean, abs=1e-12)
    assert s.diastolic_sd == pytest.approx(dia_sd, abs=1e-12)
    assert s.diastolic_cv == pytest.approx(dia_sd / dia_mean * 100, abs=1e-12)
    assert s.diastolic_arv == pytest.approx(dia_arv, abs=1e-12)
    # morning: readings 1 3 6 8 9; evening: 2 5 7 10
    assert s.morning_systolic == pytest.approx((130 + 138 + 142 + 134 + 128) / 5)  # 134.4
    assert s.morning_diastolic == pytest.approx((85 + 88 + 92 + 84 + 82) / 5)  # 86.2
    assert s.evening_systolic == pytest.approx((122 + 126 + 120 + 136) / 4)  # 126
    assert s.evening_diastolic == pytest.approx((78 + 80 + 79 + 86) / 4)  # 80.75
    # at or above 130/80: readings 1 3 5 6 8 9 10
    assert s.share_at_or_above == pytest.approx(0.7)
    assert s.category == "stage 1"  # 129.4/83.0: diastolic 80-89
    assert str(s.first_date.date()) == "2025-05-04" and str(s.last_date.date()) == "2025-05-07"
    assert (s.n_excluded, s.excluded_incomplete, s.excluded_future) == (2, 1, 1)
    assert (s.excluded_implausible, s.excluded_inverted) == (0, 0)
    assert bp_summary(ten, guideline="esc", now=NOW).loc["ten", "category"] == "normal"


def test_ten_readings_category_counts(ten):
    aha = category_counts(ten, now=NOW).loc["ten"]
    # 1 st1, 2 elev, 3 st1, 4 normal, 5 st1 (dia 80), 6 st2, 7 elev, 8 st1, 9 st1, 10 st1
    assert aha.to_dict() == {"normal": 1, "elevated": 2, "stage 1": 6, "stage 2": 1,
                             "hypertensive crisis": 0}
    esc = category_counts(ten, "esc", now=NOW).loc["ten"]
    # 1 hn, 2 n, 3 hn, 4 opt, 5 n, 6 g1, 7 n, 8 hn, 9 n, 10 hn
    assert esc.to_dict() == {"optimal": 1, "normal": 4, "high-normal": 4, "ISH grade 1": 0,
                             "grade 1": 1, "ISH grade 2": 0, "grade 2": 0, "ISH grade 3": 0,
                             "grade 3": 0}


BOUNDARY = [(120, 80), (125, 79), (130, 80), (139, 89), (140, 90), (181, 100), (150, 121)]
EXPECTED_AHA = ["stage 1", "elevated", "stage 1", "stage 1", "stage 2", "hypertensive crisis",
                "hypertensive crisis"]
EXPECTED_ESC = ["normal", "normal", "high-normal", "high-normal", "grade 1", "grade 3",
                "grade 3"]


@pytest.mark.parametrize("reading,aha,esc", list(zip(BOUNDARY, EXPECTED_AHA, EXPECTED_ESC)),
                         ids=[f"{s}/{d}" for s, d in BOUNDARY])
def test_guideline_boundaries(reading, aha, esc):
    assert category(*reading) == aha
    assert category(*reading, guideline="esc") == esc


def test_classify_is_vectorised_and_ordered():
    s, d = zip(*BOUNDARY)
    c = classify(pd.Series(s), pd.Series(d))
    assert list(c) == EXPECTED_AHA and c.ordered
    assert list(classify(np.array(s), np.array(d), "esc")) == EXPECTED_ESC
    # isolated systolic hypertension: systolic >= 140 with diastolic < 90, graded by systolic
    assert list(classify([140, 165, 185, 150], [89, 70, 85, 90], "esc")) == [
        "ISH grade 1", "ISH grade 2", "ISH grade 3", "grade 1"]
    assert category(180, 120) == "stage 2" and category(180, 121) == "hypertensive crisis"


def test_exclusions_never_pair_or_stretch():
    f = frame([("2025-05-04T07:00:00+02:00", 128, 84), ("2025-05-04T08:00:00+02:00", None, 82),
               ("2025-05-04T09:00:00+02:00", 128, None), ("2025-05-04T10:00:00+02:00", 320, 80),
               ("2025-05-04T11:00:00+02:00", 90, 95), ("2025-05-04T12:00:00+02:00", 130, 86)])
    assert exclusion_reasons(f, now=NOW).tolist() == [
        "", "incomplete", "incomplete", "implausible", "inverted", ""]
    fig = plot_blood_pressure(f, now=NOW)
    fig.canvas.draw()
    ax_s, ax_d = fig.subfigs[0].axes
    plotted = np.concatenate([ln.get_ydata() for ln in ax_s.get_lines()])
    assert set(plotted[~np.isnan(plotted)]) <= {128.0, 130.0, 129.0}  # readings, daily mean
    assert ax_s.get_ylim()[1] < 200 and ax_d.get_ylim()[1] < 120
    assert "(4 excluded)" in fig.subfigs[0].get_suptitle()


def test_local_time_tick_labels():
    f = frame([("2026-04-01T05:00:00+03:00", 128, 84), ("2026-04-01T05:30:00+03:00", 131, 85),
               ("2026-04-01T06:00:00+03:00", 126, 82)])
    fig = plot_blood_pressure(f, now=NOW)
    assert type(fig.canvas).__name__ == "FigureCanvasAgg"
    fig.canvas.draw()
    ax = fig.subfigs[0].axes[1]
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_visible()]
    assert "05:00" in labels and "06:00" in labels, labels
    assert not [x for x in labels if x.startswith(("02:", "03:"))], labels
    assert ax.get_xlabel() == "patient local time (UTC+03:00)"


def test_gap_breaks_lines():
    f = frame([("2026-04-01T07:00:00+03:00", 128, 84), ("2026-04-02T07:00:00+03:00", 131, 85),
               ("2026-04-05T07:00:00+03:00", 126, 82)])
    fig = plot_blood_pressure(f, now=NOW)
    readings_line = fig.subfigs[0].axes[0].get_lines()[0]
    y = readings_line.get_ydata()
    assert len(y) == 4 and np.isnan(y[2])  # a break inside the 3-day gap only


def cohort(n=5, days=14):
    rng = np.random.default_rng(7)
    out = []
    for p in range(n):
        tz = ["+03:00", "-05:00", "+01:00", "+05:30", "-08:00"][p]
        rows = [(f"2026-03-{d + 1:02d}T{h:02d}:{rng.integers(0, 59):02d}:00{tz}",
                 120 + 8 * p + rng.normal(0, 6), 78 + 3 * p + rng.normal(0, 4))
                for d in range(days) for h in (7, 21) if not (p == 2 and d in (5, 6, 7))]
        out.append(frame(rows, f"patient-{p + 1}"))
    return pd.concat(out, ignore_index=True)


@pytest.mark.parametrize("who", ["one", "five", "synthetic five"])
def test_figures_render_without_warnings(who):
    if who == "synthetic five":  # the real pipeline: synthetic data points through bp_frame
        from jupyter_health.frames import bp_frame
        from jupyter_health.synthetic import synthetic_cohort
        c = bp_frame(synthetic_cohort(5, days=28, seed=4).all_points())
    else: c = cohort()
    patient = "patient-3" if who == "one" else None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figs = [plot_blood_pressure(c, patient=patient, now=LATER),
                plot_blood_pressure(c, patient=patient, guideline="esc", now=LATER),
                plot_category_grid(c, patient=patient, now=LATER),
                plot_category_grid(c, patient=patient, guideline="esc", now=LATER),
                plot_time_of_day(c, patient=patient, now=LATER)]
        for fig in figs:
            fig.canvas.draw()
            fig.savefig(io.BytesIO(), format="png")
    assert len(figs[0].subfigs) == (1 if who == "one" else 5)
    assert len(figs[4].axes) == (1 if who == "one" else 5)


@pytest.mark.parametrize("hours", [0.5, 20, 83, 250, 1500, 17000])
def test_time_axis_any_span(hours):
    "Tick placement copes with spans from minutes to years, without a warning."
    start = pd.Timestamp("2026-01-01T07:00:00+03:00")
    f = frame([((start + pd.Timedelta(hours=hours * k / 9)).isoformat(), 130 + k, 80 + k)
               for k in range(10)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_blood_pressure(f, now=NOW).canvas.draw()


def test_empty_and_single_reading():
    one = frame([("2026-04-01T07:00:00+03:00", 128, 84)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for plot in (plot_blood_pressure, plot_category_grid, plot_time_of_day):
            empty = plot(one.iloc[:0])
            empty.canvas.draw()
            assert any("No" in t.get_text() for t in empty.texts)
            fig = plot(one, now=NOW)
            fig.canvas.draw()
            assert not fig.texts or "No" not in fig.texts[0].get_text()
    s = bp_summary(one, now=NOW).loc["p1"]
    assert s.systolic_mean == 128 and np.isnan(s.systolic_sd) and np.isnan(s.diastolic_arv)


def test_no_pyplot_state():
    "The plotting module neither imports pyplot nor leaves figures open."
    code = ("import sys; from tests.test_bp import cohort, NOW; "
            "from jupyter_health.plots import plot_blood_pressure as p; "
            "p(cohort(), now=NOW).canvas.draw(); "
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot imported'")
    from conftest import ROOT
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---- command line, through the real JSON Lines reader and bp_frame ----

def _points(rows, patient_id=None):
    from jupyter_health import synthetic
    out = []
    for i, (when, s, d) in enumerate(rows):
        dp = synthetic.blood_pressure_point(f"00000000-0000-4000-8000-{i:012d}", when, s, d,
                                            created=when)
        out.append({**dp, "patient_id": patient_id} if patient_id else dp)
    return out


@pytest.fixture
def cli():
    import typer
    from typer.testing import CliRunner

    from jupyter_health.bp import summary_command
    from jupyter_health.plots import plot_command
    app = typer.Typer()
    app.command("summary")(summary_command)
    app.command("plot")(plot_command)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def _write(path, points):
    path.write_text("".join(json.dumps(p) + "\n" for p in points))
    return path


def test_summary_command_json(cli, tmp_path):
    f = _write(tmp_path / "bp.jsonl", _points(TEN, "ten") + _points(
        [("2025-05-04T07:00:00+02:00", 150, 85)], "other"))
    res = cli("summary", f, "--json")
    assert res.exit_code == 0, res.output
    rows = {r["patient_id"]: r for r in json.loads(res.stdout)}
    assert rows["ten"]["n_readings"] == 10 and rows["ten"]["morning_systolic"] == 134.4
    assert rows["ten"]["category"] == "stage 1" and rows["ten"]["first_date"] == "2025-05-04"
    assert rows["other"]["systolic_sd"] is None  # one reading: no spread, not a crash
    res = cli("summary", f, "--json", "--guideline", "esc", "--patient-id", "other")
    assert [r["category"] for r in json.loads(res.stdout)] == ["ISH grade 1"]
    res = cli("summary", f)
    assert res.exit_code == 0 and "systolic_arv" in res.stdout and "ten" in res.stdout


def test_summary_counts_points_bp_frame_dropped(cli, tmp_path):
    points = _points(TEN, "ten")
    del points[3]["body"]["diastolic_blood_pressure"]  # 118/76 loses its diastolic value
    points[5]["body"]["systolic_blood_pressure"]["value"] = "high"  # 142/92 is unreadable
    res = cli("summary", _write(tmp_path / "bp.jsonl", points), "--json")
    assert res.exit_code == 0, res.output
    row = json.loads(res.stdout)[0]
    assert row["n_readings"] == 8 and row["n_excluded"] == 2
    assert (row["excluded_incomplete"], row["excluded_unreadable"]) == (1, 1)
    assert row["systolic_mean"] == pytest.approx((1294 - 118 - 142) / 8)


def test_summary_command_patient_option(cli, tmp_path):
    f = _write(tmp_path / "bare.jsonl", _points(TEN))
    res = cli("summary", f, "--json")
    assert res.exit_code == 1 and "--patient-id" in res.output
    res = cli("summary", f, "--json", "--patient-id", "anna")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["patient_id"] == "anna"


def test_plot_command(cli, tmp_path):
    f = _write(tmp_path / "bp.jsonl", _points(TEN, "ten") + _points(TEN[:3], "two"))
    out = tmp_path / "out.png"
    res = cli("plot", f, "-o", out, "--patient", "ten")
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "10 readings" in res.stdout
    res = cli("plot", f, "-o", tmp_path / "grid.svg", "--kind", "grid", "--guideline", "esc")
    assert res.exit_code == 0 and (tmp_path / "grid.svg").read_text().lstrip().startswith("<?xml")
    res = cli("plot", f, "-o", out, "--patient", "nobody")
    assert res.exit_code == 1 and "patients present: ten, two" in res.output


def test_commands_list_what_they_leave_out(cli, tmp_path):
    "Each left-out point is named on stderr with its id and reason; nothing usable is an error."
    points = _points(TEN, "ten")
    points[2]["body"]["effective_time_frame"]["date_time"] = "2025-05-05T07:00:00"  # no offset
    points[4]["body"]["systolic_blood_pressure"]["value"] = 400  # outside the plausible range
    f = _write(tmp_path / "bp.jsonl", points)
    res = cli("summary", f, "--json")
    assert res.exit_code == 0, res.output
    ids = [p["header"].get("uuid") or p["header"].get("id") for p in points]
    assert "left out 2" in res.stderr
    assert ids[2] in res.stderr and "UTC offset" in res.stderr
    assert ids[4] in res.stderr and "physiological range" in res.stderr
    res = cli("plot", f, "-o", tmp_path / "bp.png")
    assert res.exit_code == 0 and "(8 readings, 1 patient)" in res.stdout, res.output
    empty = _write(tmp_path / "empty.jsonl", [])
    for args in [("summary", empty), ("plot", empty, "-o", tmp_path / "e.png")]:
        res = cli(*args)
        assert res.exit_code == 1 and "no usable blood-pressure readings" in res.stderr
    res = cli("plot", f, "-o", tmp_path / "no" / "such" / "dir.png")
    assert res.exit_code == 1 and "cannot write" in res.stderr and "Errno" not in res.stderr
