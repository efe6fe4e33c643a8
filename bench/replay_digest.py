"""Same inputs, same outputs: one digest of everything the Score path produces for a fixed
stream of requests, to compare two trees after a change that must not change decisions.

The real ``App`` (``persist=True``, clustering on, a fixed hash key, a manual clock) takes
``--requests`` requests of the bench workload (``bench/workload.py``, its creation times pinned),
every 20th made invalid in one of several ways. Each goes through what ``RiskServicer.Score``
does (``to_observation``, ``engine.score``, the decision observers, ``to_score_response``);
an invalid one through ``rich_status`` as the servicer answers it. Every ``--place-every``
requests the App places waiting accounts into the clusters and every ``--refit-every`` it
refits them, both through its own background methods. At the end it checkpoints and closes.

The digest covers: the ``ScoreResponse`` bytes, the error statuses and their details, the
decision-feed state, every event-log row and every ``state.db`` row. Run it on two trees and
compare the last line (``PYTHONPATH=<other tree>/service .venv/bin/python
bench/replay_digest.py`` runs the other tree's service code with this script).

Run: ``.venv/bin/python bench/replay_digest.py [--requests N]``. Prints digests only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import re
import sqlite3
import tempfile
from pathlib import Path
from unittest import mock

from google.protobuf import text_format
from pydantic import SecretStr
from workload import Population

from ringfence.service.adapters.clock import ManualClock
from ringfence.service.api.convert import Limits, to_observation, to_score_response
from ringfence.service.api.errors import rich_status
from ringfence.service.app import App
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2 as pb

T0 = 1_790_000_000.0
NEVER = 1e9  # seconds: background jobs that would otherwise run on the wall clock


class Canonical:
    """Model versions and cluster ids carry random parts: each is replaced by the order in
    which it first appeared, so two runs that decide alike digest alike."""

    PATTERN = re.compile(rb"m-\d+-[0-9a-f]+|c-[0-9a-f]{12}")

    def __init__(self) -> None:
        self.names: dict[bytes, bytes] = {}

    def __call__(self, data: bytes) -> bytes:
        return self.PATTERN.sub(self._name, data)

    def _name(self, match: re.Match[bytes]) -> bytes:
        found = match.group(0)
        if found not in self.names:
            self.names[found] = b"%s#%d" % (found[:1], len(self.names))
        return self.names[found]


def _spoil(request: pb.ScoreRequest, i: int) -> None:
    """Make a request invalid, in one of several ways."""
    kind = (i // 20) % 5
    if kind == 0:
        request.account_id = ""
    elif kind == 1:
        request.client_ip = "300.1.2.3"
    elif kind == 2:
        request.fingerprint.user_agent = "bad\x01agent"
    elif kind == 3:
        request.context.task_category = 99
    else:
        request.forwarded_for.append("not-an-ip")


async def replay(
    data_dir: Path, n: int, place_every: int, refit_every: int, dump: Path | None = None
) -> dict[str, str]:
    clock = ManualClock(T0)
    settings = Settings(
        host="127.0.0.1",
        port=0,
        persist=True,
        data_dir=data_dir,
        hash_key=SecretStr("ab" * 32),
        checkpoint_interval_s=NEVER,
        cluster_assign_interval_s=NEVER,
        cluster_refit_interval_s=NEVER,
        cluster_refit_pending=10**6,
        cluster_min_cluster_size=5,
        cluster_min_samples=3,
    )
    with mock.patch("workload.time") as frozen:
        frozen.time.return_value = T0
        population = Population()
    pool = population.request_pool(n, seed=11)
    app = App(settings, clock=clock)
    await app.start()
    responses, errors = hashlib.sha256(), hashlib.sha256()
    canonical = Canonical()
    dumped: list[str] | None = [] if dump is not None else None
    try:
        assert app.engine is not None and app.edge is not None
        engine, observe = app.engine, app.edge.on_decision
        limits = Limits(
            max_clock_skew_s=settings.max_clock_skew_s, max_event_age_s=settings.max_event_age_s
        )
        for i, body in enumerate(pool, 1):
            clock.advance(0.05)
            request = pb.ScoreRequest.FromString(body)
            if i % 20 == 0:
                _spoil(request, i)
            try:
                obs = to_observation(request, now=clock.now(), limits=limits)
                decision = engine.score(obs)
                if observe is not None:
                    observe(decision)
                response = to_score_response(decision)
                responses.update(canonical(response.SerializeToString()))
                if dumped is not None:
                    text = text_format.MessageToString(response, as_one_line=True)
                    dumped.append(f"{i} {canonical(text.encode()).decode()}")
            except Exception as exc:
                status = rich_status(exc)
                errors.update(
                    repr((status.code, status.details, status.trailing_metadata)).encode()
                )
            if i % place_every == 0:
                await app.place_pending_now()
            if i % refit_every == 0:
                await app.refit_now()
        feed = repr(app.decision_feed.active() if app.decision_feed else None)
        model = app.clusters.model if app.clusters else None
        print(
            f"refits {app.clusters.refits if app.clusters else 0}, clusters in the model "
            f"{len(model.clusters) if model else 0}, accounts placed "
            f"{sum(1 for a in app.clusters._assigned.values() if a) if app.clusters else 0}"
        )
        assert app.store is not None
        app.store.checkpoint()
    finally:
        await app.stop(0.5)
    if dump is not None and dumped is not None:
        dump.write_text("\n".join(dumped) + "\n")
    out = {
        "responses": responses.hexdigest(),
        "errors": errors.hexdigest(),
        "feed": hashlib.sha256(canonical(feed.encode())).hexdigest(),
    }
    for name, db in (("events", "events.db"), ("state", "state.db")):
        digest = hashlib.sha256()
        with contextlib.closing(sqlite3.connect(data_dir / db)) as conn:
            tables = [
                r[0]
                for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"
                )
            ]
            for table in tables:
                for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2"):
                    digest.update(canonical(repr((table, row)).encode()))
        out[name] = digest.hexdigest()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=6000)
    p.add_argument("--place-every", type=int, default=250)
    p.add_argument("--refit-every", type=int, default=2000)
    p.add_argument("--dump", type=Path, help="also write every response as text to this file")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ringfence-replay-") as tmp:
        out = asyncio.run(
            replay(Path(tmp), args.requests, args.place_every, args.refit_every, args.dump)
        )
    for name, digest in out.items():
        print(f"{name:<10} {digest}")
    print("all       ", hashlib.sha256(repr(sorted(out.items())).encode()).hexdigest())


if __name__ == "__main__":
    main()
