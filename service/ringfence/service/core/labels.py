"""Analyst labels in memory: the latest verdict per account and per cluster wins."""

from __future__ import annotations

from collections.abc import Iterable

from ringfence.service.core.model import Label, LabelTarget, LabelValue


class LabelBook:
    def __init__(self, labels: Iterable[Label] = ()) -> None:
        self._accounts: dict[str, Label] = {}
        self._clusters: dict[str, Label] = {}
        for label in labels:
            self.add(label)

    def add(self, label: Label) -> None:
        book = self._accounts if label.target is LabelTarget.ACCOUNT else self._clusters
        book[label.target_id] = label

    def account(self, account_id: str) -> LabelValue | None:
        label = self._accounts.get(account_id)
        return None if label is None else label.value

    def cluster(self, cluster_id: str) -> LabelValue | None:
        label = self._clusters.get(cluster_id)
        return None if label is None else label.value
