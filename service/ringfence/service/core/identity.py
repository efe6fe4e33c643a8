"""Keyed hashing of identifiers: raw IPs and device ids never leave the request path."""

from __future__ import annotations

import hashlib


class Hasher:
    """Keyed BLAKE2b (a MAC, unlike a plain hash: an IPv4 space cannot be brute-forced without
    the key). ``key`` comes from settings; rotating it starts fresh linkage state."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("hash key must be 16..64 bytes")
        self._key = key

    def token(self, kind: str, value: str) -> int:
        """A 64-bit keyed hash of ``value`` in namespace ``kind`` (for profile sets)."""
        digest = hashlib.blake2b(f"{kind}\x00{value}".encode(), key=self._key, digest_size=8)
        return int.from_bytes(digest.digest(), "big")

    def hexdigest(self, kind: str, value: str) -> str:
        """A 128-bit keyed hash as hex (for stored keys: device keys, IP and prefix hashes)."""
        digest = hashlib.blake2b(f"{kind}\x00{value}".encode(), key=self._key, digest_size=16)
        return digest.hexdigest()
