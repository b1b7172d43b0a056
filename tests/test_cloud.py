"""The local cloud service and the phone simulator, end to end over real HTTP.

The reference client (PyPI `commonhealth-cloud-storage-client`, with PyJWT) plays the partner
unchanged; `jupyter_health.phone` plays the patient. Each database-dependent test runs on a
SQLite file and, when JUPYTER_HEALTH_TEST_POSTGRES_URL is set, on PostgreSQL in a fresh schema.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote, urlsplit

import httpx
import pytest
import sqlalchemy as sa
import typer
from typer.testing import CliRunner

from jupyter_health import crypto
from jupyter_health.cloud import DEEPLINK_PATH, CloudStore, LocalCloud, cloud_app
from jupyter_health.phone import Phone, PhoneError, PhoneRefused, phone_app

ref = pytest.importorskip("commonhealth_cloud_storage_client",
                          reason="the reference client is a dev requirement (settings.ini)")
pytest.importorskip("jwt", reason="PyJWT must be installed beside the reference client")
from commonhealth_cloud_storage_client.client import CHClient  # noqa: E402
from commonhealth_cloud_storage_client.errors import UserNotConsented  # noqa: E402
from commonhealth_cloud_storage_client.sqlite_delegate import SQLiteDelegate  # noqa: E402

PG_ENV = "JUPYTER_HEALTH_TEST_POSTGRES_URL"
SCOPE = "OMHealthResource.BloodPressure.Read OMHealthResource.HeartRate.Read"


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    "A fresh database: a SQLite file, or a new schema on the CI PostgreSQL (dropped after)."
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/cloud.sqlite"
        return
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set (CI sets it to a PostgreSQL 15 scratch database)")
    schema = "t_" + uuid.uuid4().hex[:12]
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def bp_point(i: int, tag: str = "") -> dict:
    return {"header": {"id": f"{tag}bp-{i}", "creation_date_time": "2026-03-01T07:15:00Z",
                       "schema_id": {"namespace": "omh", "name": "blood-pressure",
                                     "version": "4.0"}},
            "body": {"systolic_blood_pressure": {"value": 110 + i % 40, "unit": "mmHg"},
                     "diastolic_blood_pressure": {"value": 70 + i % 20, "unit": "mmHg"},
                     "effective_time_frame": {"date_time": f"2026-03-01T07:{i % 60:02d}:00Z"}}}


def hr_point(i: int, tag: str = "") -> dict:
    return {"header": {"id": f"{tag}hr-{i}", "creation_date_time": "2026-03-01T07:15:00Z",
                       "schema_id": {"namespace": "omh", "name": "heart-rate",
                                     "version": "2.0"}},
            "body": {"heart_rate": {"value": 60 + i % 30, "unit": "beats/min"}}}


def reference_client(cloud: LocalCloud, creds, tmp_path, name="ks") -> CHClient:
    delegate = SQLiteDelegate(path_to_db_file=str(tmp_path / f"{name}.sqlite"),
                              db_passphrase="pass", db_passphrase_salt="salt")
    delegate.initialize()
    u = urlsplit(cloud.url)
    return CHClient(client_id=creds.client_id, client_secret=creds.client_secret,
                    partner_id=creds.partner_id, storage_delegate=delegate,
                    ch_authorization_deeplink=cloud.deeplink_base, ch_host=u.hostname,
                    ch_port=u.port, ch_scheme="http", logging_enabled=False)


class Partner:
    "A partner played with jupyter_health.crypto (faster than the reference key store)."
    def __init__(self, cloud: LocalCloud, name: str):
        self.cloud, self.creds = cloud, cloud.add_partner(name)
        self.signing = crypto.new_signing_keyset()
        cloud.store.set_signing_keys(self.creds.partner_id,
                                     [crypto.public_key(self.signing).model_dump()])
        self.patients: dict[str, object] = {}

    def link(self, user_id: str, scope: str = SCOPE, base: str | None = None, **over) -> str:
        key = self.patients.setdefault(user_id, crypto.new_patient_keyset())
        claims = crypto.authorization_claims(scope, user_id, self.creds.partner_id,
                                             crypto.public_key(key), 3600)
        token = crypto.build_authorization_jwt(over.pop("signing", self.signing),
                                               {**claims, **over})
        return f"{base or self.cloud.deeplink_base}?authorization_request={token}"

    @property
    def auth(self): return (self.creds.client_id, self.creds.client_secret)

    def users_url(self, user_id: str, partner_id: str | None = None) -> str:
        return (f"{self.cloud.url}/api/v1/sharing-partners/{partner_id or self.creds.partner_id}"
                f"/users/{user_id}")


# ----------------------------------------------------------------------------- reference flow

def test_reference_client_full_flow(db_url, tmp_path):
    "perform_initialization, deep link, phone consent+upload, fetch_data, revocation."
    with LocalCloud(db_url) as cloud:
        creds = cloud.add_partner("placeholder")
        client = reference_client(cloud, creds, tmp_path)
        client.perform_initialization("Hypertension Clinic", "https://clinic.example.org/l.png")
        cfg = client.get_configuration()
        assert (cfg["name"], cfg["logo_uri"]) == ("Hypertension Clinic",
                                                  "https://clinic.example.org/l.png")
        assert len(cfg["signing_keys"]) == 1
        client.perform_initialization("Hypertension Clinic", "https://clinic.example.org/l.png")
        assert client.get_configuration()["signing_keys"] == cfg["signing_keys"]  # kept

        with pytest.raises(UserNotConsented):
            client.fetch_data("patient-1")
        link = client.construct_authorization_request_deeplink("patient-1", SCOPE, 3600)
        assert link.startswith(cloud.deeplink_base + "?authorization_request=")
        with pytest.raises(UserNotConsented):
            client.fetch_data("patient-1")  # a link alone is not a consent

        points = [bp_point(i) for i in range(12)] + [hr_point(i) for i in range(5)]
        with Phone() as phone:
            rep = phone.share(link, points)
            assert (rep.stored, rep.duplicates, rep.skipped) == (17, 0, {})
            assert phone.share(link, points).duplicates == 17  # re-upload does not duplicate
            got = client.fetch_data("patient-1")
            assert sorted((r.resource_type, json.dumps(r.json_content, sort_keys=True))
                          for r in got) == sorted(
                (p["header"]["schema_id"]["name"].upper().replace("-", "_"),
                 json.dumps(p, sort_keys=True)) for p in points)
            phone.revoke(link)
        with pytest.raises(UserNotConsented):
            client.fetch_data("patient-1")
        if db_url.startswith("sqlite"):  # ciphertext only: no plaintext, no private key
            raw = b"".join(f.read_bytes() for f in tmp_path.glob("cloud.sqlite*"))
            assert b"systolic" not in raw and b"bp-3" in raw
            assert b"ASYMMETRIC_PRIVATE" not in raw and b"ASYMMETRIC_PUBLIC" in raw


def test_consent_expiry_ends_sharing(tmp_path):
    "A consent expires with its link's exp: the partner's fetch answers 404 afterwards."
    with LocalCloud(leeway_seconds=0) as cloud:
        p = Partner(cloud, "Clinic")
        now = int(time.time())
        link = p.link("u1", exp=now + 2)
        with Phone() as phone:
            assert phone.share(link, [bp_point(1)]).stored == 1
        assert httpx.get(p.users_url("u1"), auth=p.auth).status_code == 200
        time.sleep(max(0, now + 3 - time.time()))
        r = httpx.get(p.users_url("u1"), auth=p.auth)
        assert (r.status_code, r.json()["reason"]) == (404, "not_consented")


# ----------------------------------------------------------------------------- refusals

def test_each_refusal_reason_reported_by_simulator(tmp_path):
    "Crafted links produce each refusal reason, and the phone CLI prints it and exits 1."
    with LocalCloud() as cloud:
        creds = cloud.add_partner("Clinic")
        client = reference_client(cloud, creds, tmp_path)
        client.perform_initialization("Clinic", None)
        private = crypto.SerializedKey.from_json(
            client.storage_delegate.get_secure_value("private_signing_key"))
        good = client.construct_authorization_request_deeplink("p1", SCOPE, 3600)
        head, claims = crypto.decode_authorization_jwt(good.split("=", 1)[1])
        now = int(time.time())

        def signed(**over) -> str:
            token = crypto.build_authorization_jwt(over.pop("key", private),
                                                   {**claims, "request_id": str(uuid.uuid4()),
                                                    **over})
            return f"{cloud.deeplink_base}?authorization_request={token}"
        h, c, s = good.split("=", 1)[1].split(".")
        forged = base64.urlsafe_b64encode(json.dumps({**claims, "user_id": "p2"}).encode())
        links = {
            "expired": client.construct_authorization_request_deeplink("p1", SCOPE, -3600),
            "not_yet_valid": signed(iat=now + 3600, exp=now + 7200),
            "bad_signature": f"{cloud.deeplink_base}?authorization_request="
                             f"{h}.{forged.rstrip(b'=').decode()}.{s}",
            "unknown_key": signed(key=crypto.new_signing_keyset()),
            "malformed": signed(scope="OMHealthResource.Horoscope.Read"),
            "already_consented": good,
        }
        points = tmp_path / "points.jsonl"
        points.write_text("".join(json.dumps(bp_point(i)) + "\n" for i in range(3)))
        app = typer.Typer()
        app.add_typer(phone_app, name="phone")
        run = CliRunner().invoke
        first = run(app, ["phone", "consent", good, "--data", str(points),
                          "--state", str(tmp_path / "first.json")])
        assert first.exit_code == 0, first.output
        assert "Clinic asks for BLOOD_PRESSURE, HEART_RATE" in first.output
        assert "3 new" in first.output
        for reason, link in links.items():
            res = run(app, ["phone", "consent", link, "--data", str(points),
                            "--state", str(tmp_path / "second.json")])
            assert res.exit_code == 1, (reason, res.output)
            assert f": {reason} - " in res.output, (reason, res.output)
        res = run(app, ["phone", "consent", "https://example.org/no-token",
                        "--state", str(tmp_path / "second.json")])
        assert (res.exit_code, "no authorization_request" in res.output) == (1, True)

        # the service enforces the scope and input rules on its own
        bp_only = signed(scope="OMHealthResource.BloodPressure.Read", user_id="p3")
        with Phone() as phone:
            with pytest.raises(PhoneRefused) as e:
                phone.share(bp_only, [bp_point(1, "x"), hr_point(1, "x")], only_in_scope=False)
            assert (e.value.reason, e.value.status) == ("out_of_scope", 422)
            assert "HEART_RATE" in e.value.detail and "xhr-1" in e.value.detail
            assert phone.status(bp_only)["records"] == 0  # the batch was refused whole
            rep = phone.share(bp_only, [bp_point(1, "x"), hr_point(1, "x")])
            assert (rep.stored, rep.skipped) == (1, {"HEART_RATE": 1})


def test_input_limits(tmp_path):
    "Oversized bodies and records answer 413, malformed JSON/base64 400; serving goes on."
    with LocalCloud(max_body_bytes=64 * 1024, max_record_bytes=4096) as cloud:
        p = Partner(cloud, "Clinic")
        link = p.link("u1")
        with Phone() as phone:
            req, c = phone.consent(link)
            url = f"{cloud.url}/phone/v1/consents/{req.request_id}/records"
            rec = {"client_record_id": "r1", "data_type": "BLOOD_PRESSURE",
                   "encrypted_content": base64.b64encode(b"x" * 5000).decode(),
                   "encrypted_dek": "AAAA"}
            cases = [({"records": [rec]}, 413, "too_large"),
                     ({"records": [{**rec, "encrypted_content": "@@@"}]}, 400, "malformed"),
                     ({"records": [{**rec, "encrypted_content": "AAAA",
                                    "encrypted_dek": "A"}]}, 400, "malformed"),
                     ({"records": "nope"}, 400, "malformed"),
                     ({"records": [rec] * 20}, 413, "too_large")]
            for body, status, reason in cases:
                r = phone.http.post(url, json=body)
                assert (r.status_code, r.json()["reason"]) == (status, reason), r.text
            r = phone.http.post(url, content=b'{"records": [', headers={
                "Content-Type": "application/json"})
            assert (r.status_code, r.json()["reason"]) == (400, "malformed")
            r = phone.http.post(url, content=b"x" * (1 << 20))
            assert (r.status_code, r.json()["reason"]) == (413, "too_large")
            assert phone.share(link, [bp_point(1)]).stored == 1
        assert len(httpx.get(p.users_url("u1"), auth=p.auth).json()) == 1


# ----------------------------------------------------------------------------- isolation

def test_partners_cannot_read_each_other(db_url):
    "Two partners with patients: credentials reach only their own partner's records."
    with LocalCloud(db_url) as cloud:
        a, b = Partner(cloud, "A"), Partner(cloud, "B")
        with Phone() as phone:
            phone.share(a.link("shared-id"), [bp_point(i, "a") for i in range(3)])
            phone.share(b.link("b-only"), [bp_point(i, "b") for i in range(2)])
        with Phone() as other:  # B also has a patient mapped to the same id string as A's
            other.share(b.link("shared-id"), [bp_point(i, "c") for i in range(4)])

        def ids(r): return sorted(x["client_record_id"] for x in r.json())
        assert ids(httpx.get(a.users_url("shared-id"), auth=a.auth)) == ["abp-0", "abp-1",
                                                                          "abp-2"]
        assert len(httpx.get(b.users_url("shared-id"), auth=b.auth).json()) == 4
        assert httpx.get(a.users_url("b-only"), auth=a.auth).status_code == 404
        for url in [b.users_url("b-only"), b.users_url("shared-id"),
                    f"{cloud.url}/api/v1/sharing-partners/{b.creds.partner_id}"]:
            r = httpx.get(url, auth=a.auth)
            assert (r.status_code, r.json()["reason"]) == (403, "forbidden")
            assert "encrypted_content" not in r.text
        for auth in [(a.creds.client_id, b.creds.client_secret), ("x", "y"), None]:
            r = httpx.get(a.users_url("shared-id"), auth=auth)
            assert (r.status_code, r.json()["reason"]) == (401, "unauthorized")
        r = httpx.post(f"{cloud.url}/api/v1/sharing-partners/{b.creds.partner_id}/signing_keys",
                       auth=a.auth, json=[])
        assert r.status_code == 403
        assert len(cloud.store.partner(b.creds.partner_id)["signing_keys"]) == 1
        r = httpx.post(f"{cloud.url}/api/v1/sharing-partners/{a.creds.partner_id}/signing_keys",
                       auth=a.auth, json=[crypto.private_key(a.signing).model_dump()])
        assert (r.status_code, r.json()["reason"]) == (400, "malformed")
        assert "never send a private key" in r.json()["detail"]


# ----------------------------------------------------------------------------- concurrency

def test_racing_phones_get_one_consent(db_url):
    "Phones racing for one link, or for one patient via two links: exactly one consents."
    with LocalCloud(db_url) as cloud:
        p = Partner(cloud, "Clinic")
        links = [p.link("u1")] * 4 + [p.link("u2") for _ in range(4)]

        def consent(link: str) -> str:
            with Phone() as ph:
                try: ph.consent(link)
                except PhoneRefused as e: return e.reason
            return "ok"
        with ThreadPoolExecutor(8) as pool:
            res = list(pool.map(consent, links))
        assert sorted(res[:4]) == ["already_consented"] * 3 + ["ok"]
        assert sorted(res[4:]) == ["already_consented"] * 3 + ["ok"]


def test_concurrent_phones_and_partners(db_url):
    "20 phones upload (each twice) while 5 partners sync incrementally: exact counts."
    n_phones, n_points = 20, 24
    with LocalCloud(db_url) as cloud:
        partners = [Partner(cloud, f"P{i}") for i in range(5)]
        jobs = [(partners[i % 5], f"patient-{i}") for i in range(n_phones)]
        links = {uid: p.link(uid) for p, uid in jobs}
        for p, uid in jobs:  # consent first, so every partner sync sees an active consent
            with Phone(device_key=f"device-{uid}".ljust(40, "k")) as ph:
                ph.consent(links[uid])
        done = threading.Event()

        def upload(job) -> tuple[int, int]:
            p, uid = job
            pts = [bp_point(i, uid) if i % 3 else hr_point(i, uid) for i in range(n_points)]
            with Phone(device_key=f"device-{uid}".ljust(40, "k"), batch_size=5) as ph:
                r1 = ph.share(links[uid], pts)
                r2 = ph.share(links[uid], pts[::-1])
            return r1.stored + r2.stored, r1.duplicates + r2.duplicates

        def sync(p: Partner) -> dict[str, list[str]]:
            seen: dict[str, list[str]] = {uid: [] for q, uid in jobs if q is p}
            cursors: dict[str, str | None] = dict.fromkeys(seen)
            with httpx.Client(auth=p.auth, timeout=60) as http:
                while True:
                    last = done.is_set()
                    for uid in seen:
                        while True:
                            params = {"limit": 7}
                            if cursors[uid]: params["since"] = cursors[uid]
                            page = http.get(p.users_url(uid), params=params).json()
                            seen[uid] += [r["client_record_id"] for r in page["records"]]
                            cursors[uid] = page["next_cursor"] or cursors[uid]
                            if not page["has_more"]: break
                        full = http.get(p.users_url(uid)).json()
                        ids = [r["client_record_id"] for r in full]
                        assert len(ids) == len(set(ids)), "duplicate in a plain fetch"
                    if last: return seen

        with ThreadPoolExecutor(n_phones + 5) as pool:
            syncs = [pool.submit(sync, p) for p in partners]
            results = list(pool.map(upload, jobs))
            done.set()
            seen = {}
            for f in syncs: seen.update(f.result())
        assert results == [(n_points, n_points)] * n_phones
        for p, uid in jobs:
            assert sorted(seen[uid]) == sorted(set(seen[uid])), f"{uid}: synced twice"
            assert len(seen[uid]) == n_points, f"{uid}: incremental sync lost records"
            full = httpx.get(p.users_url(uid), auth=p.auth).json()
            assert len(full) == n_points
            key = p.patients[uid]
            r = full[0]
            crypto.open_record(r["encrypted_content"], r["encrypted_dek"],
                               crypto.private_key(key), r["client_record_id"],
                               r["client_datagroup_id"])
        eng = sa.create_engine(db_url)
        with eng.connect() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM records")) == n_phones * n_points
            assert conn.scalar(sa.text("SELECT count(*) FROM dek_wrappings")) == \
                n_phones * n_points
        eng.dispose()


# ----------------------------------------------------------------------------- crash safety

SERVER = """
import sys, threading
from jupyter_health.cloud import LocalCloud
with LocalCloud(sys.argv[1]) as c:
    print(c.url, flush=True)
    threading.Event().wait()
"""


def _start_server(db_url: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", SERVER, db_url], stdout=subprocess.PIPE,
                            text=True)
    url = proc.stdout.readline().strip()
    assert url.startswith("http://127.0.0.1:"), "the server process did not start"
    return proc, url


def test_killed_mid_upload_leaves_no_half_record(db_url):
    "SIGKILL during an upload: only whole batches are stored, and a retry completes it."
    n, batch = 400, 20
    store = CloudStore(db_url)
    creds = store.add_partner("Clinic")
    signing, patient = crypto.new_signing_keyset(), crypto.new_patient_keyset()
    store.set_signing_keys(creds.partner_id, [crypto.public_key(signing).model_dump()])
    claims = crypto.authorization_claims(SCOPE, "u1", creds.partner_id,
                                         crypto.public_key(patient), 3600)
    token = crypto.build_authorization_jwt(signing, claims)
    points = [bp_point(i) for i in range(n)]
    count = sa.select(sa.func.count()).select_from(sa.table("records"))
    orphans = sa.text("SELECT count(*) FROM records r LEFT JOIN dek_wrappings w "
                      "ON w.record_id = r.id WHERE w.id IS NULL")
    key = "device-key-".ljust(43, "z")
    proc, url = _start_server(db_url)
    try:
        failure: list[BaseException] = []

        def upload():
            with Phone(device_key=key, service_url=url, batch_size=batch) as ph:
                try: ph.share(f"{url}{DEEPLINK_PATH}?authorization_request={token}", points)
                except PhoneError as e: failure.append(e)
        t = threading.Thread(target=upload)
        t.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with store.engine.connect() as conn:
                stored = conn.scalar(count)
            if stored >= n // 4 or not t.is_alive(): break
            time.sleep(0.005)
        proc.kill()
        proc.wait()
        t.join(60)
        with store.engine.connect() as conn:
            stored, orphaned = conn.scalar(count), conn.scalar(orphans)
        assert failure and "cannot reach" in str(failure[0]), "the kill did not cut the upload"
        assert 0 < stored < n and orphaned == 0
        assert stored % batch == 0, "a batch was stored in part"

        proc, url = _start_server(db_url)
        with Phone(device_key=key, service_url=url, batch_size=batch) as ph:
            rep = ph.share(f"{url}{DEEPLINK_PATH}?authorization_request={token}", points)
        assert (rep.stored, rep.duplicates) == (n - stored, stored)
        with store.engine.connect() as conn:
            assert (conn.scalar(count), conn.scalar(orphans)) == (n, 0)
    finally:
        proc.kill()
        proc.wait()
        store.close()


# ----------------------------------------------------------------------------- operator CLI

def test_cloud_cli_add_partner_and_serve(db_url, tmp_path):
    "add-partner prints working credentials once; serve runs 2 workers on one port."
    db = db_url
    app = typer.Typer()
    app.add_typer(cloud_app, name="cloud")
    res = CliRunner().invoke(app, ["cloud", "add-partner", "--db", db, "--name", "Clinic",
                                   "--logo-uri", "https://x.org/l.png"])
    assert res.exit_code == 0, res.output
    creds = dict(line.split(": ", 1) for line in res.output.splitlines() if ": " in line)
    assert set(creds) == {"partner_id", "client_id", "client_secret"}
    if db.startswith("sqlite"):
        assert creds["client_secret"].encode() not in (tmp_path / "cloud.sqlite").read_bytes()
    res = CliRunner().invoke(app, ["cloud", "add-partner", "--db", "nonsense://", "--name", "x"])
    assert res.exit_code == 1 and "not supported" in res.output

    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JUPYTER_HEALTH_CLOUD_DB": db}
    code = ("import typer, sys; from jupyter_health.cloud import cloud_app; "
            "app = typer.Typer(); app.add_typer(cloud_app, name='cloud'); app()")
    proc = subprocess.Popen([sys.executable, "-c", code, "cloud", "serve", "--port", str(port),
                             "--workers", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/sharing-partners/{creds['partner_id']}"
        for _ in range(200):
            try:
                r = httpx.get(url, auth=(creds["client_id"], creds["client_secret"]))
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert r.json()["name"] == "Clinic" and r.json()["signing_keys"] == []
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "jupyter-health cloud on http://127.0.0.1" in out
