"""Event logs for the batch-job tests, written with the service's own event-log adapter: a
fleet (shared device pool, hosting IPs, one prompt template, one clock) among ordinary users."""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path

import pytest

from ringfence.service.adapters.event_log import SqliteEventLog
from ringfence.service.core.model import ScoredEvent
from ringfence.service.settings import Settings

KEY_HEX = "00" * 32
T_END = 1_780_000_000.0  # 2026-05-28
FLEET = 60
USERS = 200


def hx(*parts: object) -> str:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def event(t: float, account: str, *, ip: str, prefix: str, device: str, stack: str,
          asn: int, country: str, anonymized: bool, task: int, signature: int | None,
          action: int = 1, reasons: tuple[str, ...] = (), risk: float = 0.1) -> ScoredEvent:
    return ScoredEvent(
        event_time=t, account_id=account, api_key_id="", org_id="", ip_hash=hx("ip", ip),
        prefix_hash=hx("prefix", prefix), asn=asn, country=country, anonymized=anonymized,
        hosting=anonymized, proxy=False, tor=False, device_key=hx("dev", device),
        stack_key=hx("stack", stack), ja4_hash="", client_kind="script", ua_family="httpx",
        os_family="", sdk_name="", endpoint="/v1/chat", model="m1", task=task,
        input_tokens=100, output_tokens=200, content_signature=signature,
        account_created_at=None, risk_score=risk, action=action, policy_action=action,
        reasons=reasons, policy_version="default-1")


def make_events(seed: int = 3, *, end: float = T_END, days: int = 3, fleet: int = FLEET,
                users: int = USERS, fleet_prefix: str = "fleet") -> list[ScoredEvent]:
    rng = random.Random(seed)
    out = []
    hours = days * 24
    for i in range(fleet):
        for h in range(0, hours, 2):
            subnet = rng.randrange(256)
            flagged = h > hours // 2
            out.append(event(
                end - hours * 3600 + h * 3600 + i % 5, f"{fleet_prefix}-{i}",
                ip=f"198.19.{subnet}.{rng.randrange(256)}", prefix=f"198.19.{subnet}",
                device=f"{fleet_prefix}-dev-{rng.randrange(4)}", stack="httpx", asn=64701,
                country="NL", anonymized=True, task=3,
                signature=0xF5EED5EED5EED5ED,  # above 2**63: stored signed
                action=2 if flagged else 1,
                reasons=("CLUSTER_SHARED_DEVICES", "ANONYMIZED_IP") if flagged else (),
                risk=0.6 if flagged else 0.2))
    for i in range(users):
        subnet = rng.randrange(256)
        for _ in range(rng.randint(2, 8)):
            out.append(event(
                end - rng.uniform(0, hours * 3600), f"user-{i}",
                ip=f"100.64.{subnet}.{i % 250}", prefix=f"100.64.{subnet}",
                device=f"user-dev-{i}", stack=f"browser-{i % 7}", asn=64601,
                country=rng.choice(["US", "DE", ""]), anonymized=False, task=1,
                signature=None))
    out.sort(key=lambda e: e.event_time)
    return out


def write_log(path: Path, events: list[ScoredEvent]) -> Path:
    log = SqliteEventLog(path)
    for e in events:
        log.append(e)
    log.flush()
    log.close()
    return path


@pytest.fixture(scope="session")
def fleet_events() -> list[ScoredEvent]:
    return make_events()


@pytest.fixture
def data_dir(tmp_path: Path, fleet_events: list[ScoredEvent]) -> Path:
    d = tmp_path / "data"
    write_log(d / "events.db", fleet_events)
    return d


def partition_of(model):
    """A clustering as a set of member sets (ids differ between fits), and the noise."""
    from ringfence.service.core.clustering import NOISE

    groups: dict[int, set[str]] = {}
    for account, label in zip(model.account_ids, model.labels, strict=True):
        groups.setdefault(int(label), set()).add(account)
    noise = frozenset(groups.pop(NOISE, set()))
    return {frozenset(g) for g in groups.values()}, noise


def job_settings(data_dir: Path, **overrides: object) -> Settings:
    return Settings(data_dir=data_dir, hash_key=KEY_HEX, log_format="text", **overrides)




@pytest.fixture
async def serve(tmp_path: Path):
    """Start real ringfence servers (persisting to their data dir, loading only published
    models: no local refits); every server started is stopped at the end."""
    from ringfence.service.app import App
    from ringfence.service.geodata import NetworkRecord, write_geo_databases

    geo = write_geo_databases(
        [NetworkRecord(cidr="100.64.0.0/16", asn=64601, as_org="Home Cable", country="US"),
         NetworkRecord(cidr="198.19.0.0/16", asn=64701, as_org="Cheap Cloud", country="NL",
                       is_hosting=True)],
        tmp_path / "geo", kinds=("asn", "anonymous_ip", "country"))
    apps: list[App] = []

    async def start(data_dir: Path, **overrides: object) -> App:
        base: dict[str, object] = dict(
            host="127.0.0.1", port=0, data_dir=data_dir, hash_key=KEY_HEX,
            shutdown_grace_s=0.5, checkpoint_interval_s=3600, geoip_reload_interval_s=3600,
            geoip_asn_db=geo.asn, geoip_anonymous_ip_db=geo.anonymous_ip,
            geoip_country_db=geo.country, cluster_refit_local=False,
            model_poll_interval_s=3600, cluster_assign_interval_s=3600)
        app = App(Settings(**{**base, **overrides}))
        await app.start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        if app.server is not None:
            await app.stop(0)


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI configures the root logger (to the stream pytest captures): undo it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
