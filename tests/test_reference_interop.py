"""This project and the public reference client share key stores, deep links and records.

The reference is PyPI `commonhealth-cloud-storage-client` 1.0.5 (with PyJWT beside it, which its
package forgets to declare). Nothing here talks to a network: the reference client builds deep
links from its key store alone, and its record decryption is called on records sealed here.
"""
from __future__ import annotations

import base64
import json
import multiprocessing
import sqlite3
import stat
import uuid
from contextlib import closing
from datetime import datetime, timedelta, timezone

import pytest

ref = pytest.importorskip("commonhealth_cloud_storage_client",
                          reason="the reference client is a dev requirement (settings.ini)")
pyjwt = pytest.importorskip("jwt", reason="PyJWT must be installed beside the reference client")
from commonhealth_cloud_storage_client import crypto as ref_crypto  # noqa: E402
from commonhealth_cloud_storage_client.client import CHClient  # noqa: E402
from commonhealth_cloud_storage_client.sqlite_delegate import SQLiteDelegate  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import tink  # noqa: E402
from tink import signature  # noqa: E402
from tink.proto import aes_gcm_pb2, tink_pb2  # noqa: E402

from jupyter_health.crypto import (  # noqa: E402
    AUTH_CLAIMS, AuthorizationRequestError, RecordDecryptionError, SerializedKey,
    authorization_claims, build_authorization_jwt, keyset_key_ids, load_keyset,
    new_patient_keyset, new_signing_keyset, open_record, private_key, public_key, seal_record,
    verify_authorization_jwt)
from jupyter_health.keystore import (  # noqa: E402
    PRIVATE_SIGNING_KEY, MemoryKeyStore, SQLiteKeyStore, WrongPassphrase,
    patient_encryption_key_key, patient_id_mapping_key, patient_ids)

PASSPHRASE, SALT = "a passphrase with ünïcode ✓", "deployment-salt"
SCOPE = "OMHealthResource.HeartRate.Read OMHealthResource.BloodPressure.Read"
DEEPLINK = "https://appdev.tcpdev.org/m/phr/cloud-sharing/authorize"
POINT = {"header": {"id": "dp-1", "schema_id": {"namespace": "omh", "name": "blood-pressure",
                                                "version": "3.1"}},
         "body": {"systolic_blood_pressure": {"value": 118, "unit": "mmHg"},
                  "diastolic_blood_pressure": {"value": 76, "unit": "mmHg"}}}


def ref_store(path, passphrase=PASSPHRASE, salt=SALT) -> SQLiteDelegate:
    d = SQLiteDelegate(path_to_db_file=str(path), db_passphrase=passphrase,
                       db_passphrase_salt=salt)
    d.initialize()
    return d


def ref_client(delegate, partner_id: str) -> CHClient:
    return CHClient(client_id=str(uuid.uuid4()), client_secret="unused", partner_id=partner_id,
                    storage_delegate=delegate, ch_authorization_deeplink=DEEPLINK,
                    ch_host="127.0.0.1", ch_port=9, ch_scheme="http", logging_enabled=False)


def token_of(link: str) -> str:
    return parse_qs(urlsplit(link).query)["authorization_request"][0]


# ---------------------------------------------------------------- key-store files

def test_reference_file_opens_here(tmp_path):
    path = tmp_path / "ref.sqlite"
    d = ref_store(path)
    d.set_secure_value("private_signing_key", "signing ✓")
    d.set_secure_value("patient_id_mapping/p1", "uuid-1")
    d.set_secure_value("patient_id_mapping/p1", "uuid-1b")  # the reference upserts
    d.set_secure_value("patient_encryption_key/patient/p1", "{}")
    ours = SQLiteKeyStore(path, PASSPHRASE, SALT)
    assert ours.get("private_signing_key") == "signing ✓"
    assert ours.get(patient_id_mapping_key("p1")) == "uuid-1b"
    assert patient_ids(ours) == ["p1"]
    assert ours.keys() == sorted(["private_signing_key", "patient_id_mapping/p1",
                                  "patient_encryption_key/patient/p1"])
    ours.set("patient_id_mapping/p2", "uuid-2")  # and writing into its file is read back there
    assert d.get_secure_value("patient_id_mapping/p2") == "uuid-2"


def test_our_file_opens_in_reference(tmp_path):
    path = tmp_path / "sub" / "ours.sqlite"
    ours = SQLiteKeyStore(path, PASSPHRASE, SALT)
    ours.set(PRIVATE_SIGNING_KEY, "signing ✓")
    ours.set(patient_id_mapping_key("p1"), "uuid-1")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    d = ref_store(path)
    assert d.get_secure_value("private_signing_key") == "signing ✓"
    assert d.get_secure_value("patient_id_mapping/p1") == "uuid-1"
    d.clear_value("patient_id_mapping/p1")
    assert ours.get(patient_id_mapping_key("p1")) is None
    with closing(sqlite3.connect(path)) as con:
        cols = [(r[1], r[2], r[3]) for r in con.execute("PRAGMA table_info(key_value)")]
    assert cols == [("key", "TEXT", 1), ("enc_value", "TEXT", 1), ("date", "INTEGER", 1)]


def test_reference_file_with_wrong_passphrase(tmp_path):
    path = tmp_path / "ref.sqlite"
    ref_store(path).set_secure_value("private_signing_key", "x")
    with pytest.raises(WrongPassphrase, match="JUPYTER_HEALTH_KEYSTORE_PASSPHRASE"):
        SQLiteKeyStore(path, "not the passphrase", SALT)
    with pytest.raises(WrongPassphrase, match="does not decrypt"):
        SQLiteKeyStore(path, PASSPHRASE, "another salt")


def test_our_stores_serve_as_reference_delegates(tmp_path):
    "Our stores answer to the reference's delegate method names, so its client can use them."
    for store in [MemoryKeyStore(), SQLiteKeyStore(tmp_path / "d.sqlite", PASSPHRASE, SALT)]:
        handle = new_signing_keyset()
        store.set(PRIVATE_SIGNING_KEY, private_key(handle).to_json())
        link = ref_client(store, str(uuid.uuid4())).construct_authorization_request_deeplink(
            "p-9", SCOPE, 600)
        claims = verify_authorization_jwt(token_of(link), [public_key(handle)])
        assert claims["user_id"] == store.get(patient_id_mapping_key("p-9"))


# ---------------------------------------------------------------- authorization JWT

def test_reference_link_verifies_here(tmp_path):
    "A deep link built by the reference client, from a key store we populated, verifies here."
    store = SQLiteKeyStore(tmp_path / "ks.sqlite", PASSPHRASE, SALT)
    signing = new_signing_keyset()
    store.set(PRIVATE_SIGNING_KEY, private_key(signing).to_json())
    partner_id = str(uuid.uuid4())
    link = ref_client(ref_store(store.path), partner_id).construct_authorization_request_deeplink(
        "patient-1", SCOPE, 1800)
    assert link.startswith(DEEPLINK + "?authorization_request=")
    claims = verify_authorization_jwt(token_of(link), [public_key(new_signing_keyset()),
                                                       public_key(signing)])
    assert set(AUTH_CLAIMS) <= set(claims)
    assert claims["scope"] == SCOPE and claims["iss"] == partner_id
    assert claims["exp"] - claims["iat"] == 1800
    assert len(base64.b64decode(claims["nonce"])) == 32
    uuid.UUID(claims["request_id"])
    # the reference stored the patient's mapping and private key in the shared file
    assert claims["user_id"] == store.get(patient_id_mapping_key("patient-1"))
    patient = load_keyset(store.get(patient_encryption_key_key("patient-1")))
    assert SerializedKey(**claims["encryption_public_key"]) == public_key(patient)
    with pytest.raises(AuthorizationRequestError) as e:
        verify_authorization_jwt(token_of(link), [public_key(signing)],
                                 now=datetime.now(timezone.utc) + timedelta(hours=1))
    assert e.value.reason == "expired"
    with pytest.raises(AuthorizationRequestError) as e:
        verify_authorization_jwt(token_of(link), [public_key(new_signing_keyset())])
    assert e.value.reason == "unknown_key"


def test_our_jwt_verifies_with_reference_side_logic():
    "Our JWT parses with PyJWT (claims, times) and its signature checks with the reference's Tink."
    signing = new_signing_keyset()
    partner_pub = public_key(signing)
    claims = authorization_claims(SCOPE, str(uuid.uuid4()), str(uuid.uuid4()),
                                  public_key(new_patient_keyset()), 1800)
    token = build_authorization_jwt(signing, claims)
    assert pyjwt.get_unverified_header(token) == {"alg": "TinkES256", "typ": "JWT"}
    decoded = pyjwt.decode(token, options={"verify_signature": False, "verify_exp": True,
                                           "verify_iat": True, "require": list(AUTH_CLAIMS)})
    assert decoded == claims
    # the reference's own crypto helpers read the public key as registered with the service
    ref_pub = ref_crypto.SerializedKey.from_json(partner_pub.to_json())
    verifier = ref_crypto.keyset_handle_from_json(ref_pub.material).primitive(
        signature.PublicKeyVerify)
    head_claims, sig = token.rsplit(".", 1)
    raw_sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    verifier.verify(raw_sig, head_claims.encode("ascii"))
    assert int.from_bytes(raw_sig[1:5], "big") == keyset_key_ids(signing)[0]
    with pytest.raises(tink.TinkError):
        verifier.verify(raw_sig, head_claims.encode("ascii") + b"x")


def test_reference_signing_key_builds_our_jwt():
    "A signing key generated by the reference (indented JSON) signs here and verifies there."
    ref_pub, ref_priv = ref_crypto.generate_tink_signing_key()
    claims = authorization_claims(SCOPE, "u", "p", public_key(new_patient_keyset()), 60)
    token = build_authorization_jwt(ref_priv.to_json(), claims)
    assert verify_authorization_jwt(token, [ref_pub.to_json()]) == claims
    assert SerializedKey.from_json(ref_pub.to_json()).algorithm == "ECDSA_P256"


# ---------------------------------------------------------------- records

def ref_decrypt(record: dict, private: SerializedKey) -> dict:
    handle = ref_crypto.keyset_handle_from_json(private.material)
    return ref_client(MemoryKeyStore(), "p")._decrypt_resource(record, handle)


@pytest.mark.parametrize("dek", ["AES128_GCM", "AES256_GCM"])
def test_sealed_records_open_in_both(dek):
    patient = new_patient_keyset()
    text = json.dumps(POINT)
    ec, ed = seal_record(text, public_key(patient), "rec-1", "group-1", dek=dek)
    record = {"client_record_id": "rec-1", "client_datagroup_id": "group-1",
              "data_type": "BLOOD_PRESSURE", "encrypted_content": ec, "encrypted_dek": ed}
    assert ref_decrypt(record, private_key(patient)) == POINT
    assert json.loads(open_record(ec, ed, patient, "rec-1", "group-1")) == POINT
    # the DEK inside is the requested type, written as a binary keyset
    unwrapped = patient.primitive(tink.hybrid.HybridDecrypt).decrypt(
        base64.b64decode(ed), b"rec-1group-1")
    info = ref_crypto.keyset_handle_from_bytes(unwrapped).keyset_info().key_info[0]
    assert info.type_url.endswith("AesGcmKey")
    key_data = tink_pb2.Keyset.FromString(unwrapped).key[0].key_data
    assert len(aes_gcm_pb2.AesGcmKey.FromString(key_data.value).key_value) == \
        (32 if dek == "AES256_GCM" else 16)


def test_reference_patient_key_seals_and_opens():
    "A patient key made by the reference (as its deep links carry) seals here, opens there."
    ref_pub, ref_priv = ref_crypto.generate_tink_encryption_key()
    ec, ed = seal_record(json.dumps(POINT), ref_pub.to_json(), "r", "g", dek="AES256_GCM")
    record = {"client_record_id": "r", "client_datagroup_id": "g", "data_type": "BLOOD_PRESSURE",
              "encrypted_content": ec, "encrypted_dek": ed}
    assert ref_decrypt(record, ref_priv) == POINT
    assert json.loads(open_record(ec, ed, ref_priv.to_json(), "r", "g")) == POINT


def _flip(b64: str, at: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("change", ["datagroup", "record_id", "content_byte", "dek_byte"])
def test_tampering_reported(change):
    patient = new_patient_keyset()
    ec, ed = seal_record(json.dumps(POINT), public_key(patient), "rec-7", "group-7")
    rid, gid = "rec-7", "group-7"
    if change == "datagroup": gid = "group-8"
    if change == "record_id": rid = "rec-8"
    if change == "content_byte": ec = _flip(ec, len(base64.b64decode(ec)) // 2)
    if change == "dek_byte": ed = _flip(ed, 40)
    record = {"client_record_id": rid, "client_datagroup_id": gid, "data_type": "BLOOD_PRESSURE",
              "encrypted_content": ec, "encrypted_dek": ed}
    with pytest.raises(tink.TinkError):  # the reference fails too (and then drops the record)
        ref_decrypt(record, private_key(patient))
    with pytest.raises(RecordDecryptionError, match=rid) as e:
        open_record(ec, ed, patient, rid, gid)
    assert e.value.client_record_id == rid
    assert e.value.stage == ("content" if change == "content_byte" else "dek")


# ---------------------------------------------------------------- two processes, one file

def _writer(path: str, tag: str, n: int, barrier) -> None:
    store = SQLiteKeyStore(path, PASSPHRASE, SALT, busy_timeout=60)
    barrier.wait()
    for i in range(n):
        store.set(f"{tag}/{i:03}", f"{tag}-{i}")
        store.set("shared/last", f"{tag}-{i}")


def test_two_processes_lose_no_write(tmp_path):
    path = str(tmp_path / "busy.sqlite")
    SQLiteKeyStore(path, PASSPHRASE, SALT)  # create the file before the race
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(path, tag, 200, barrier)) for tag in "ab"]
    for p in procs: p.start()
    for p in procs: p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    store = SQLiteKeyStore(path, PASSPHRASE, SALT)
    for tag in "ab":
        keys = store.keys(f"{tag}/")
        assert len(keys) == 200
        assert all(store.get(k) == f"{tag}-{int(k[2:])}" for k in keys[::17])
    assert store.get("shared/last") in {"a-199", "b-199"}
    assert len(store.keys()) == 401
