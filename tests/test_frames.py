"""Frames across inputs and modules: every input form gives the same rows, times and units.

The inline tests in nbs/05_frames.ipynb cover each rule on dicts; here the same cases go through
the JSON Lines reader (Arrow), the Python fallback, the client's ResourceHolder objects, the
synthetic cohort, and strict mode.
"""
from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from jupyter_health.frames import BP_COLUMNS, TIDY_COLUMNS, FrameError, bp_frame, to_frame


def dp(id, body, name="blood-pressure", version="3.1", source="Omron", patient="p1"):
    return {"patient_id": patient, "header": {
        "id": id, "creation_date_time": "2024-03-12T00:00:00Z",
        "schema_id": {"namespace": "omh", "name": name, "version": version},
        "acquisition_provenance": {"source_name": source, "modality": "sensed"}}, "body": body}


def bp(sys, dia, tf, unit="mmHg", **extra):
    return {"systolic_blood_pressure": {"value": sys, "unit": unit},
            "diastolic_blood_pressure": {"value": dia, "unit": unit},
            "effective_time_frame": tf, **extra}


def at(t):
    return {"date_time": t}


CASES = [
    dp("winter", bp(121, 79, at("2024-03-09T08:00:00-05:00"), body_posture="sitting")),
    dp("summer", bp(118, 77, at("2024-03-11T08:00:00-04:00"))),
    dp("summer", bp(118, 77, at("2024-03-11T08:00:00-04:00"))),
    dp("zulu", bp(120, 80, at("2024-03-09T10:00:00Z"))),
    dp("naive", bp(130, 85, at("2024-03-09T10:00:00"))),
    dp("sd", bp(120, 80, {"time_interval": {"start_date_time": "2024-03-12T08:00:00-04:00",
                                            "duration": {"value": 1800, "unit": "sec"}}})),
    dp("pod", bp(119, 78, {"time_interval": {"date": "2024-03-13", "part_of_day": "morning"}})),
    dp("kpa", bp(16.0, 10.7, at("2024-03-14T08:00:00-04:00"), unit="kPa")),
    dp("mmol", {"blood_glucose": {"value": 5.4, "unit": "mmol/L"},
                "effective_time_frame": at("2024-03-14T08:00:00-04:00")}, "blood-glucose", "3.0"),
    dp("mood", {"mood": "fine"}, "mood", "1.0"),
]


def _check(df):
    assert {c: str(t) for c, t in df.dtypes.items()} == TIDY_COLUMNS
    d = df.set_index("data_point_id")
    assert list(d.index) == ["winter", "summer", "zulu", "sd", "pod", "kpa", "mmol", "mood"]
    assert [str(t) for t in d.time_utc[["winter", "summer"]]] == [
        "2024-03-09 13:00:00+00:00", "2024-03-11 12:00:00+00:00"]
    assert [str(t) for t in d.local_time[["winter", "summer"]]] == [
        "2024-03-09 08:00:00", "2024-03-11 08:00:00"]
    assert d.end_utc["sd"] - d.time_utc["sd"] == pd.Timedelta(minutes=30)
    assert d.date_only["pod"] and pd.isna(d.time_utc["pod"]) and d.part_of_day["pod"] == "morning"
    assert (round(d.systolic["kpa"]), round(d.diastolic["kpa"])) == (120, 80)
    assert "kPa" in d["flags"]["kpa"] and "mmol/L" in d["flags"]["mmol"]
    assert round(d.value["mmol"], 1) == 97.3 and d.unit["mmol"] == "mg/dL"
    assert pd.isna(d.measure["mood"]) and json.loads(d.raw_body["mood"]) == {"mood": "fine"}
    assert d.body_posture["winter"] == "sitting" and d.source["winter"] == "Omron"
    ex = df.attrs["excluded"]
    assert [(e["data_point_id"], e["patient_id"], e["field"]) for e in ex] == [
        ("naive", "p1", "effective_time_frame.date_time")]
    assert "never assumed to be UTC" in ex[0]["reason"]
    assert df.attrs["duplicates_dropped"] == 1


def test_dicts():
    _check(to_frame(CASES))


def test_jsonl_path(tmp_path):
    "The Arrow JSON Lines reader gives the same frame (the times keep their offsets)."
    path = tmp_path / "points.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in CASES) + "\n")
    _check(to_frame(path))
    _check(to_frame(str(path)))


def test_python_fallback(tmp_path):
    "A column Arrow cannot type (a step count as number and as object) takes the Python path."
    steps = [dp("s2", {"step_count": 900, "effective_time_frame": {"time_interval": {
                 "start_date_time": "2024-03-14T08:00:00-04:00",
                 "end_date_time": "2024-03-14T09:00:00-04:00"}}}, "step-count", "2.0"),
             dp("s3", {"step_count": {"value": 1200, "unit": "steps"},
                       "effective_time_frame": {"time_interval": {
                           "start_date_time": "2024-03-14T09:00:00-04:00",
                           "end_date_time": "2024-03-14T10:00:00-04:00"}}}, "step-count", "3.0")]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in CASES + steps) + "\n")
    for src in (CASES + steps, path):
        df = to_frame(src)
        s = df[df.measure == "step_count"]
        assert list(s.value) == [900.0, 1200.0] and list(s.unit) == ["steps", "steps"]
        rest = df[~(df.measure == "step_count").fillna(False)].reset_index(drop=True)
        rest.attrs = df.attrs
        _check(rest)


def test_resource_holders():
    "The project's client ResourceHolder (with patient_id) and the reference client's (without)."
    from commonhealth_cloud_storage_client.client import ResourceHolder as RefHolder
    from jupyter_health.client import ResourceHolder
    ours = [ResourceHolder(resource_type="BLOOD_PRESSURE", patient_id="p7",
                           json_content={k: v for k, v in r.items() if k != "patient_id"})
            for r in CASES[:2]]
    ref = [RefHolder({k: v for k, v in r.items() if k != "patient_id"}, "BLOOD_PRESSURE")
           for r in CASES[:2]]
    assert list(to_frame(ours).patient_id) == ["p7", "p7"]
    assert list(to_frame(ref, patient_id="p8").patient_id) == ["p8", "p8"]
    assert list(to_frame(ours, patient_id="other").patient_id) == ["p7", "p7"]


def test_strict_names_record_and_field():
    with pytest.raises(FrameError) as e:
        to_frame(CASES[:5], strict=True)
    assert "'naive'" in str(e.value) and "effective_time_frame.date_time" in str(e.value)
    with pytest.raises(FrameError, match="'kpa'"):
        to_frame([CASES[7]], strict=True)
    with pytest.raises(FrameError, match="'mmol'"):
        to_frame([CASES[8]], strict=True)
    df = to_frame(CASES[:4], strict=True)
    assert list(df.data_point_id) == ["winter", "summer", "zulu"] and df.attrs["excluded"] == []


def test_both_time_forms_and_interval_forms():
    both = dp("both", bp(120, 80, {"date_time": "2024-03-09T08:00:00-05:00",
                                   "time_interval": {"start_date_time": "2024-03-09T08:00:00Z",
                                                     "end_date_time": "2024-03-09T09:00:00Z"}}))
    ed = dp("ed", bp(120, 80, {"time_interval": {"end_date_time": "2024-03-09T08:30:00-05:00",
                                                 "duration": {"value": 0.5, "unit": "h"}}}))
    df = to_frame([both, ed])
    assert list(df.data_point_id) == ["ed"]
    assert str(df.time_utc[0]) == "2024-03-09 13:00:00+00:00"
    assert str(df.local_time[0]) == "2024-03-09 08:00:00" and df.utc_offset_min[0] == -300
    assert df.attrs["excluded"][0]["field"] == "effective_time_frame"
    with pytest.raises(FrameError, match="'both'"):
        to_frame([both], strict=True)


def test_ieee_header_and_unknown_minor(caplog):
    hr = {"patient_id": "p1", "header": {
        "uuid": "u-1", "schema_id": {"namespace": "omh", "name": "heart-rate", "version": "2.9"},
        "source_creation_date_time": "2024-03-09T13:00:00Z", "modality": "sensed",
        "external_datasheets": [{"datasheet_type": "manufacturer",
                                 "datasheet_reference": "https://example.org/watch"}]},
        "body": {"heart_rate": {"value": 58, "unit": "beats/min"},
                 "effective_time_frame": at("2024-03-09T08:00:00-05:00")}}
    with caplog.at_level(logging.WARNING):
        df = to_frame([hr])
    assert df.data_point_id[0] == "u-1" and df.measure[0] == "heart_rate" and df.value[0] == 58
    assert df.source[0] == "https://example.org/watch" and df.modality[0] == "sensed"
    assert "heart-rate:2.9" in caplog.text


def test_near_duplicates_and_same_source_repeats():
    pair = [dp("cuff", bp(120, 80, at("2024-03-09T08:00:00-05:00")), source="Omron"),
            dp("app", bp(121, 80, at("2024-03-09T08:00:03-05:00")), source="Health app"),
            dp("again", bp(119, 79, at("2024-03-09T08:01:00-05:00")), source="Omron")]
    df = to_frame(pair).set_index("data_point_id")
    assert df["flags"]["cuff"].startswith("near-duplicate of app")
    assert df["flags"]["app"].startswith("near-duplicate of cuff")
    assert df["flags"]["again"] == ""


def test_bp_frame_contract_and_pairing(tmp_path):
    hr = dp("hr", {"heart_rate": {"value": 64, "unit": "beats/min"},
                   "effective_time_frame": at("2024-03-09T08:00:00-05:00")}, "heart-rate", "2.0")
    carried = dp("bp2", bp(125, 82, at("2024-03-10T08:00:00-04:00"),
                           heart_rate={"value": 70, "unit": "beats/min"}))
    other_source = dp("hr2", {"heart_rate": {"value": 99, "unit": "beats/min"},
                              "effective_time_frame": at("2024-03-11T08:00:00-04:00")},
                      "heart-rate", "2.0", source="Watch")
    recs = [CASES[0], hr, carried, CASES[1], other_source, CASES[4]]
    for src in (recs, to_frame(recs)):
        w = bp_frame(src)
        assert list(w.columns) == list(BP_COLUMNS)
        assert {c: str(t) for c, t in w.dtypes.items()} == BP_COLUMNS
        assert list(w.data_point_id) == ["winter", "bp2", "summer"]
        assert w.heart_rate.tolist()[:2] == [64.0, 70.0] and pd.isna(w.heart_rate[2])
        assert w.attrs["excluded"][0]["data_point_id"] == "naive"
    e = bp_frame([])
    assert list(e.columns) == list(BP_COLUMNS) and len(e) == 0
    assert {c: str(t) for c, t in e.dtypes.items()} == BP_COLUMNS
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert len(to_frame(empty)) == 0 and list(to_frame(empty).columns) == list(TIDY_COLUMNS)


def test_synthetic_cohort_round_trip(tmp_path):
    "The synthetic cohort's JSON Lines file loads without exclusions, one row per reading."
    synthetic = pytest.importorskip("jupyter_health.synthetic")
    cohort = synthetic.synthetic_cohort(n_patients=3, days=7, seed=1)
    path = cohort.to_jsonl(tmp_path / "cohort.jsonl")
    df = to_frame(path)
    points = cohort.all_points()
    assert len(df) == len(points) and df.attrs["excluded"] == []
    assert df.patient_id.notna().all() and df.time_utc.notna().all()
    w = bp_frame(df)
    assert len(w) == sum(p["header"]["schema_id"]["name"] == "blood-pressure" for p in points)


def test_bad_values_are_excluded_with_their_field():
    hr = lambda id, v, u, t="2024-03-09T08:00:00Z": dp(
        id, {"heart_rate": {"value": v, "unit": u}, "effective_time_frame": at(t)},
        "heart-rate", "2.0")
    df = to_frame([hr("text", "61", "beats/min"), hr("bpm", 61, "beats/s"),
                   hr("num-time", 61, "beats/min", 12345), hr("feb30", 61, "beats/min",
                                                              "2024-02-30T08:00:00Z"),
                   hr("fine", 61, "beats/min")])
    assert list(df.data_point_id) == ["fine"]
    got = {e["data_point_id"]: (e["field"], e["reason"]) for e in df.attrs["excluded"]}
    assert got["text"] == ("heart_rate.value", "is not a number")
    assert got["bpm"] == ("heart_rate.unit", "unit 'beats/s' is not a unit of heart-rate")
    assert got["num-time"] == ("effective_time_frame.date_time", "is not a valid date-time")
    assert got["feb30"] == ("effective_time_frame.date_time", "is not a valid date-time")
