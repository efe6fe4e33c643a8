import sqlite3

from ringfence.service.adapters.embedded_store import EmbeddedProfileStore
from ringfence.service.adapters.event_log import SqliteEventLog
from ringfence.service.core.model import (
    Action,
    Decision,
    Limit,
    LimitScope,
    LimitUnit,
    Reason,
    ScoredEvent,
)
from ringfence.service.core.profiles import AccountEvent

T0 = 1_790_000_000.0


def _event(t, account_token, ip=1):
    return AccountEvent(t=t, account_token=account_token, ip_token=ip, prefix_token=7, asn=64500,
                        country_token=3, device_token=11, stack_token=5,
                        content_signature=7, anonymized=False, task=1,
                        input_tokens=10, output_tokens=5)


def _decision(score=0.5):
    return Decision(risk_score=score, action=Action.THROTTLE, policy_action=Action.THROTTLE,
                    shadow=False, route_to_fallback=False, limit_key="account:a",
                    limit_scope=LimitScope.ACCOUNT, suggested_limit=Limit(10, LimitUnit.MINUTE),
                    ttl_seconds=300, reasons=(Reason("X", 0.5, "why"),), policy_version="p",
                    decided_at=T0)


def test_profiles_and_decisions_survive_close_and_reopen(tmp_path):
    path = tmp_path / "state.db"
    store = EmbeddedProfileStore(path)
    for i in range(5):
        link = store.record(f"acct-{i}", "dev", "pfx", _event(T0 + i, i), None)
    assert link.device_accounts == 5
    store.save_decision("acct-4", _decision())
    store.close()

    again = EmbeddedProfileStore(path)
    assert again.account_summary("acct-4", T0 + 5).total_requests == 1
    assert again.last_decision("acct-4") == _decision()
    link = again.record("acct-5", "dev", "pfx", _event(T0 + 6, 5), None)
    assert link.device_accounts == 6 and link.prefix_accounts == 6
    again.close()


def test_eviction_writes_behind_and_reloads(tmp_path):
    store = EmbeddedProfileStore(tmp_path / "state.db", max_accounts=2, max_shared=2)
    for i in range(10):
        store.record(f"a{i}", f"d{i}", f"p{i}", _event(T0 + i, i), None)
    assert len(store.accounts.cache) == 2
    # an evicted profile comes back (from the pending writes or from disk)
    assert store.account_summary("a0", T0 + 10).total_requests == 1
    store.flush()
    store.record("a0", "d0", "p0", _event(T0 + 11, 0), None)
    assert store.account_summary("a0", T0 + 11).total_requests == 2
    store.close()


def test_memory_only_store_and_purge():
    store = EmbeddedProfileStore(None)
    store.record("old", "d", "p", _event(T0, 1), None)
    store.record("new", "d2", "p2", _event(T0 + 40 * 86400, 2), None)
    assert store.purge(T0 + 30 * 86400) == 3  # old account, its device and prefix
    assert store.account_summary("old", T0) is None
    assert store.account_summary("new", T0 + 40 * 86400) is not None


def test_purge_removes_rows_on_disk(tmp_path):
    store = EmbeddedProfileStore(tmp_path / "state.db")
    store.record("old", "d", "p", _event(T0, 1), None)
    store.flush()
    store.purge(T0 + 1)
    store.close()
    rows = sqlite3.connect(tmp_path / "state.db").execute(
        "SELECT count(*) FROM accounts").fetchone()[0]
    assert rows == 0


def _scored(i):
    return ScoredEvent(
        event_time=T0 + i, account_id=f"a{i}", api_key_id="", org_id="", ip_hash="h" * 32,
        prefix_hash="p" * 32, asn=64500, country="DE", anonymized=False, hosting=False,
        proxy=False, tor=False, device_key="d" * 32, stack_key="s" * 32, ja4_hash="",
        client_kind="browser", ua_family="Chrome", os_family="Windows", sdk_name="",
        endpoint="/v1/chat", model="m", task=1, input_tokens=5, output_tokens=6,
        content_signature=2**64 - 1, account_created_at=None, risk_score=0.1, action=1,
        policy_action=1,
        reasons=("A", "B"), policy_version="p")


def test_event_log_commits_every_event(tmp_path):
    log = SqliteEventLog(tmp_path / "events.db")
    for i in range(500):
        log.append(_scored(i))
    log.flush()
    conn = sqlite3.connect(tmp_path / "events.db")
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 500
    sig, reasons = conn.execute("SELECT content_signature, reasons FROM events LIMIT 1").fetchone()
    assert sig % 2**64 == 2**64 - 1 and reasons == "A,B"
    log.close()


def test_event_log_purge_deletes_old_events(tmp_path):
    log = SqliteEventLog(tmp_path / "events.db")
    for i in range(10):
        log.append(_scored(i))
    log.purge(T0 + 5)
    log.flush()
    conn = sqlite3.connect(tmp_path / "events.db")
    assert conn.execute("SELECT min(event_time), count(*) FROM events").fetchone() == (T0 + 5, 5)
    log.close()


def test_a_checkpoint_round_writes_what_changed_before_it_began_once(tmp_path):
    path = tmp_path / "state.db"
    store = EmbeddedProfileStore(path)
    for i in range(3):
        store.record(f"acct-{i}", "dev", "pfx", _event(T0 + i, i), None)
    assert store.begin_checkpoint() == 3 + 1 + 1  # 3 accounts, 1 device, 1 prefix
    assert store.checkpoint(limit=2) == 2
    # a hot profile changing again, and a new one, during the round: not chased by it
    store.record("acct-0", "dev", "pfx", _event(T0 + 3, 0), None)
    store.record("acct-9", "dev", "pfx", _event(T0 + 4, 9), None)
    assert store.checkpoint(limit=100) == 3  # the rest of the round, then it is done
    assert store.checkpoint(limit=100) == 0
    store._writer.flush()
    rows = sqlite3.connect(path).execute("SELECT key FROM accounts").fetchall()
    assert sorted(k for (k,) in rows) == ["acct-0", "acct-1", "acct-2"]
    # the next round has the changes made meanwhile (acct-0 again, acct-9, device, prefix)
    assert store.begin_checkpoint() == 4
    store.close()
    again = EmbeddedProfileStore(path)
    assert again.account_summary("acct-0", T0 + 5).total_requests == 2
    assert again.account_summary("acct-9", T0 + 5).total_requests == 1
    again.close()


def test_a_profile_evicted_while_its_round_waits_is_still_written(tmp_path):
    path = tmp_path / "state.db"
    store = EmbeddedProfileStore(path, max_accounts=2, max_shared=8)
    store.record("a0", "d", "p", _event(T0, 0), None)
    store.begin_checkpoint()  # a0 waits in the round...
    for i in range(1, 4):  # ...and is evicted from memory before the round writes it
        store.record(f"a{i}", "d", "p", _event(T0 + i, i), None)
    assert "a0" not in store.accounts.cache
    store._writer.flush()
    rows = sqlite3.connect(path).execute("SELECT key FROM accounts").fetchall()
    assert "a0" in {k for (k,) in rows}
    store.close()
