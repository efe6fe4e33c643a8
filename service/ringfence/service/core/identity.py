"""Keyed hashing of identifiers: raw IPs and device ids never leave the request path."""

from __future__ import annotations

import hashlib
from typing import Any


class Hasher:
    """Keyed BLAKE2b (a MAC, unlike a plain hash: an IPv4 space cannot be brute-forced without
    the key). ``key`` comes from settings; rotating it starts fresh linkage state.

    The hash of ``value`` in namespace ``kind`` is BLAKE2b(key, ``kind + "\\0" + value``). Keying
    BLAKE2b costs a compression of the key block, so each (kind, size) keeps a state that has
    absorbed the key and the kind, and a hash copies it instead of starting over."""

    __slots__ = ("_key", "_states")

    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("hash key must be 16..64 bytes")
        self._key = key
        self._states: dict[tuple[str, int], Any] = {}

    def _state(self, kind: str, size: int) -> Any:
        state = self._states.get((kind, size))
        if state is None:
            state = hashlib.blake2b(f"{kind}\x00".encode(), key=self._key, digest_size=size)
            if len(self._states) < 64:  # kinds are a few constants; never grow without bound
                self._states[(kind, size)] = state
        return state.copy()

    def token(self, kind: str, value: str) -> int:
        """A 64-bit keyed hash of ``value`` in namespace ``kind`` (for profile sets)."""
        digest = self._state(kind, 8)
        digest.update(value.encode())
        return int.from_bytes(digest.digest(), "big")

    def hexdigest(self, kind: str, value: str) -> str:
        """A 128-bit keyed hash as hex (for stored keys: device keys, IP and prefix hashes)."""
        digest = self._state(kind, 16)
        digest.update(value.encode())
        return digest.hexdigest()
