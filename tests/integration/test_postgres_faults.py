"""PostgreSQL failing under the event log: events spill to the local SQLite buffer and drain
once it is back — none lost, none duplicated. The shared server is never stopped: the log
talks to it through a TCP proxy that the test takes down (refusing and cutting connections)
and brings back on the same port."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import psycopg
import pytest
from live_services import TcpProxy, drop_schema, free_port, require_postgres, unique
from psycopg import sql

from ringfence.client import AsyncClient, Fingerprint, ScoreRequest
from ringfence.service.adapters.postgres_labels import PostgresLabelStore
from ringfence.service.adapters.postgres_log import PostgresEventLog
from ringfence.service.core.errors import NotReady
from ringfence.service.core.model import Label, LabelTarget, LabelValue, ScoredEvent

T0 = 1_790_000_000.0


@pytest.fixture
def pg():
    """(dsn, schema): the shared server and a schema of this test's own, dropped after."""
    dsn = require_postgres()
    schema = unique("rf_faults")
    yield dsn, schema
    drop_schema(dsn, schema)


@pytest.fixture
def proxy():
    proxy = TcpProxy()
    yield proxy
    proxy.down()


def scored(i: int) -> ScoredEvent:
    return ScoredEvent(
        event_time=T0 + i, account_id=f"a{i}", api_key_id="", org_id="", ip_hash="h" * 32,
        prefix_hash="p" * 32, asn=64500, country="DE", anonymized=False, hosting=False,
        proxy=True, tor=False, device_key="d" * 32, stack_key="s" * 32, ja4_hash="",
        client_kind="browser", ua_family="Chrome", os_family="Windows", sdk_name="",
        endpoint="/v1/chat", model="m", task=1, input_tokens=5, output_tokens=6,
        content_signature=2**64 - 1, account_created_at=None, risk_score=0.1, action=1,
        policy_action=1, reasons=("A", "B"), policy_version="p")


def stored(dsn: str, schema: str) -> list[tuple[str, int]]:
    """(account_id, copies) per stored event, in event-time order."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.SQL(
            "SELECT account_id, count(*) FROM {}.events GROUP BY account_id, event_time "
            "ORDER BY event_time").format(sql.Identifier(schema))).fetchall()


def test_outage_spills_then_drains_without_loss_or_duplicates(pg, proxy, tmp_path: Path):
    dsn, schema = pg
    proxy.up()
    log = PostgresEventLog(proxy.dsn(dsn), schema=schema, spill_path=tmp_path / "events.db",
                           retry_interval=3600)  # retries only when the test flushes
    try:
        for i in range(100):
            log.append(scored(i))
        log.flush()
        assert log.spilled == 0 and not log.spilling

        proxy.down()  # PostgreSQL "gone": connections cut, new ones refused
        for i in range(100, 250):
            log.append(scored(i))
        log.flush()
        assert log.spilling and log.spilled == 150
        assert len(stored(dsn, schema)) == 100

        proxy.up()
        for i in range(250, 300):
            log.append(scored(i))  # still spilled behind the backlog, to keep the order
        log.flush()  # reconnects and drains
        assert not log.spilling and log.spilled == 0
        rows = stored(dsn, schema)
        assert [a for a, _ in rows] == [f"a{i}" for i in range(300)]
        assert {n for _, n in rows} == {1}
    finally:
        log.close()


def test_down_from_the_start_then_a_restart_drains_the_spill(pg, tmp_path: Path):
    dsn, schema = pg
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/test"  # nothing listens there
    spill = tmp_path / "events.db"
    log = PostgresEventLog(closed, schema=schema, spill_path=spill, retry_interval=3600)
    for i in range(120):
        log.append(scored(i))
    log.flush()
    assert log.spilled == 120
    log.close()  # the process stops with PostgreSQL still down: the spill stays on disk

    again = PostgresEventLog(dsn, schema=schema, spill_path=spill, retry_interval=3600)
    try:
        assert again.spilling  # a previous run's spill drains before new events
        again.append(scored(120))
        again.flush()
        assert again.spilled == 0
        rows = stored(dsn, schema)
        assert [a for a, _ in rows] == [f"a{i}" for i in range(121)]
        assert {n for _, n in rows} == {1}
    finally:
        again.close()


def test_a_row_postgres_refuses_is_set_aside_not_blocking(pg, tmp_path: Path):
    dsn, schema = pg
    log = PostgresEventLog(dsn, schema=schema, spill_path=tmp_path / "events.db")
    try:
        log.append(scored(0))
        log.append(dataclasses.replace(scored(1), account_id="nul\x00byte"))  # text can't
        log.append(scored(2))
        log.flush()
        assert [a for a, _ in stored(dsn, schema)] == ["a0", "a2"]
        assert log.rejected == 1 and log.spilled == 0
    finally:
        log.close()


def test_label_store_unreachable_is_not_ready(tmp_path: Path):
    store = PostgresLabelStore(f"postgresql://postgres@127.0.0.1:{free_port()}/test")
    with pytest.raises(NotReady):
        store.add(Label(LabelTarget.ACCOUNT, "a", LabelValue.ABUSIVE, T0))


async def test_service_on_postgres_keeps_scoring_through_an_outage(start_app, pg, proxy):
    dsn, schema = pg
    proxy.up()
    app = await start_app(event_log="postgres", label_store="postgres", clustering=False,
                          postgres_dsn=proxy.dsn(dsn), postgres_schema=schema)
    request = ScoreRequest(account_id="acct", client_ip="203.0.113.9",
                           fingerprint=Fingerprint(user_agent="curl/8.0"))
    async with AsyncClient(f"127.0.0.1:{app.port}", timeout=2) as client:
        await client.score(request)
        app.events.flush()
        proxy.down()
        for _ in range(5):
            assert not (await client.score(request)).degraded  # the log is not the answer
        app.events.flush()
        assert app.events.spilled == 5
        proxy.up()
        app.events.flush()
    assert len(stored(dsn, schema)) == 6 and app.events.spilled == 0
