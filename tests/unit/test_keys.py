"""Hash key handling: keygen, key ids, and noticing a rotation at start."""

from __future__ import annotations

import logging

from ringfence.service import cli
from ringfence.service.keys import KEY_ID_META, key_id, note_key
from ringfence.service.settings import Settings


class MetaStore:
    def __init__(self) -> None:
        self.meta: dict[str, str] = {}

    def save_meta(self, key: str, value: str) -> None:
        self.meta[key] = value

    def load_meta(self, key: str) -> str | None:
        return self.meta.get(key)


def test_keygen_prints_a_key_the_settings_accept(capsys):
    assert cli.main(["keygen"]) == 0
    first = capsys.readouterr().out.strip()
    assert len(first) == 64 and int(first, 16) >= 0
    assert Settings(hash_key=first).hash_key.get_secret_value() == first
    assert cli.main(["keygen", "--bytes", "48"]) == 0
    second = capsys.readouterr().out.strip()
    assert len(second) == 96 and second[:64] != first


def test_key_id_names_a_key_without_revealing_it():
    a, b = bytes(range(32)), bytes(range(1, 33))
    assert key_id(a) == key_id(a) and key_id(a) != key_id(b)
    assert len(key_id(a)) == 12 and key_id(a) not in a.hex()


def test_a_rotated_key_is_noticed_once_with_a_warning(caplog):
    store = MetaStore()
    old, new = b"\x01" * 32, b"\x02" * 32
    with caplog.at_level(logging.INFO, logger="ringfence.service.keys"):
        assert note_key(store, old, 30.0) is False  # first start
        assert note_key(store, old, 30.0) is False  # same key
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert note_key(store, new, 30.0) is True  # rotated
        assert note_key(store, new, 30.0) is False  # and only once
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "linked afresh" in warning.getMessage()
    assert warning.previous_hash_key_id == key_id(old)
    assert old.hex() not in caplog.text and new.hex() not in caplog.text
    assert store.meta[KEY_ID_META] == key_id(new)
