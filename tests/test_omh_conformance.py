"""The Open mHealth models agree with the public conformance data in ../shared/omh/test-data.

For every supported schema version, each `shouldPass` file validates and each `shouldFail` file
does not, against that version and every later minor version of the same major.
"""
from __future__ import annotations

import json

import pytest

from jupyter_health.omh import (BODY_MODELS, IEEEHeader, IEEETimeFrame, IEEETimeInterval,
                                OMHHeader, OMHValidationError, parse_date_time, validate_body)

OMH = "omh/test-data"


def _minor(v):
    major, minor = v.split(".")
    return int(major), int(minor)


def _cases(shared):
    "(schema id it is checked against, file, should pass) for every supported schema."
    root = shared / OMH / "omh"
    cases = []
    for (ns, name, version) in BODY_MODELS:
        for outcome in ("shouldPass", "shouldFail"):
            for f in sorted((root / name / version / outcome).glob("*.json")):
                later = [v for (n2, nm, v) in BODY_MODELS if (n2, nm) == (ns, name)
                         and _minor(v)[0] == _minor(version)[0]
                         and _minor(v)[1] >= _minor(version)[1]]
                cases += [(f"{ns}:{name}:{v}", f, outcome == "shouldPass") for v in later]
    return cases


def test_supported_schemas_have_data(shared_dir):
    "Each schema family we claim has conformance files (so the test below cannot pass vacuously)."
    names = {name for (_, name, _) in BODY_MODELS}
    cases = _cases(shared_dir)
    assert {c[0].split(":")[1] for c in cases} == names
    assert sum(1 for c in cases if not c[2]) > 50 and sum(1 for c in cases if c[2]) > 70


def test_bodies(shared_dir):
    wrong = []
    for schema, f, should_pass in _cases(shared_dir):
        body = json.loads(f.read_text())
        try:
            validate_body(body, schema)
            passed, why = True, ""
        except OMHValidationError as e:
            passed, why = False, str(e).replace("\n", " ")
        if passed != should_pass:
            wrong.append(f"{f.relative_to(shared_dir)} against {schema}: "
                         f"{'passed' if passed else 'failed'} {why}")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("family,model", [("header", OMHHeader)])
def test_headers(shared_dir, family, model):
    for version in ["1.0", "1.1", "1.2"]:
        for outcome in ("shouldPass", "shouldFail"):
            for f in (shared_dir / OMH / "omh" / family / version / outcome).glob("*.json"):
                doc = json.loads(f.read_text())
                try:
                    model.model_validate(doc)
                    ok = True
                except ValueError:
                    ok = False
                assert ok == (outcome == "shouldPass"), f


def test_date_times(shared_dir):
    for outcome in ("shouldPass", "shouldFail"):
        for f in (shared_dir / OMH / "omh" / "date-time" / "1.0" / outcome).glob("*.json"):
            try:
                parse_date_time(json.loads(f.read_text()))
                ok = True
            except ValueError:
                ok = False
            assert ok == (outcome == "shouldPass"), f


@pytest.mark.parametrize("family,model", [("time-frame", IEEETimeFrame),
                                          ("time-interval", IEEETimeInterval)])
def test_ieee_time_frames(shared_dir, family, model):
    files = list((shared_dir / OMH / "ieee" / family / "1.0").glob("*/*.json"))
    assert files
    for f in files:
        try:
            model.model_validate(json.loads(f.read_text()))
            ok = True
        except ValueError:
            ok = False
        assert ok == (f.parent.name == "shouldPass"), f


def test_ieee_header():
    "An IEEE 1752.1 header needs its uuid, schema id and source creation time."
    good = {"uuid": "a1", "schema_id": {"namespace": "omh", "name": "heart-rate",
                                        "version": "2.0"},
            "source_creation_date_time": "2024-03-09T08:00:00-05:00", "modality": "sensed",
            "external_datasheets": [{"datasheet_type": "manufacturer",
                                     "datasheet_reference": "https://example.org/cuff"}]}
    assert IEEEHeader.model_validate(good).data_point_id == "a1"
    for key in ["uuid", "schema_id", "source_creation_date_time"]:
        with pytest.raises(ValueError):
            IEEEHeader.model_validate({k: v for k, v in good.items() if k != key})
    with pytest.raises(ValueError):
        IEEEHeader.model_validate({**good, "modality": "guessed"})


def test_validate_command_on_conformance_files(shared_dir):
    "The CLI passes a version's shouldPass files and reports each shouldFail file with a field."
    import typer
    from typer.testing import CliRunner

    from jupyter_health.omh import validate_command
    app = typer.Typer()
    app.command("validate")(validate_command)
    app.command("noop")(lambda: None)  # two commands, so `validate` is addressed by name
    root = shared_dir / OMH / "omh" / "blood-glucose" / "3.0"
    good = sorted(str(p) for p in (root / "shouldPass").glob("*.json"))
    bad = sorted(str(p) for p in (root / "shouldFail").glob("*.json"))
    schema = ["--schema", "omh:blood-glucose:3.0"]
    res = CliRunner().invoke(app, ["validate", *good, *schema])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(app, ["validate", *good, *bad, *schema])
    assert res.exit_code == 1
    for f in bad:
        assert f in res.output
    assert "missing-time-frame.json: effective_time_frame: Field required" in res.output
    assert f"{len(good)} of {len(good) + len(bad)} files valid" in res.output
    res = CliRunner().invoke(app, ["validate", good[0]])
    assert res.exit_code == 1 and "pass --schema" in res.output
