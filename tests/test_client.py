"""`JupyterHealthCHClient` against real HTTP servers: a scripted one, the local cloud, and the
reference client sharing its key-store file."""
from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from jupyter_health import crypto
from jupyter_health.client import (CHConnectionError, CHHTTPError, InsecureConnection,
                                   JupyterHealthCHClient, KeyStoreStateError, PatientNotConsented,
                                   RecordDecryptionFailed, RedirectRefused, RetryPolicy)
from jupyter_health.config import JupyterHealthError
from jupyter_health.keystore import MemoryKeyStore, SQLiteKeyStore

PARTNER = "0c3a1e7e-0e35-4c5e-9a49-4c8a4a0c1f10"
CLIENT_ID = "7d4b0b40-2f42-4b8d-8d39-7a1a3e5b6c2d"
SECRET = "s3cret-for-tests"
DEEPLINK = "https://app.example.org/m/phr/cloud-sharing/authorize"
BASE = f"/api/v1/sharing-partners/{PARTNER}"


# --- a scripted HTTP server -----------------------------------------------------------------

class Scripted:
    """A real HTTP server on 127.0.0.1 answering from a script, keyed by (method, path).

    A route's value is a list of answers used in turn (the last one repeats), or a callable
    `f(query: dict, body: bytes) -> answer`. An answer is `(status, headers, body)`; a dict or
    list body is sent as JSON."""

    def __init__(self):
        self.routes: dict[tuple[str, str], object] = {}
        self.seen: list[tuple[str, str, dict, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                parts = urlsplit(self.path)
                outer.seen.append((self.command, self.path, dict(self.headers), body))
                route = outer.routes.get((self.command, parts.path))
                if route is None: ans = (404, {}, {"detail": f"no route {parts.path}"})
                elif callable(route): ans = route(parse_qs(parts.query), body)
                else: ans = route.pop(0) if len(route) > 1 else route[0]
                status, headers, payload = ans
                if isinstance(payload, (dict, list)):
                    data, ctype = json.dumps(payload).encode(), "application/json"
                else:
                    data, ctype = str(payload or "").encode(), "text/plain"
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items(): self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args): pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def requests(self, method: str | None = None) -> list:
        return [s for s in self.seen if method is None or s[0] == method]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Scripted()
    yield s
    s.close()


def make_client(url: str, store=None, **kw) -> JupyterHealthCHClient:
    return JupyterHealthCHClient(
        service_url=url, partner_id=PARTNER, client_id=CLIENT_ID, client_secret=SECRET,
        deeplink_base=DEEPLINK, storage_delegate=store if store is not None else MemoryKeyStore(),
        http_timeout=5, **kw)


PARTNER_OBJ = {"name": "Study", "logo_uri": "https://example.org/logo.png", "signing_keys": []}


# --- transport: URLs, auth, retries, errors, redirects ----------------------------------------

def test_urls_and_basic_auth(server):
    server.routes[("GET", BASE)] = [(200, {}, PARTNER_OBJ)]
    with make_client(server.url) as c:
        assert c.get_partner()["name"] == "Study"
    (method, path, headers, _), = server.requests()
    assert (method, path) == ("GET", BASE)
    expected = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert headers["Authorization"] == f"Basic {expected}"
    assert c.service_url() == f"{server.url}{BASE}"  # explicit port, no trailing slash


def test_503_retry_after_seconds_then_200(server):
    server.routes[("GET", BASE)] = [(503, {"Retry-After": "1"}, {"detail": "busy"}),
                                    (200, {}, PARTNER_OBJ)]
    t0 = time.monotonic()
    assert make_client(server.url).get_partner() == PARTNER_OBJ
    assert time.monotonic() - t0 >= 0.95, "Retry-After: 1 was not honoured"
    assert len(server.requests("GET")) == 2


def test_503_retry_after_http_date_then_200(server):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=2), usegmt=True)
    server.routes[("GET", BASE)] = [(503, {"Retry-After": when}, "busy"), (200, {}, PARTNER_OBJ)]
    t0 = time.monotonic()
    assert make_client(server.url).get_partner() == PARTNER_OBJ
    assert time.monotonic() - t0 >= 0.9  # whole seconds in the date: at least ~1 s remains
    assert len(server.requests("GET")) == 2


def test_429_backoff_then_200(server):
    server.routes[("GET", BASE)] = [(429, {}, "slow down"), (429, {}, "slow down"),
                                    (200, {}, PARTNER_OBJ)]
    c = make_client(server.url, retry=RetryPolicy(backoff=0.05))
    assert c.get_partner() == PARTNER_OBJ
    assert len(server.requests("GET")) == 3


def test_retries_are_capped(server):
    server.routes[("GET", BASE)] = [(503, {}, {"detail": "down for maintenance"})]
    c = make_client(server.url, retry=RetryPolicy(attempts=3, backoff=0.01))
    with pytest.raises(CHHTTPError) as e: c.get_partner()
    assert e.value.status == 503 and "down for maintenance" in str(e.value)
    assert len(server.requests("GET")) == 3


def test_retry_after_beyond_the_cap_gives_up_at_once(server):
    server.routes[("GET", BASE)] = [(503, {"Retry-After": "3600"}, {"detail": "back in 1h"})]
    t0 = time.monotonic()
    with pytest.raises(CHHTTPError) as e: make_client(server.url).get_partner()
    assert time.monotonic() - t0 < 2 and len(server.requests("GET")) == 1
    assert "back in 1h" in str(e.value) and "3600" in str(e.value)


def test_500_carries_the_server_detail(server):
    server.routes[("GET", BASE)] = [(500, {}, {"detail": "database is on fire"})]
    with pytest.raises(CHHTTPError) as e: make_client(server.url).get_partner()
    assert isinstance(e.value, JupyterHealthError) and isinstance(e.value, Exception)
    assert (e.value.status, e.value.detail) == (500, "database is on fire")
    assert "HTTP 500" in str(e.value) and "database is on fire" in str(e.value)
    assert len(server.requests("GET")) == 1  # a 500 is not retried


def test_error_text_body_and_401_hint(server):
    server.routes[("GET", BASE)] = [(401, {}, "bad credentials")]
    with pytest.raises(CHHTTPError) as e: make_client(server.url).get_partner()
    assert e.value.detail == "bad credentials" and "CLIENT_SECRET" in str(e.value)


def test_connection_errors_are_retried_then_reported():
    s = Scripted(); url = s.url; s.close()  # a port nobody listens on any more
    c = make_client(url, retry=RetryPolicy(attempts=3, backoff=0.01))
    waits = []
    c._sleep = waits.append
    with pytest.raises(CHConnectionError) as e: c.get_partner()
    assert len(waits) == 2 and "3 attempt" in str(e.value)


def test_post_is_not_retried_and_key_not_stored(server):
    server.routes[("GET", BASE)] = [(200, {}, PARTNER_OBJ)]
    server.routes[("POST", BASE + "/signing_keys")] = [(503, {"Retry-After": "1"}, "busy")]
    store = MemoryKeyStore()
    with pytest.raises(CHHTTPError) as e: make_client(server.url, store).perform_initialization(
        "Study", "https://example.org/logo.png")
    assert e.value.status == 503
    assert len(server.requests("POST")) == 1
    assert store.get("private_signing_key") is None


def test_redirect_to_another_origin_is_refused(server):
    other = Scripted()
    try:
        other.routes[("GET", BASE)] = [(200, {}, PARTNER_OBJ)]
        server.routes[("GET", BASE)] = [(302, {"Location": other.url + BASE}, "")]
        with pytest.raises(RedirectRefused) as e: make_client(server.url).get_partner()
        assert isinstance(e.value, InsecureConnection) and other.url in str(e.value)
        assert other.requests() == [], "credentials reached another origin"
    finally:
        other.close()


def test_same_origin_redirect_is_followed_with_credentials(server):
    server.routes[("GET", BASE)] = [(301, {"Location": BASE + "/v2"}, "")]
    server.routes[("GET", BASE + "/v2")] = [(200, {}, PARTNER_OBJ)]
    assert make_client(server.url).get_partner() == PARTNER_OBJ
    assert all(h.get("Authorization", "").startswith("Basic ") for _, _, h, _ in server.seen)


def test_plain_http_to_a_remote_host_is_refused():
    with pytest.raises(InsecureConnection, match="unencrypted"):
        make_client("http://chcs.example.org")
    make_client("https://chcs.example.org")  # fine
    make_client("http://localhost:8000")  # loopback: fine


# --- initialization --------------------------------------------------------------------------

def test_perform_initialization_registers_then_stores(server):
    posted = {}

    def keys(_, body):
        posted["keys"] = json.loads(body)
        return 200, {}, {"signing_keys": posted["keys"]}
    server.routes[("GET", BASE)] = [(200, {}, PARTNER_OBJ)]
    server.routes[("POST", BASE + "/signing_keys")] = keys
    server.routes[("POST", BASE)] = [(200, {}, {"name": "New name"})]
    store = MemoryKeyStore()
    res = make_client(server.url, store).perform_initialization("New name",
                                                                "https://example.org/logo.png")
    assert res.registered_signing_key and res.updated == {"name": "New name"}
    (key,) = posted["keys"]
    assert set(key) == {"material", "algorithm", "library", "serialization_mode"}
    assert key["algorithm"] == "ECDSA_P256" and "ASYMMETRIC_PUBLIC" in key["material"]
    private = crypto.SerializedKey.from_json(store.get("private_signing_key"))
    assert crypto.public_key(crypto.load_keyset(private)).material == key["material"]
    update = [json.loads(b) for m, p, _, b in server.requests("POST") if p == BASE]
    assert update == [{"name": "New name"}]  # only the field that differs

    server.seen.clear()  # a second run: keys exist, nothing differs, nothing posted
    server.routes[("GET", BASE)] = [(200, {}, {**PARTNER_OBJ, "name": "New name",
                                               "signing_keys": posted["keys"]})]
    res = make_client(server.url, store).perform_initialization("New name",
                                                                "https://example.org/logo.png")
    assert not res.registered_signing_key and res.updated == {} and res.has_signing_key
    assert server.requests("POST") == []


# --- records ---------------------------------------------------------------------------------

def _point(n: int) -> dict:
    return {"header": {"id": str(uuid.uuid4()), "schema_id": {
        "namespace": "omh", "name": "blood-pressure", "version": "4.0"}},
        "body": {"systolic_blood_pressure": {"value": 110 + n, "unit": "mmHg"},
                 "diastolic_blood_pressure": {"value": 70 + n, "unit": "mmHg"}}}


def _wire(pub, rid, gid, n, dek="AES128_GCM", data_type="BLOOD_PRESSURE"):
    c, d = crypto.seal_record(json.dumps(_point(n)), pub, rid, gid, dek)
    return {"client_record_id": rid, "client_datagroup_id": gid, "data_type": data_type,
            "encrypted_content": c, "encrypted_dek": d, "created_at": "2026-01-01T00:00:00Z"}


def _enrolled(client, patient_id):
    "Make a link for the patient (creating mapping and key); the patient's public key."
    client.keystore.set("private_signing_key",
                        crypto.private_key(crypto.new_signing_keyset()).to_json())
    jwt = client.construct_authorization_request(patient_id)
    claims = crypto.decode_authorization_jwt(jwt)[1]
    return claims["user_id"], crypto.SerializedKey(**claims["encryption_public_key"])


def _flip(rec, field, i):
    raw = bytearray(base64.b64decode(rec[field]))
    raw[i] ^= 1
    return {**rec, field: base64.b64encode(bytes(raw)).decode()}


def _bad_batch(pub):
    "Two good records (AES128 and AES256 DEKs) among four that must not open."
    return [_wire(pub, "r1", "g1", 1),
            {**_wire(pub, "r3", "g1", 3), "client_datagroup_id": "g2"},  # wrong datagroup id
            _wire(pub, "r2", "g1", 2, "AES256_GCM"),
            {**_wire(pub, "r4", "g1", 4), "client_record_id": "r4-renamed"},  # wrong record id
            _flip(_wire(pub, "r5", "g1", 5), "encrypted_content", -3),  # a tampered byte
            _flip(_wire(pub, "r6", "g1", 6, "AES256_GCM"), "encrypted_dek", 40)]


FAILED = ["r3", "r4-renamed", "r5", "r6"]


def test_fetch_data_opens_good_records_and_reports_bad_ones(server, caplog):
    c = make_client(server.url)
    mapped, pub = _enrolled(c, "alice")
    batch = _bad_batch(pub)
    server.routes[("GET", f"{BASE}/users/{mapped}")] = [(200, {}, batch)]
    with caplog.at_level(logging.WARNING, logger="jupyter_health.client"):
        res = c.fetch_data("alice")
    assert [r.client_record_id for r in res] == ["r1", "r2"]
    assert [r.resource_type for r in res] == ["BLOOD_PRESSURE"] * 2
    assert [r.json_content["body"]["systolic_blood_pressure"]["value"] for r in res] == [111, 112]
    assert all(r.patient_id == "alice" and r.client_datagroup_id == "g1" for r in res)
    assert [f.client_record_id for f in res.failed] == FAILED
    assert all(f.reason for f in res.failed)
    assert "4 of 6 records did not decrypt" in caplog.text and "r4-renamed" in caplog.text
    bp = [r.json_content["body"] for r in res if r.resource_type == "BLOOD_PRESSURE"]  # the seed
    assert len(bp) == 2
    with pytest.raises(RecordDecryptionFailed) as e: c.fetch_data("alice", strict=True)
    assert [f.client_record_id for f in e.value.failed] == FAILED
    assert "'alice'" in str(e.value)


def test_not_consented_and_consent_checks(server):
    c = make_client(server.url)
    with pytest.raises(PatientNotConsented, match="'nobody'"): c.fetch_data("nobody")
    assert server.requests() == [] and c.list_patients() == []  # asking created nothing
    assert c.is_consented("nobody") is False and c.needs_consent("nobody") is True
    mapped, _ = _enrolled(c, "bob")
    server.routes[("GET", f"{BASE}/users/{mapped}")] = [
        (404, {}, {"detail": "no consent"}), (404, {}, {"detail": "no consent"}), (200, {}, [])]
    with pytest.raises(PatientNotConsented, match="'bob'"): c.fetch_data("bob")
    assert c.is_consented("bob") is False  # the second 404
    assert c.needs_consent("bob") is False and c.is_consented("bob") is True  # now 200
    assert c.list_patients() == ["bob"]


def test_missing_patient_key_is_explained(server):
    c = make_client(server.url)
    mapped, pub = _enrolled(c, "carol")
    c.keystore.clear("patient_encryption_key/patient/carol")
    server.routes[("GET", f"{BASE}/users/{mapped}")] = [(200, {}, [_wire(pub, "r1", "g", 1)])]
    with pytest.raises(KeyStoreStateError, match="'carol'"): c.fetch_data("carol")


def test_fetch_many_keeps_going(server):
    c = make_client(server.url)
    good, pub = _enrolled(c, "p-good")
    gone, _ = _enrolled(c, "p-revoked")
    broken, _ = _enrolled(c, "p-500")
    server.routes[("GET", f"{BASE}/users/{good}")] = [(200, {}, [_wire(pub, "r1", "g", 1)])]
    server.routes[("GET", f"{BASE}/users/{gone}")] = [(404, {}, {"detail": "revoked"})]
    server.routes[("GET", f"{BASE}/users/{broken}")] = [(500, {}, {"detail": "kaput"})]
    ids = ["p-good", "p-revoked", "p-500", "p-unknown", "p-good"]
    res = c.fetch_many(ids, progress=True, max_workers=3)
    assert list(res.results) == ["p-good"] and len(res.results["p-good"]) == 1
    assert list(res.errors) == ["p-revoked", "p-500", "p-unknown"]
    assert isinstance(res.errors["p-revoked"], PatientNotConsented)
    assert isinstance(res.errors["p-500"], CHHTTPError) and "kaput" in str(res.errors["p-500"])
    assert not res.ok and [r.patient_id for r in res.records] == ["p-good"]


def test_sync_pages_with_the_cursor_extension(server):
    c = make_client(server.url)
    mapped, pub = _enrolled(c, "dora")
    records = [_wire(pub, f"r{i}", "g", i) for i in range(5)]

    def pages(q, _):
        since, limit = int(q.get("since", ["-1"])[0]), int(q["limit"][0])
        rest = [(i, r) for i, r in enumerate(records) if i > since]
        page = rest[:limit]
        return 200, {}, {"records": [r for _, r in page],
                         "next_cursor": str(page[-1][0]) if page else None,
                         "has_more": len(rest) > limit}
    server.routes[("GET", f"{BASE}/users/{mapped}")] = pages
    res = c.sync("dora", page_size=2)
    assert [r.client_record_id for r in res] == ["r0", "r1", "r2", "r3", "r4"]
    assert res.next_cursor == "4" and len(server.requests()) == 3
    records.append(_wire(pub, "r5", "g", 5))
    again = c.sync("dora", since=res.next_cursor, page_size=2)
    assert [r.client_record_id for r in again] == ["r5"] and again.next_cursor == "5"
    assert [r.client_record_id for r in c.sync("dora", since="5")] == []


def test_sync_without_the_extension_gets_everything(server):
    c = make_client(server.url)
    mapped, pub = _enrolled(c, "erin")
    server.routes[("GET", f"{BASE}/users/{mapped}")] = [(200, {}, [_wire(pub, "r1", "g", 1)])]
    res = c.sync("erin")
    assert [r.client_record_id for r in res] == ["r1"] and len(server.requests()) == 1


# --- time zones ------------------------------------------------------------------------------

TZ_SCRIPT = """
import json, time
from jupyter_health import crypto
from jupyter_health.client import JupyterHealthCHClient
from jupyter_health.keystore import MemoryKeyStore
time.tzset()
c = JupyterHealthCHClient(service_url="https://chcs.example.org", partner_id="{p}",
    client_id="{c}", client_secret="x", storage_delegate=MemoryKeyStore())
c.keystore.set("private_signing_key", crypto.private_key(crypto.new_signing_keyset()).to_json())
link = c.construct_authorization_request_deeplink("p1", expiration_seconds=1800)
claims = crypto.decode_authorization_jwt(link.split("authorization_request=")[1])[1]
print(json.dumps({{"exp": claims["exp"], "iat": claims["iat"], "now": time.time(),
                  "offset": time.localtime().tm_gmtoff}}))
""".format(p=PARTNER, c=CLIENT_ID)


@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Etc/GMT+12"])
def test_link_lifetime_is_right_in_any_time_zone(tz):
    env = {"TZ": tz, "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", TZ_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["offset"] == {"Pacific/Kiritimati": 14 * 3600, "Etc/GMT+12": -12 * 3600}[tz]
    assert r["exp"] - r["iat"] == 1800
    assert r["exp"] > r["now"] and abs(r["iat"] - r["now"]) < 5


# --- the reference client on the same key store ----------------------------------------------

@pytest.fixture
def reference():
    ref = pytest.importorskip("commonhealth_cloud_storage_client",
                              reason="the reference client (dev extra) is not installed")
    pytest.importorskip("jwt", reason="PyJWT, which the reference client needs, is missing")
    return ref


def _ref_client(ref, path, url="https://chcs.example.org:443"):
    delegate = ref.SQLiteDelegate(path_to_db_file=str(path), db_passphrase="pass phrase",
                                  db_passphrase_salt="salt value")
    delegate.initialize()
    u = urlsplit(url)
    return ref.CHClient(CLIENT_ID, SECRET, PARTNER, delegate, DEEPLINK, ch_host=u.hostname,
                        ch_port=u.port, ch_scheme=u.scheme, logging_enabled=False)


def _link_claims(link):
    return crypto.decode_authorization_jwt(link.split("?authorization_request=")[1])[1]


def test_key_store_shared_with_the_reference_client(reference, tmp_path):
    path = tmp_path / "keys.sqlite"
    ref = _ref_client(reference, path)
    signing_pub, signing_priv = reference.crypto.generate_tink_signing_key()
    ref.storage_delegate.set_secure_value("private_signing_key", signing_priv.to_json())
    ours = make_client("https://chcs.example.org", SQLiteKeyStore(path, "pass phrase",
                                                                  "salt value"))
    scope = "OMHealthResource.BloodPressure.Read"
    pub = [crypto.SerializedKey(**vars(signing_pub))]
    for first, second, patient in [(ref, ours, "alice"), (ours, ref, "bob")]:
        a = _link_claims(first.construct_authorization_request_deeplink(patient, scope, 1800))
        b = _link_claims(second.construct_authorization_request_deeplink(patient, scope, 1800))
        assert a["user_id"] == b["user_id"]
        assert a["encryption_public_key"] == b["encryption_public_key"]
        assert a["iss"] == b["iss"] == PARTNER and a["request_id"] != b["request_id"]
    assert ours.list_patients() == ["alice", "bob"]
    for link in [ref.construct_authorization_request_deeplink("alice", scope, 1800),
                 ours.construct_authorization_request_deeplink("alice", scope, 1800)]:
        claims = crypto.verify_authorization_jwt(link.split("=", 1)[1], pub)
        assert set(claims) == set(crypto.AUTH_CLAIMS)


def test_reference_and_ours_open_the_same_records(reference, server, tmp_path):
    path = tmp_path / "keys.sqlite"
    ours = make_client(server.url, SQLiteKeyStore(path, "pass phrase", "salt value"))
    mapped, pub = _enrolled(ours, "alice")
    batch = _bad_batch(pub)
    server.routes[("GET", f"{BASE}/users/{mapped}")] = [(200, {}, batch)]
    ref = _ref_client(reference, path, server.url)
    theirs = ref.fetch_data("alice")  # drops the bad ones silently; we report them
    mine = ours.fetch_data("alice")
    assert [r.json_content for r in theirs] == [r.json_content for r in mine]
    assert [r.resource_type for r in theirs] == [r.resource_type for r in mine]
    assert len(mine) == 2 and len(mine.failed) == 4


# --- end to end against the local cloud ------------------------------------------------------

def test_end_to_end_with_the_local_cloud():
    cloud = pytest.importorskip("jupyter_health.cloud",
                                reason="jupyter_health.cloud (helper C) is not exported yet")
    import httpx
    with cloud.LocalCloud() as svc:
        creds = svc.add_partner("Heart study")
        c = JupyterHealthCHClient(
            service_url=svc.url, deeplink_base=svc.deeplink_base, partner_id=creds.partner_id,
            client_id=creds.client_id, client_secret=creds.client_secret,
            storage_delegate=MemoryKeyStore(), http_timeout=10)
        init = c.perform_initialization("Heart study", "https://example.org/logo.png")
        assert init.registered_signing_key and init.updated == {
            "logo_uri": "https://example.org/logo.png"}
        assert c.get_partner()["logo_uri"] == "https://example.org/logo.png"
        assert not c.perform_initialization("Heart study",
                                            "https://example.org/logo.png").registered_signing_key
        link = c.construct_authorization_request_deeplink(
            "patient-1", scope="OMHealthResource.BloodPressure.Read", expiration_seconds=1800)
        assert link.startswith(svc.deeplink_base + "?authorization_request=")
        assert c.needs_consent("patient-1")

        jwt = link.split("authorization_request=")[1]
        claims = crypto.decode_authorization_jwt(jwt)[1]
        phone = httpx.Client(base_url=svc.url, headers={
            "Authorization": "Bearer " + "d" * 40}, timeout=10)
        consent = phone.post("/phone/v1/consents", json={"authorization_request": jwt})
        assert consent.status_code == 201, consent.text
        rid, gid = consent.json()["request_id"], consent.json()["client_datagroup_id"]
        pub = crypto.SerializedKey(**claims["encryption_public_key"])
        recs = [{k: v for k, v in _wire(pub, f"rec-{i}", gid, i, dek).items()
                 if k in ("client_record_id", "data_type", "encrypted_content", "encrypted_dek")}
                for i, dek in enumerate(["AES128_GCM", "AES256_GCM", "AES128_GCM"])]
        up = phone.post(f"/phone/v1/consents/{rid}/records", json={"records": recs})
        assert up.status_code == 200, up.text

        assert c.is_consented("patient-1") and not c.needs_consent("patient-1")
        res = c.fetch_data("patient-1")
        assert res.ok and [r.client_record_id for r in res] == ["rec-0", "rec-1", "rec-2"]
        assert [r.json_content["body"]["systolic_blood_pressure"]["value"] for r in res] == \
            [110, 111, 112]
        page = c.fetch_data("patient-1", limit=2)
        assert len(page) == 2 and page.has_more and page.next_cursor
        synced = c.sync("patient-1", page_size=2)
        assert [r.client_record_id for r in synced] == ["rec-0", "rec-1", "rec-2"]
        assert list(c.sync("patient-1", since=synced.next_cursor)) == []

        with pytest.raises(CHHTTPError) as e: c.fetch_data("patient-1", since="not-a-cursor")
        assert e.value.status == 400 and "not a cursor" in e.value.detail

        assert phone.post(f"/phone/v1/consents/{rid}/revoke").status_code == 200
        with pytest.raises(PatientNotConsented, match="'patient-1'"): c.fetch_data("patient-1")
        assert c.needs_consent("patient-1")
        many = c.fetch_many(["patient-1"])
        assert isinstance(many.errors["patient-1"], PatientNotConsented)

        wrong = JupyterHealthCHClient(
            service_url=svc.url, partner_id=creds.partner_id, client_id=creds.client_id,
            client_secret="wrong", storage_delegate=MemoryKeyStore())
        with pytest.raises(CHHTTPError) as e: wrong.get_partner()
        assert e.value.status == 401 and "CLIENT_SECRET" in str(e.value)
        phone.close()


def test_fetch_data_frame(server):
    frames = pytest.importorskip("jupyter_health.frames",
                                 reason="jupyter_health.frames (helper D) is not exported yet")
    c = make_client(server.url)
    mapped, pub = _enrolled(c, "fay")
    server.routes[("GET", f"{BASE}/users/{mapped}")] = [(200, {}, [_wire(pub, "r1", "g", 1)])]
    df = c.fetch_data_frame("fay")
    assert len(df) >= 1 and set(df["patient_id"]) == {"fay"}
    assert df.equals(frames.to_frame(c.fetch_data("fay")))


# --- configuration ---------------------------------------------------------------------------

def test_no_arguments_reads_the_environment(monkeypatch, tmp_path, server):
    for k in [k for k in os.environ if k.startswith("JUPYTER_HEALTH_")]:
        monkeypatch.delenv(k)
    env = {"SERVICE_URL": server.url, "PARTNER_ID": PARTNER, "CLIENT_ID": CLIENT_ID,
           "CLIENT_SECRET": SECRET, "KEYSTORE_PATH": str(tmp_path / "ks.sqlite"),
           "KEYSTORE_PASSPHRASE": "pass phrase", "KEYSTORE_SALT": "salt value",
           "HTTP_TIMEOUT": "7"}
    for k, v in env.items(): monkeypatch.setenv("JUPYTER_HEALTH_" + k, v)
    server.routes[("GET", BASE)] = [(200, {}, PARTNER_OBJ)]
    c = JupyterHealthCHClient()
    assert isinstance(c.keystore, SQLiteKeyStore) and (tmp_path / "ks.sqlite").exists()
    assert c._http.timeout.read == 7 and c.get_partner() == PARTNER_OBJ
    assert c.settings.deeplink.startswith("https://app.commonhealth.org/")
    again = JupyterHealthCHClient(c.settings, http_timeout=3)  # a settings object + override
    assert again.settings.http_timeout == 3 and again.settings.partner_id == c.settings.partner_id
    c.close(); again.close()
