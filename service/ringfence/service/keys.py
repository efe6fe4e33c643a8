"""The hash key as operators handle it: generate one, name it without revealing it, and notice
at start that it changed (a rotation), which starts linkage afresh (docs/operations.md)."""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import Protocol

log = logging.getLogger(__name__)

KEY_ID_META = "hash_key_id"


class MetaStore(Protocol):
    def save_meta(self, key: str, value: str) -> None: ...

    def load_meta(self, key: str) -> str | None: ...


def new_key_hex(n_bytes: int = 32) -> str:
    return secrets.token_bytes(n_bytes).hex()


def key_id(key: bytes) -> str:
    """A short public name for a key: a keyed hash of a constant, so it reveals nothing about
    the key and two operators can tell whether they hold the same one."""
    return hashlib.blake2b(b"ringfence key id", key=key, digest_size=6).hexdigest()


def note_key(store: MetaStore, key: bytes, retention_days: float) -> bool:
    """Record which key the stored profiles are keyed by; log a warning and return True when
    it differs from the one recorded at the last start (the key was rotated)."""
    current = key_id(key)
    previous = store.load_meta(KEY_ID_META)
    store.save_meta(KEY_ID_META, current)
    if previous is None or previous == current:
        log.info("hash key in use", extra={"hash_key_id": current})
        return False
    log.warning("hash key changed since the last start: accounts, devices and prefixes are "
                "linked afresh; profiles keyed by the old key are no longer matched and are "
                "purged once idle for retention_days",
                extra={"hash_key_id": current, "previous_hash_key_id": previous,
                       "retention_days": retention_days})
    return True
