"""Big batches are decrypted by worker processes with the same answers as in one process.

The client sends batches of at least `PARALLEL_MIN_RECORDS` records of one patient to its own
spawned worker processes (issue 9). Here the threshold is lowered so a few records take that
road, against the real local service and phone, and the answers are compared record by record,
failures and their reasons included. No timings are asserted: bench/run.py measures speed.
"""
from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import uuid
from concurrent.futures import ProcessPoolExecutor

import pytest

from jupyter_health import client as jh_client
from jupyter_health import crypto
from jupyter_health.client import (InvalidRequest, JupyterHealthCHClient, RecordDecryptionFailed,
                                   open_records)
from jupyter_health.cloud import LocalCloud
from jupyter_health.keystore import MemoryKeyStore
from jupyter_health.phone import Phone
from jupyter_health.synthetic import synthetic_cohort


def wires(n: int):
    "n sealed records of one patient, the third with a flipped byte, and the patient's key."
    key = crypto.private_key(crypto.new_patient_keyset())
    pub = crypto.public_key(crypto.load_keyset(key))
    points = synthetic_cohort(1, days=max(7, n)).patients[0].data_points[:n]
    out = []
    for i, dp in enumerate(points):
        c, d = crypto.seal_record(json.dumps(dp), pub, f"r{i}", "g1")
        out.append({"client_record_id": f"r{i}", "client_datagroup_id": "g1",
                    "data_type": "BLOOD_PRESSURE", "encrypted_content": c, "encrypted_dek": d})
    raw = bytearray(base64.b64decode(out[2]["encrypted_content"]))
    raw[-1] ^= 1
    out[2]["encrypted_content"] = base64.b64encode(bytes(raw)).decode()
    out.append({"client_record_id": "no-content"})
    return out, key


@pytest.fixture(scope="module")
def pool():
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as p:
        yield p


def test_process_pool_answers_like_one_process(pool, monkeypatch):
    monkeypatch.setattr(jh_client, "PARALLEL_CHUNK", 7)  # several chunks, in order
    recs, key = wires(30)
    here = open_records(recs, key, "patient-1")
    there = open_records(recs, key.to_json(), "patient-1", executor=pool)
    assert [(r.client_record_id, r.json_content) for r in there] == \
        [(r.client_record_id, r.json_content) for r in here]
    assert there.failed == here.failed
    assert [f.client_record_id for f in there.failed] == ["r2", "no-content"]
    with pytest.raises(RecordDecryptionFailed, match="r2"):
        open_records(recs, key, "patient-1", strict=True, executor=pool)


def test_fetch_uses_workers_for_big_batches_and_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(jh_client, "PARALLEL_MIN_RECORDS", 5)
    points = [{"header": dp["header"], "body": dp["body"]}
              for dp in synthetic_cohort(1, days=7).patients[0].data_points]
    with LocalCloud() as svc, Phone() as phone:
        creds = svc.add_partner("Parallel study")
        c = JupyterHealthCHClient(
            service_url=svc.url, deeplink_base=svc.deeplink_base, partner_id=creds.partner_id,
            client_id=creds.client_id, client_secret=creds.client_secret,
            storage_delegate=MemoryKeyStore(), decrypt_workers=2)
        c.perform_initialization("Parallel study")
        phone.share(c.construct_authorization_request_deeplink("p1"), points)
        with c:
            assert c._decrypt_pool(4) is None  # small batches stay in this process
            big = c.fetch_data("p1")
            assert c._pool is not None and big.ok
            assert sorted(r.json_content["header"]["uuid"] for r in big) == \
                sorted(p["header"]["uuid"] for p in points)
            # workers that cannot serve: the client warns, and decrypts in this process
            c._pool.shutdown()
            with caplog.at_level(logging.WARNING, logger="jupyter_health.client"):
                again = c.fetch_data("p1")
            assert "decrypting in this process" in caplog.text
            assert c.decrypt_workers == 0 and c._pool is None
            assert [r.json_content for r in again] == [r.json_content for r in big]
        assert c._pool is None


def test_decrypt_workers_is_checked():
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(InvalidRequest, match="decrypt_workers"):
            JupyterHealthCHClient(service_url="http://127.0.0.1:9", partner_id=str(uuid.uuid4()),
                                  client_id=str(uuid.uuid4()), client_secret="s",
                                  storage_delegate=MemoryKeyStore(), decrypt_workers=bad)


def _fetch_and_leave_open(cfg: dict, conn) -> None:
    "In a child process: fetch through the worker pool and return without `close()`."
    jh_client.PARALLEL_MIN_RECORDS = 5
    c = JupyterHealthCHClient(storage_delegate=MemoryKeyStore(), decrypt_workers=2, **cfg["opts"])
    for k, v in cfg["keys"].items(): c.keystore.set(k, v)
    res = c.fetch_data("p1")
    conn.send((len(res), c._pool is not None))


def test_unclosed_client_lets_a_child_process_exit():
    # multiprocessing joins a child's children before the executor's own exit hook runs, so
    # an open pool would hang the child at exit unless the client stops it first
    points = [{"header": dp["header"], "body": dp["body"]}
              for dp in synthetic_cohort(1, days=7).patients[0].data_points]
    with LocalCloud() as svc, Phone() as phone:
        creds = svc.add_partner("Exit study")
        opts = dict(service_url=svc.url, deeplink_base=svc.deeplink_base,
                    partner_id=creds.partner_id, client_id=creds.client_id,
                    client_secret=creds.client_secret)
        c = JupyterHealthCHClient(storage_delegate=MemoryKeyStore(), **opts)
        c.perform_initialization("Exit study")
        phone.share(c.construct_authorization_request_deeplink("p1"), points)
        keys = {k: c.keystore.get(k) for k in c.keystore.keys()}
        ctx = multiprocessing.get_context("spawn")
        a, b = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_fetch_and_leave_open, args=({"opts": opts, "keys": keys}, b))
        p.start()
        assert a.poll(120), "the child did not answer"
        assert a.recv() == (len(points), True)
        p.join(60)
        if p.is_alive():
            p.kill()
            pytest.fail("the child process hung at exit with its decryption pool open")
        assert p.exitcode == 0
