"""Long fuzz run against a real in-process ringfence server (not a test; the CI-sized version is
tests/reliability/test_fuzz.py). Prints the answers counted by RPC and status code.

Every unary RPC the server offers (RiskService, Envoy ext_authz Check, rate limit
ShouldRateLimit) gets protobuf messages built field by field from the descriptors and encoded
straight onto the wire (tests/reliability/protowire.py): sane values, garbage (huge strings,
invalid UTF-8, NaN/inf, negative and out-of-range integers, enormous maps and lists, extreme
timestamps, unknown fields), then sometimes cut short, bit-flipped or with junk appended; and
raw random bytes. The server runs in a thread of this process with a fitted cluster model.

Engines:
* ``random`` (default): a seeded generator, ``--cases`` requests.
* ``atheris`` (``pip install 'ringfence[fuzz]'``): coverage-guided libFuzzer over the same
  generator, which reads its choices from atheris' FuzzedDataProvider, so mutations of the
  input are mutations of the protobuf message; ringfence's modules are instrumented. A status
  outside the allowed set is a crash: atheris stops and writes the input to crash-*.

Fails (exit 1) on any status other than OK or the one documented for the RPC (never INTERNAL
or UNKNOWN), on an OK answer that does not parse, or if the server is not SERVING at the end.

    .venv/bin/python bench/fuzz.py --cases 100000                 # random engine
    .venv/bin/python bench/fuzz.py --engine atheris --cases 100000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "reliability"))

from protowire import F, encode  # noqa: E402

try:
    import atheris
except ImportError:  # the optional `fuzz` extra
    atheris = None

# With atheris, ringfence is imported under instrumentation (coverage feedback) in main().
grpc: Any = None
pb: Any = None

ALLOWED_BESIDES_OK = {
    "Score": {"INVALID_ARGUMENT"},
    "ScoreBatch": {"INVALID_ARGUMENT"},
    "GetAccount": {"INVALID_ARGUMENT", "NOT_FOUND"},
    "GetCluster": {"INVALID_ARGUMENT", "NOT_FOUND"},
    "ListClusters": {"INVALID_ARGUMENT"},
    "ExplainAccount": {"INVALID_ARGUMENT", "NOT_FOUND"},
    "SubmitLabel": {"INVALID_ARGUMENT", "NOT_FOUND"},
    "GetModelInfo": {"INVALID_ARGUMENT"},
    "ReloadModel": {"INVALID_ARGUMENT", "FAILED_PRECONDITION"},
    "Check": {"INVALID_ARGUMENT"},
    "ShouldRateLimit": {"INVALID_ARGUMENT"},
    "StreamDecisions": {"INVALID_ARGUMENT"},
}
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # RESOURCE_EXHAUSTED is allowed only above it (transport)
MAX_DEPTH = 4
MAX_BYTES = 2_000_000


# --- where choices come from ------------------------------------------------------------------


class Source:
    """Choices from a seeded PRNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)

    def float(self) -> float:
        return self.rng.choice(
            (
                math.nan,
                math.inf,
                -math.inf,
                0.0,
                -0.0,
                1e308,
                5e-324,
                self.rng.uniform(-1e9, 1e9),
                self.rng.random(),
            )
        )


class FuzzedSource(Source):
    """Choices from atheris' FuzzedDataProvider: the fuzzer's input decides every one."""

    def __init__(self, fdp: Any) -> None:
        self.fdp = fdp

    def int(self, lo: int, hi: int) -> int:
        return int(self.fdp.ConsumeIntInRange(lo, hi))

    def bytes(self, n: int) -> bytes:
        return bytes(self.fdp.ConsumeBytes(n))

    def float(self) -> float:
        return float(self.fdp.ConsumeFloat())


# --- messages ------------------------------------------------------------------------------

ODD = [
    "",
    " ",
    "1.2.3.4",
    "::1",
    "::ffff:198.51.100.7",
    "999.1.1.1",
    "1.2.3.4/24",
    "fe80::1%eth0",
    "\x00",
    "a\nb",
    "\u202e\u200b",
    "💥" * 70,
    "x" * 257,
    "m:-1",
    ":",
    "9" * 30,
    "%s%n",
    "'; DROP TABLE events;--",
    "\ud800",
]
EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**63 - 1, -(2**63), 2**64 - 1]
LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


class Generator:
    def __init__(self, known: Sequence[str]) -> None:
        self.known = list(known)

    def pick(self, src: Source, items: Sequence[Any]) -> Any:
        return items[src.int(0, len(items) - 1)]

    def plain(self, src: Source) -> str:
        return "".join(self.pick(src, LETTERS) for _ in range(src.int(1, 16)))

    def valid(self, src: Source, field: Any) -> Any:
        """A value the service accepts for this field."""
        t = field.type
        if t == F.TYPE_STRING:
            if "ip" in field.name.split("_") or field.name in ("forwarded_for", "address"):
                if src.int(0, 1):
                    return ".".join(str(src.int(0, 255)) for _ in range(4))
                return ":".join(f"{src.int(0, 0xFFFF):x}" for _ in range(8))
            if field.name.endswith("_id") or field.name in ("page_token", "key", "value"):
                return self.pick(src, self.known) if src.int(0, 1) else self.plain(src)
            return self.plain(src)
        if t == F.TYPE_ENUM:
            return self.pick(src, [v.number for v in field.enum_type.values])
        if t == F.TYPE_MESSAGE and field.message_type.full_name in (
            "google.protobuf.Timestamp",
            "google.protobuf.Duration",
        ):
            d = field.message_type
            now = int(time.time())
            return [
                (d.fields_by_name["seconds"], src.int(now - 86400, now + 60)),
                (d.fields_by_name["nanos"], src.int(0, 10**9 - 1)),
            ]
        return self.garbage(src, field)

    def garbage(self, src: Source, field: Any) -> Any:
        t = field.type
        if t == F.TYPE_STRING:
            kind = src.int(0, 4)
            if kind == 0:
                return self.pick(src, ODD)
            if kind == 1:
                return src.bytes(src.int(1, 24))  # mostly invalid UTF-8
            if kind == 2:
                return "y" * src.int(300, 200_000)
            if kind == 3:
                return self.pick(src, self.known)
            return "".join(chr(src.int(0, 0x2FFFF)) for _ in range(src.int(0, 12)))
        if t == F.TYPE_BYTES:
            return src.bytes(src.int(0, 64))
        if t in (F.TYPE_DOUBLE, F.TYPE_FLOAT):
            return src.float()
        if t == F.TYPE_BOOL:
            return src.int(0, 3)
        if t == F.TYPE_MESSAGE:
            return self.message(src, field.message_type, MAX_DEPTH)
        # integers of every width, and enums: in range, edges, and far out of range
        return self.pick(src, EDGES) if src.int(0, 2) == 0 else src.int(-(2**63), 2**64 - 1)

    def value(self, src: Source, field: Any, depth: int, sane: bool) -> Any:
        if field.type == F.TYPE_MESSAGE and not field.message_type.full_name.startswith(
            "google.protobuf."
        ):
            return self.message(src, field.message_type, depth + 1, sane)
        if sane or src.int(0, 2):
            return self.valid(src, field)
        return self.garbage(src, field)

    def message(
        self, src: Source, descriptor: Any, depth: int = 0, sane: bool = False
    ) -> list[tuple[Any, Any]]:
        fields: list[tuple[Any, Any]] = []
        if depth > MAX_DEPTH:
            return fields
        for field in descriptor.fields:
            if not src.int(0, 1) and not (sane and field.name in ("account_id", "client_ip")):
                continue
            if not field.is_repeated:
                fields.append((field, self.value(src, field, depth, sane)))
                continue
            if not sane and src.int(0, 12) == 0:  # an enormous map or list
                one = self.value(src, field, depth, sane)
                n = min(
                    src.int(17, 1200 if field.message_type is None else 60),
                    MAX_BYTES // len(encode([(field, one)])),
                )
                if field.message_type is not None and field.message_type.GetOptions().map_entry:
                    key = field.message_type.fields_by_name["key"]
                    rest = [(f, v) for f, v in one if f is not key]
                    items = [[(key, f"k{i}"), *rest] for i in range(n)]
                else:
                    items = [one] * n
            else:
                items = [self.value(src, field, depth, sane) for _ in range(src.int(0, 3))]
            fields.extend((field, item) for item in items)
        if not sane and src.int(0, 9) == 0:  # a field number the schema lacks
            fields.append((src.int(100, 2**29 - 1), src.int(0, 2**64 - 1)))
        return fields

    def request(self, src: Source, descriptor: Any) -> bytes:
        mode = src.int(0, 9)
        if mode == 0:  # raw bytes
            return src.bytes(src.int(0, 1500))
        if mode <= 3:
            return encode(self.message(src, descriptor, sane=True))
        data = encode(self.message(src, descriptor))
        damage = src.int(0, 7)
        if data and damage == 0:
            data = data[: src.int(0, len(data) - 1)]
        elif data and damage == 1:
            i = src.int(0, len(data) - 1)
            data = data[:i] + bytes([data[i] ^ src.int(1, 255)]) + data[i + 1 :]
        elif damage == 2:
            data += src.bytes(src.int(1, 16))
        return data


# --- the server ----------------------------------------------------------------------------


class Server:
    """The real App in a thread with its own event loop, seeded with accounts and a model."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.app: Any = None
        self.known: list[str] = []
        threading.Thread(target=self.loop.run_forever, daemon=True, name="server").start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(120)

    async def _start(self) -> None:
        from ringfence.service.app import App
        from ringfence.service.settings import Settings

        data = Path(tempfile.mkdtemp(prefix="ringfence-fuzz-"))
        self.app = App(
            Settings(
                host="127.0.0.1",
                port=0,
                data_dir=data,
                hash_key="00" * 32,
                log_level="CRITICAL",
                checkpoint_interval_s=3600,
                cluster_min_cluster_size=5,
                cluster_min_samples=2,
                cluster_assign_interval_s=3600,
                cluster_refit_interval_s=3600,
                cluster_refit_min_gap_s=0,
                cluster_refit_pending=1,
                max_batch_size=100,
            )
        )
        await self.app.start()
        engine, accounts = self.app.engine, [f"fuzz-known-{i}" for i in range(40)]
        from ringfence.service.api.convert import to_observation

        for i, account in enumerate(accounts):
            engine.score(
                to_observation(
                    pb.ScoreRequest(
                        account_id=account,
                        client_ip=f"198.51.100.{i % 5}",
                        fingerprint=pb.DeviceFingerprint(device_id=f"dev-{i % 4}"),
                    ),
                    now=time.time(),
                    limits=_limits(),
                )
            )
        state, store = self.app.clusters, self.app.store
        state.run_due(time.time(), store.active_accounts, store.account_profile)
        model = state.model
        self.known = [*accounts, *model.clusters, model.version, f"{model.version}:1"]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.app.stop(0), self.loop).result(60)


def _limits() -> Any:
    from ringfence.service.api.convert import Limits

    return Limits()


# --- the run -------------------------------------------------------------------------------


class ErrorLog(logging.Handler):
    """Counts what the server logs at ERROR or above: a hostile request should cause none."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        cause = f" ({record.exc_info[1]!r})" if record.exc_info else ""
        self.messages[f"{record.name}: {record.getMessage()}{cause}"[:300]] += 1


class Run:
    def __init__(self, server: Server, strict: bool) -> None:
        from envoy.service.auth.v3 import external_auth_pb2
        from envoy.service.ratelimit.v3 import rls_pb2

        services = (
            pb.DESCRIPTOR.services_by_name["RiskService"],
            external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"],
            rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"],
        )
        self.methods = [
            m
            for s in services
            for m in s.methods
            if not m.client_streaming
        ]
        self.channel = grpc.insecure_channel(server.target)
        self.calls = {
            m.name: (self.channel.unary_stream if m.server_streaming else self.channel.unary_unary)(
                f"/{m.containing_service.full_name}/{m.name}"
            )
            for m in self.methods
        }
        self.generator = Generator(server.known)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.failures: list[str] = []
        self.strict = strict  # raise on a bad answer (atheris: a crash) instead of counting
        self.errors = ErrorLog()
        root = logging.getLogger()
        root.handlers[:] = [self.errors]  # counted, not printed
        root.setLevel(logging.WARNING)
        logging.getLogger("grpc").propagate = True

    def one(self, src: Source) -> None:
        method = self.methods[src.int(0, len(self.methods) - 1)]
        data = self.generator.request(src, method.input_type)
        try:
            reply = self._call(method, data)
        except grpc.RpcError as err:
            code = err.code().name
            self.counts[method.name, code] += 1
            oversize = code == "RESOURCE_EXHAUSTED" and len(data) > MAX_MESSAGE_BYTES
            if not oversize and code not in ALLOWED_BESIDES_OK[method.name]:
                self.fail(f"{method.name}: {code} {err.details()!r} for {data[:200]!r}")
            return
        self.counts[method.name, "OK"] += 1
        try:
            response = method.output_type._concrete_class.FromString(reply)
        except Exception as exc:
            self.fail(f"{method.name}: OK answer does not parse: {exc}")
            return
        if method.name == "ScoreBatch":
            bad = [
                r.error for r in response.results if r.HasField("error") and r.error.code in (2, 13)
            ]
            if bad:
                self.fail(f"ScoreBatch item answered {bad[0]}")
        elif method.name == "Score" and not 0.0 <= response.risk_score <= 1.0:
            self.fail(f"Score risk_score {response.risk_score}")

    def _call(self, method: Any, data: bytes) -> bytes:
        """A unary call's answer; for a server stream (StreamDecisions) its first message, then
        the call is cancelled (the subscription would otherwise run until its deadline)."""
        if not method.server_streaming:
            return self.calls[method.name](data, timeout=30)
        stream = self.calls[method.name](data, timeout=10)
        try:
            return next(stream)
        except StopIteration:
            self.fail(f"{method.name}: the stream ended without a first message")
            return b""
        finally:
            stream.cancel()

    def fail(self, message: str) -> None:
        self.failures.append(message)
        if self.strict:
            raise AssertionError(message)

    def report(self, seconds: float, engine: str) -> None:
        total = sum(self.counts.values())
        by_code: Counter[str] = Counter()
        for (_, code), n in self.counts.items():
            by_code[code] += n
        print(
            f"\n{total} cases in {seconds:.0f} s ({total / max(seconds, 1e-9):.0f}/s), "
            f"engine {engine}"
        )
        print("by status: " + ", ".join(f"{c} {n}" for c, n in by_code.most_common()))
        width = max(len(m.name) for m in self.methods)
        for m in self.methods:
            row = {c: n for (name, c), n in self.counts.items() if name == m.name}
            print(f"  {m.name:<{width}}  " + ", ".join(f"{c} {n}" for c, n in sorted(row.items())))
        print(f"disallowed answers (INTERNAL, UNKNOWN, ...): {len(self.failures)}")
        for message in self.failures[:10]:
            print("  " + message)
        print(f"errors logged by the server: {sum(self.errors.messages.values())}")
        for message, n in self.errors.messages.most_common(10):
            print(f"  {n} x {message}")


def serving(target: str) -> bool:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def finish(run: Run, server: Server, started: float, engine: str) -> int:
    run.report(time.monotonic() - started, engine)
    up = serving(server.target)
    print(f"server still SERVING: {up}")
    return 0 if up and not run.failures and not run.errors.messages else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--engine", choices=("random", "atheris"), default="random")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=3600.0,
        help="stop early after this long (the counts say how many ran)",
    )
    args = parser.parse_args(argv)

    global grpc, pb
    instrument: Callable[[], Any] = contextlib.nullcontext
    if args.engine == "atheris":
        if atheris is None:
            parser.error("atheris is not installed: pip install 'ringfence[fuzz]'")
        instrument = lambda: atheris.instrument_imports(include=["ringfence"])  # noqa: E731
    with instrument():
        import grpc as grpc_module

        import ringfence.service.app  # noqa: F401  (instrumented with atheris)
        from ringfence.v1 import risk_pb2
    grpc, pb = grpc_module, risk_pb2

    server = Server()
    run = Run(server, strict=args.engine == "atheris")
    started = time.monotonic()
    deadline = started + args.max_seconds
    if args.engine == "random":
        src = Source(random.Random(args.seed))
        for i in range(args.cases):
            run.one(src)
            if i % 10_000 == 9_999:
                print(f"{i + 1} cases, {len(run.failures)} disallowed", flush=True)
            if time.monotonic() > deadline:
                break
        code = finish(run, server, started, args.engine)
        server.stop()
        return code

    done = 0

    def one_input(data: bytes) -> None:
        nonlocal done
        run.one(FuzzedSource(atheris.FuzzedDataProvider(data)))
        done += 1
        if done >= args.cases or time.monotonic() > deadline:
            # libFuzzer leaves with C exit(), which skips Python's atexit: report here.
            code = finish(run, server, started, args.engine)
            sys.stdout.flush()
            os._exit(code)

    atheris.Setup(
        [sys.argv[0], f"-runs={args.cases + 1}", f"-seed={args.seed}", "-max_len=4096"], one_input
    )
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
