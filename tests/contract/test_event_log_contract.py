"""The EventLog contract (core/ports.py), run against the embedded SQLite log and PostgreSQL:
what is appended comes back field for field once flushed, survives close, and is purged by
event time."""

from __future__ import annotations

import dataclasses

from ringfence.service.core.model import ScoredEvent

T0 = 1_790_000_000.0


def scored(i: int, **changes: object) -> ScoredEvent:
    event = ScoredEvent(
        event_time=T0 + i, account_id=f"a{i}", api_key_id="key-1", org_id="org-1",
        ip_hash="h" * 32, prefix_hash="p" * 32, asn=64500 if i % 2 else None, country="DE",
        anonymized=bool(i % 3 == 0), hosting=False, proxy=bool(i % 2), tor=False,
        device_key="d" * 32, stack_key="s" * 32, ja4_hash="", client_kind="browser",
        ua_family="Chrome", os_family="Windows", sdk_name="", endpoint="/v1/chat", model="m",
        task=1, input_tokens=5 + i, output_tokens=6, content_signature=None,
        account_created_at=None, risk_score=0.125, action=1, policy_action=2,
        reasons=("DEVICE_SHARED_BY_ACCOUNTS", "ACCOUNT_NEW"), policy_version="p1")
    return dataclasses.replace(event, **changes)


def test_appended_events_come_back_field_for_field(event_backend):
    log = event_backend.open()
    events = [scored(i) for i in range(200)]
    events[0] = scored(0, content_signature=2**64 - 1, reasons=(), account_created_at=T0 - 5,
                       account_id="ünïcode-账户")
    events[1] = scored(1, content_signature=12345, asn=4_200_000_000)
    for event in events:
        log.append(event)
    log.flush()
    assert event_backend.read_events() == events


def test_close_commits_what_was_queued(event_backend):
    log = event_backend.open()
    for i in range(50):
        log.append(scored(i))
    log.close()
    assert len(event_backend.read_events()) == 50
    again = event_backend.open()  # a restart appends to the same log
    again.append(scored(50))
    again.flush()
    assert [e.account_id for e in event_backend.read_events()][-1] == "a50"


def test_purge_deletes_events_older_than_the_cutoff(event_backend):
    log = event_backend.open()
    for i in range(10):
        log.append(scored(i))
    log.purge(T0 + 5)
    log.flush()
    assert [e.event_time for e in event_backend.read_events()] == [T0 + i for i in range(5, 10)]
