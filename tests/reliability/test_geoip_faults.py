"""An .mmdb rewritten under a running ``ringfence serve``: truncated in place (what a reader sees
while ``cp new.mmdb`` over the live file is mid-copy), then overwritten with garbage in place,
then atomically replaced by a good file. The reload poller runs for real (every 0.1 s).

The reader memory-maps its file, so before the fix in geoip._open_private_copy the first
lookup into a page past the truncation killed the process with SIGBUS. Now: the process stays
up, every Score answers OK from the old reader (its flags still apply), the bad file is logged
once, and the good file is swapped in afterwards.
"""

from __future__ import annotations

import os
import random
import time

import grpc

from ringfence.service.geodata import NetworkRecord, write_geo_databases
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc


def networks(hosting: bool) -> list[NetworkRecord]:
    # Many small networks so the search tree spans many pages of the file (~180 KB).
    return [
        NetworkRecord(cidr=f"10.{i}.{j}.0/24", asn=64500 + i, as_org=f"Org {i}", is_hosting=hosting)
        for i in range(256)
        for j in range(0, 256, 16)
    ]


def reason_codes(stub, rng: random.Random, n: int) -> list[set[str]]:
    """Score n requests from distinct addresses in the networks (the cache is off)."""
    out = []
    for k in range(n):
        ip = f"10.{rng.randrange(256)}.{rng.randrange(0, 256, 16)}.{rng.randrange(1, 255)}"
        reply = stub.Score(
            pb.ScoreRequest(account_id=f"geo-{rng.random()}-{k}", client_ip=ip), timeout=5
        )
        assert not reply.degraded
        out.append({r.code for r in reply.reasons})
    return out


def wait_for(predicate, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_mmdb_rewritten_in_place_keeps_the_old_reader_and_the_process_up(serve, tmp_path):
    geo = tmp_path / "geo"
    paths = write_geo_databases(networks(hosting=True), geo, kinds=("asn", "anonymous_ip"))
    server = serve(
        tmp_path / "data",
        RINGFENCE_GEOIP_ASN_DB=str(paths.asn),
        RINGFENCE_GEOIP_ANONYMOUS_IP_DB=str(paths.anonymous_ip),
        RINGFENCE_GEOIP_RELOAD_INTERVAL_S="0.1",
        RINGFENCE_GEOIP_CACHE_SIZE="0",
    )
    rng = random.Random(7)

    def refusals() -> int:
        return server.log().count("is not a usable MaxMind database")

    with grpc.insecure_channel(server.target) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        assert all("IP_ANONYMIZED" in codes for codes in reason_codes(stub, rng, 50))

        for path in (paths.asn, paths.anonymous_ip):
            os.truncate(path, 4096)  # mid-copy: the live file cut short in place
        assert all("IP_ANONYMIZED" in codes for codes in reason_codes(stub, rng, 100))
        wait_for(lambda: refusals() >= 2, "the poller to refuse both truncated files")

        for path in (paths.asn, paths.anonymous_ip):
            with path.open("r+b") as f:  # then garbage written over it, in place
                f.write(os.urandom(4096))
        wait_for(lambda: refusals() >= 4, "the poller to refuse both garbage files")
        assert all("IP_ANONYMIZED" in codes for codes in reason_codes(stub, rng, 100))
        assert server.proc.poll() is None

        fresh = write_geo_databases(
            networks(hosting=False), tmp_path / "fresh", kinds=("asn", "anonymous_ip")
        )
        os.replace(fresh.asn, paths.asn)  # a good file, installed atomically
        os.replace(fresh.anonymous_ip, paths.anonymous_ip)
        wait_for(
            lambda: not any("IP_ANONYMIZED" in c for c in reason_codes(stub, rng, 5)),
            "the good file to be swapped in",
        )
    # Once per bad version of each file (4; one caught mid-write can add one), not once per
    # poll (~100 polls ran).
    assert 4 <= refusals() <= 6
    assert "geoip: reloaded" in server.log()
