"""The key of the keyed hashes: from settings, or generated once and kept in the data dir."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

KEY_BYTES = 32


def load_or_create_key(configured_hex: str | None, data_dir: Path | None) -> bytes:
    """The configured key; else the one in ``data_dir/hash.key`` (created with mode 0600 on
    first start); else, with no data dir, a random key for this process only."""
    if configured_hex:
        return bytes.fromhex(configured_hex)
    if data_dir is None:
        return secrets.token_bytes(KEY_BYTES)
    path = data_dir / "hash.key"
    if path.exists():
        key = bytes.fromhex(path.read_text().strip())
        if len(key) < 16:
            raise ValueError(f"{path} holds a key shorter than 16 bytes")
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    os.replace(tmp, path)
    return key
