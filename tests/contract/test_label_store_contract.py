"""The LabelStore contract (core/ports.py), run against memory, SQLite and PostgreSQL: labels
come back in the order they were added, and durable backends keep them across a restart and
share them between instances."""

from __future__ import annotations

import pytest

from ringfence.service.core.model import Label, LabelTarget, LabelValue

T0 = 1_790_000_000.0

LABELS = [
    Label(LabelTarget.ACCOUNT, "acct-1", LabelValue.ABUSIVE, T0, "ana", "fleet member"),
    Label(LabelTarget.CLUSTER, "c-42", LabelValue.BENIGN, T0 + 1.5, "bo", "campus NAT, ünï"),
    Label(LabelTarget.ACCOUNT, "acct-1", LabelValue.BENIGN, T0 + 2, "", ""),
]


def test_labels_come_back_in_order(label_backend):
    store = label_backend.open()
    assert store.all() == []
    for label in LABELS:
        store.add(label)
    assert store.all() == LABELS


def test_labels_survive_a_restart(label_backend):
    if not label_backend.durable:
        pytest.skip("memory only, by design")
    store = label_backend.open()
    for label in LABELS:
        store.add(label)
    store.close()
    assert label_backend.open().all() == LABELS


def test_replicas_share_labels(label_backend):
    if not label_backend.shared:
        pytest.skip("one process's labels, by design")
    first, second = label_backend.open(), label_backend.open()
    first.add(LABELS[0])
    second.add(LABELS[1])
    assert first.all() == second.all() == LABELS[:2]
