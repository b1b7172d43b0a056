"""Synthetic patients: reproducible, realistic, and valid Open mHealth against the shared schemas.

The schema checks read the Open mHealth schemas in ../shared/omh in place and skip when a fresh
clone has no ../shared. Blood-pressure 4.0 and its parts refer to IEEE 1752.1 schemas by URL
(time-frame, unit-value, body-posture, descriptive-statistic), which the shared copy does not
hold; they are validated against the Open mHealth schemas of the same name, which the IEEE ones
superseded with the same structure (each says so in its "deprecation" note). The IEEE header
has no schema in the copy either, so its fields are checked one by one below.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT4

from jupyter_health.synthetic import (SyntheticDataError, SyntheticParameters, synthetic_cohort,
                                      write_jsonl)

OMH = "https://w3id.org/openmhealth/schemas/omh/"
IEEE = "https://w3id.org/ieee/ieee-1752-schema/"
IEEE_STAND_INS = {"time-frame-1.0.json": "time-frame-1.x.json",
                  "unit-value-1.0.json": "unit-value-1.x.json",
                  "body-posture-1.0.json": "body-posture-1.x.json",
                  "descriptive-statistic-1.0.json": "descriptive-statistic-1.x.json"}
# The one conformance case the stand-ins cannot reject: IEEE 1752.1 dropped the Open mHealth
# time interval given as date + part_of_day, which the OMH time-interval schema still allows.
# Our points never use it: every effective_time_frame is a bare date_time (checked below).
STAND_IN_GAPS = {("blood-pressure", "4.0", "invalid-timeframe-format.json")}
DATE_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)$")


# ---------------------------------------------------------------- schema validation machinery

@pytest.fixture(scope="module")
def schema_dir(shared_dir) -> Path:
    d = shared_dir / "omh" / "schema" / "omh"
    if not d.is_dir(): pytest.skip(f"{d} is absent: the shared Open mHealth schemas are needed")
    return d


@pytest.fixture(scope="module")
def validators(schema_dir):
    "Validators by (name, version), resolving every $ref to a file in the shared folder."
    def retrieve(uri: str) -> Resource:
        if uri.startswith(OMH): name = uri[len(OMH):]
        elif uri.startswith(IEEE):
            name = uri[len(IEEE):]
            name = IEEE_STAND_INS.get(name, name)
        else: raise NoSuchResource(ref=uri)
        path = schema_dir / name
        if not path.is_file(): raise NoSuchResource(ref=uri)
        return Resource.from_contents(json.loads(path.read_text()), default_specification=DRAFT4)
    registry = Registry(retrieve=retrieve)
    def make(name: str) -> Draft7Validator:
        return Draft7Validator({"$ref": OMH + name}, registry=registry)
    return {("blood-pressure", "4.0"): make("blood-pressure-4.0.json"),
            ("heart-rate", "2.0"): make("heart-rate-2.0.json"),
            "schema-id": make("schema-id-1.x.json"), "header-1.x": make("header-1.x.json")}


def _errors(validator, instance) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(instance)]


def _date_times(body: dict):
    "Every date_time string in a body's effective_time_frame (jsonschema leaves format unchecked)."
    tf = body["effective_time_frame"]
    if "date_time" in tf: yield tf["date_time"]
    for k in ("start_date_time", "end_date_time"):
        if k in tf.get("time_interval", {}): yield tf["time_interval"][k]


def _point_problems(dp: dict, validators, modalities: list[str]) -> list[str]:
    "Why `dp` is not a valid IEEE-header / OMH-body data point (empty when it is)."
    h, b = dp["header"], dp["body"]
    sid = h.get("schema_id", {})
    problems = [f"header.schema_id {e}" for e in _errors(validators["schema-id"], sid)]
    key = (sid.get("name"), sid.get("version"))
    if key not in validators: return problems + [f"unexpected schema {key}"]
    problems += [f"body {e}" for e in _errors(validators[key], b)]
    for k in ("uuid", "schema_id", "source_creation_date_time"):  # IEEE 1752.1 required
        if k not in h: problems.append(f"header lacks {k}")
    try:
        if uuid.UUID(h["uuid"]).version != 4 or str(uuid.UUID(h["uuid"])) != h["uuid"]:
            problems.append(f"header.uuid {h['uuid']!r} is not a canonical v4 UUID")
    except (KeyError, ValueError): problems.append(f"header.uuid {h.get('uuid')!r} malformed")
    if h.get("modality") not in modalities: problems.append(f"modality {h.get('modality')!r}")
    ds = h.get("external_datasheets")
    if not (isinstance(ds, list) and ds and all(
            isinstance(d.get("datasheet_reference"), str) and d["datasheet_reference"]
            and d.get("datasheet_type") in {"manufacturer", "study"} for d in ds)):
        problems.append(f"external_datasheets {ds!r}")
    if set(b.get("effective_time_frame", {})) != {"date_time"}:
        problems.append(f"effective_time_frame {b.get('effective_time_frame')!r} is no date_time")
    for s in [h.get("source_creation_date_time", ""), *_date_times(b)]:
        if not DATE_TIME.match(s or ""): problems.append(f"date-time {s!r} is not RFC 3339")
        else: datetime.fromisoformat(s)
    return problems


@pytest.fixture(scope="module")
def modalities(schema_dir) -> list[str]:
    "The modality values the Open mHealth header allows (IEEE 1752.1 keeps the same two)."
    header = json.loads((schema_dir / "header-1.x.json").read_text())
    return header["properties"]["acquisition_provenance"]["properties"]["modality"]["enum"]


# ---------------------------------------------------------------- the validators can say no

@pytest.mark.parametrize("name,version", [("blood-pressure", "4.0"), ("heart-rate", "2.0")])
def test_validator_agrees_with_shared_test_data(shared_dir, validators, name, version):
    "The upstream conformance bodies pass or fail as labelled, so a pass below means something."
    root = shared_dir / "omh" / "test-data" / "omh" / name / version
    cases = sorted(root.glob("should*/*.json"))
    assert cases, f"no conformance data under {root}"
    for case in cases:
        if (name, version, case.name) in STAND_IN_GAPS: continue
        errors = _errors(validators[(name, version)], json.loads(case.read_text()))
        if case.parent.name == "shouldPass": assert not errors, (case, errors)
        else: assert errors, f"{case} should fail but validated"


def test_broken_points_are_caught(validators, modalities):
    dp = synthetic_cohort(1, 3).patients[0].data_points[0]
    assert _point_problems(dp, validators, modalities) == []
    broken = json.loads(json.dumps(dp))
    broken["body"]["systolic_blood_pressure"]["unit"] = "mmhg"
    broken["body"]["body_posture"] = "stnding"
    broken["header"]["uuid"] = "not-a-uuid"
    broken["header"]["modality"] = "guessed"
    problems = "\n".join(_point_problems(broken, validators, modalities))
    for expected in ["unit: 'mmhg' is not one of", "'stnding' is not one of", "uuid 'not-a-uuid'",
                     "modality 'guessed'"]:
        assert expected in problems, problems
    hr = next(json.loads(json.dumps(x)) for x in synthetic_cohort(1, 3).patients[0].data_points
              if x["header"]["schema_id"]["name"] == "heart-rate")
    assert _point_problems(hr, validators, modalities) == []
    hr["body"]["heart_rate"]["unit"] = "bpm"
    hr["body"]["effective_time_frame"] = {"date_time": "2026-10-19 07:42"}
    problems = "\n".join(_point_problems(hr, validators, modalities))
    assert "'bpm' is not one of" in problems and "not RFC 3339" in problems, problems


# ---------------------------------------------------------------- every emitted point is valid

@pytest.mark.parametrize("kwargs", [{}, {"n_patients": 12, "days": 21, "seed": 3,
                                        "start": "2026-03-23"}], ids=["default", "march"])
def test_every_point_valid(validators, modalities, kwargs):
    cohort = synthetic_cohort(**kwargs)
    points = cohort.all_points()
    assert len(points) > 100
    bad = {}
    for dp in points:
        problems = _point_problems(dp, validators, modalities)
        if problems: bad[dp["header"].get("uuid")] = problems
    assert not bad, f"{len(bad)} of {len(points)} invalid, e.g. {next(iter(bad.items()))}"
    assert len({dp["header"]["uuid"] for dp in points}) == len(points)


# ---------------------------------------------------------------- reproducible

def test_same_seed_same_bytes(tmp_path):
    a = synthetic_cohort(4, 21, seed=7).to_jsonl(tmp_path / "a.jsonl").read_bytes()
    b = synthetic_cohort(4, 21, seed=7).to_jsonl(tmp_path / "b" / "b.jsonl").read_bytes()
    assert a == b and len(a) > 10_000
    p = synthetic_cohort(4, 21, seed=7).patient("patient-002")
    one = write_jsonl(tmp_path / "p.jsonl", p.data_points, patient_id=p.patient_id).read_bytes()
    two = write_jsonl(tmp_path / "q.jsonl", p.data_points, patient_id=p.patient_id).read_bytes()
    assert one == two and one in a


def test_different_seed_differs(tmp_path):
    a = synthetic_cohort(3, 14, seed=1).to_jsonl(tmp_path / "a.jsonl").read_bytes()
    b = synthetic_cohort(3, 14, seed=2).to_jsonl(tmp_path / "b.jsonl").read_bytes()
    assert a != b
    ua = {json.loads(x)["header"]["uuid"] for x in a.splitlines()}
    ub = {json.loads(x)["header"]["uuid"] for x in b.splitlines()}
    assert not ua & ub


def test_jsonl_form(tmp_path):
    "One sorted, compact object per line with the patient's id; nothing else on the line."
    cohort = synthetic_cohort(2, 5)
    path = cohort.to_jsonl(tmp_path / "c.jsonl")
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and b"\r" not in raw and b"\n\n" not in raw
    lines = raw.decode().splitlines()
    assert len(lines) == sum(len(p.data_points) for p in cohort)
    for line in lines:
        obj = json.loads(line)
        assert set(obj) == {"patient_id", "header", "body"}
        assert line == json.dumps(obj, sort_keys=True, separators=(",", ":"))
    assert Counter(json.loads(x)["patient_id"] for x in lines) == {
        p.patient_id: len(p.data_points) for p in cohort}
    with pytest.raises(SyntheticDataError, match="belongs to 'patient-001'"):
        write_jsonl(tmp_path / "x.jsonl", cohort.all_points(), patient_id="patient-002")
    with pytest.raises(SyntheticDataError, match="data point 1 is not"):
        write_jsonl(tmp_path / "x.jsonl", [cohort.all_points()[0], {"body": {}}])


# ---------------------------------------------------------------- time zones and DST

def _offset(s: str) -> int:
    return int(datetime.fromisoformat(s).utcoffset().total_seconds() // 60)


def test_zones_and_dst_crossing():
    "Several zones; a US and a European patient change offset mid-study; stamps match zoneinfo."
    cohort = synthetic_cohort()
    assert len({p.time_zone for p in cohort}) >= 4
    changed = []
    for p in cohort:
        stamps = [dp["body"]["effective_time_frame"]["date_time"] for dp in p.data_points]
        for s in stamps:  # the emitted offset is the zone's offset at that instant
            t = datetime.fromisoformat(s)
            assert t.utcoffset() == t.astimezone(ZoneInfo(p.time_zone)).utcoffset(), (p, s)
        offsets = [_offset(s) for s in stamps]
        if len(set(offsets)) > 1:
            changed.append(p.time_zone)
            assert sorted(offsets) == offsets[::-1] or offsets == sorted(offsets)  # one change
    assert {"America/New_York", "Europe/Berlin"} <= set(changed), changed
    assert "Asia/Kolkata" not in changed


def test_patient_lookup_and_prefix_stability():
    small, big = synthetic_cohort(3, 10, seed=5), synthetic_cohort(9, 10, seed=5)
    assert [p.patient_id for p in big][:4] == [f"patient-00{i}" for i in range(1, 5)]
    assert small.patient("patient-003").data_points == big.patient("patient-003").data_points
    with pytest.raises(SyntheticDataError, match="no patient 'patient-010'"):
        small.patient("patient-010")
    with pytest.raises(SyntheticDataError, match="'Nowhere/Land' is not an IANA"):
        synthetic_cohort(2, time_zones=["UTC", "Nowhere/Land"])
    with pytest.raises(SyntheticDataError, match="days 0"):
        synthetic_cohort(days=0)


# ---------------------------------------------------------------- realistic values and habits

@pytest.fixture(scope="module")
def big():
    return synthetic_cohort(200, 42, seed=11)


def test_values_plausible(big):
    for p in big:
        for dp in p.data_points:
            b = dp["body"]
            if "heart_rate" in b:
                assert 40 <= b["heart_rate"]["value"] <= 150
                continue
            s, d = b["systolic_blood_pressure"]["value"], b["diastolic_blood_pressure"]["value"]
            assert isinstance(s, int) and isinstance(d, int)
            assert 80 <= s <= 230 and 40 <= d <= 140 and s - d >= 15, (p.patient_id, s, d)
    t = big.table()
    assert 120 < t.baseline_systolic.mean() < 136 and 10 < t.baseline_systolic.std() < 18
    assert 0.45 < np.corrcoef(t.baseline_systolic, t.baseline_diastolic)[0, 1] < 0.85
    assert 64 < t.baseline_heart_rate.mean() < 80
    assert set(t.trend) == {"stable", "improving", "worsening"}


def test_heart_rate_paired_with_most(big):
    bp = hr = paired = 0
    for p in big:
        times = Counter()
        for dp in p.data_points:
            times[(dp["header"]["schema_id"]["name"],
                   dp["body"]["effective_time_frame"]["date_time"])] += 1
        bp_times = {t for (n, t) in times if n == "blood-pressure"}
        hr_times = {t for (n, t) in times if n == "heart-rate"}
        assert hr_times <= bp_times, p.patient_id  # every pulse comes with a cuff reading
        bp, hr, paired = bp + len(bp_times), hr + len(hr_times), paired + len(hr_times & bp_times)
    assert 0.8 < paired / bp < 0.99


def test_habits(big):
    "Missed sessions, repeat readings 1-3 minutes apart, a morning surge and both trends."
    days = big.days
    surge, first_last = [], {"improving": [], "worsening": []}
    for p in big:
        r = p.readings
        first = r[~r.repeat]
        assert len(first) < 2 * days  # some sessions are missed
        assert first.groupby("session", observed=True).size().max() <= days
        surge.append(first[first.session == "morning"].systolic.mean()
                     - first[first.session == "evening"].systolic.mean())
        if r.repeat.any():
            gaps = r.time_utc.diff().dt.total_seconds().div(60)[r.repeat]
            assert gaps.between(1, 3).all(), p.patient_id
        if p.trend in first_last:
            day = (r.local_time - r.local_time.iloc[0]).dt.days
            first_last[p.trend].append(r.systolic[day >= days - 7].mean()
                                       - r.systolic[day < 7].mean())
    assert sum(p.readings.repeat.any() for p in big) > 100
    assert 3 < np.nanmean(surge) < 12
    assert np.nanmean(first_last["improving"]) < -4
    assert np.nanmean(first_last["worsening"]) > 2


def test_parameters_are_used():
    hi = synthetic_cohort(40, 7, params=SyntheticParameters(systolic_mean=160, systolic_sd=5))
    assert hi.table().baseline_systolic.mean() > 150


def test_fast_enough():
    "500 patients over 90 days in well under the time of a cup of coffee (CPU time, not wall)."
    t0 = time.process_time()
    cohort = synthetic_cohort(500, 90)
    spent = time.process_time() - t0
    assert sum(len(p.data_points) for p in cohort) > 100_000
    assert spent < 6, f"{spent:.1f} s of CPU"


# ---------------------------------------------------------------- read back through the frames

def test_frames_recover_the_ground_truth(tmp_path):
    "The emitted points, read by `frames.bp_frame` from JSON Lines, give back exactly the readings."
    import pandas as pd
    from jupyter_health.frames import bp_frame
    cohort = synthetic_cohort(5, 28, seed=4)
    got = bp_frame(cohort.to_jsonl(tmp_path / "c.jsonl"))
    key = ["patient_id", "time_utc"]
    got = got.sort_values(key, ignore_index=True)
    truth = cohort.readings().sort_values(key, ignore_index=True)
    cols = ["patient_id", "time_utc", "local_time", "utc_offset_min", "systolic", "diastolic",
            "heart_rate"]
    pd.testing.assert_frame_equal(got[cols], truth[cols], check_dtype=False)
    assert set(got.source) == {p.device for p in cohort}
    assert (got.modality == "sensed").all() and (got.body_posture == "sitting").all()
