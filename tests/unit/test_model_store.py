import json

import numpy as np
import pytest

from ringfence.service.adapters.model_store import LATEST, ModelArtifactError, ModelStore
from ringfence.service.core.clustering import ClusterParams, Snapshot, fit_model
from ringfence.service.core.features import Rarity

KEY = bytes(range(32))


def _snapshot(seed=0) -> Snapshot:
    rng = np.random.default_rng(seed)
    n = 120
    centres = np.repeat(rng.normal(size=(3, 13)) * 3, n // 3, axis=0)
    x = centres + rng.normal(scale=0.05, size=(n, 13))
    empty = [np.zeros(0, np.uint64)] * n
    return Snapshot(now=1e9, params=ClusterParams(min_cluster_size=10, min_samples=5),
                    account_ids=[f"a{i}" for i in range(n)], features=x,
                    rarity=Rarity.fit([]), device_tokens=empty,
                    stack_only=[np.zeros(0, bool)] * n, signature_tokens=empty,
                    beacon_tokens=empty,
                    hours=np.ones((n, 24)), daily_volume=np.ones(n), anonymized=np.zeros(n),
                    age_days=np.full(n, 100.0), regularity=np.full(n, 0.5), previous=[None] * n)


@pytest.fixture(scope="module")
def model():
    return fit_model(_snapshot())


def test_round_trip_and_latest(tmp_path, model):
    store = ModelStore(tmp_path, KEY)
    assert store.latest_path() is None
    info = store.save(model, previous="m-old")
    assert store.latest_path() == info.path
    loaded, again = store.load_latest()
    assert loaded.version == model.version and len(loaded.clusters) == 3
    assert again.previous == "m-old" and again.clusters == 3 and again.accounts == 120
    assert loaded.members == model.members


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "schema", "key"])
def test_damaged_artifacts_are_refused(tmp_path, model, damage):
    store = ModelStore(tmp_path, KEY)
    path = store.save(model).path
    data = path.read_bytes()
    head, _, payload = data.partition(b"\n")
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(head + b"\n" + payload[:-1] + bytes([payload[-1] ^ 1]))
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 100)
    elif damage == "schema":
        header = json.loads(head)
        header["schema_version"] = 999
        path.write_bytes(json.dumps(header).encode() + b"\n" + payload)
    if damage == "key":
        store = ModelStore(tmp_path, bytes(32))
    with pytest.raises(ModelArtifactError):
        store.load(path)


def test_latest_must_name_an_artifact(tmp_path, model):
    store = ModelStore(tmp_path, KEY)
    store.save(model)
    (tmp_path / LATEST).write_text("../../etc/passwd")
    with pytest.raises(ModelArtifactError):
        store.latest_path()
