"""The ``ringfence`` command: serve, score, version."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from pathlib import Path

import grpc
from google.protobuf import json_format
from pydantic import ValidationError

from ringfence.service import __version__, logs, ops_cli
from ringfence.service.evaluation import cli as evaluation_cli
from ringfence.service.jobs import cli as jobs_cli
from ringfence.service.settings import ENV_PREFIX, Settings
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc


def _settings_help() -> str:
    lines = ["settings (env var, default: description); a TOML file given with --config",
             "may set the same names in lower case:"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None else str(default)
        lines.append(f"  {ENV_PREFIX}{name.upper()} ({shown}): {field.description}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ringfence", description=(
        "Links accounts run by one operator and scores API requests for rate limiters."))
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC service",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=_settings_help())
    serve.add_argument("--config", type=Path, help="TOML settings file")
    serve.add_argument("--host", help="bind address (overrides RINGFENCE_HOST)")
    serve.add_argument("--port", type=int, help="port (overrides RINGFENCE_PORT)")
    serve.add_argument("--data-dir", type=Path, help="data directory")
    serve.add_argument("--workers", type=int, help="worker processes on one port "
                       "(overrides RINGFENCE_WORKERS; needs RINGFENCE_STORE=redis)")

    score = sub.add_parser("score", help="score one request against a running service")
    score.add_argument("--target", default="127.0.0.1:50051", help="host:port of the service")
    score.add_argument("--json", dest="json_request",
                       help="the ScoreRequest in protobuf JSON form ('-' reads stdin)")
    score.add_argument("--account", help="account id")
    score.add_argument("--ip", help="client IP")
    score.add_argument("--user-agent", default="", help="User-Agent header")
    score.add_argument("--ja4", default="", help="JA4 TLS fingerprint")
    score.add_argument("--device-id", default="", help="client device id")
    score.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds")

    sub.add_parser("version", help="print the version")
    ops_cli.add_commands(sub)
    jobs_cli.add_commands(sub)
    evaluation_cli.register(sub)  # simulate, replay, evaluate
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"ringfence {__version__}")
        return 0
    if args.command == "score":
        return _score(args)
    if args.command in ops_cli.COMMANDS:
        return ops_cli.run(args)
    if args.command in jobs_cli.COMMANDS:
        return jobs_cli.run(args)
    if args.command in ("simulate", "replay", "evaluate"):
        return int(args.func(args))
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port),
                                   ("data_dir", args.data_dir), ("workers", args.workers))
                 if v is not None}
    try:
        settings = Settings.load(args.config, **overrides)
    except (ValidationError, OSError, ValueError) as exc:
        print(f"ringfence: invalid settings: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    if settings.workers > 1:
        # Import the app once here (seconds of numpy/hdbscan) so the forked workers share it;
        # no gRPC object exists before the fork.
        from ringfence.service import app  # noqa: F401
        from ringfence.service.workers import serve_workers

        return serve_workers(settings, lambda: asyncio.run(_run(settings)))
    return asyncio.run(_run(settings))


async def _run(settings: Settings) -> int:
    from ringfence.service.app import App  # heavy (numpy, hdbscan): only `serve` needs it

    app = App(settings)
    try:
        port = await app.start()
    except Exception as exc:
        print(f"ringfence: cannot start: {exc}", file=sys.stderr)
        return 1
    print(f"ringfence {__version__} serving on {settings.host}:{port}", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await app.stop()
    return 0


def _score(args: argparse.Namespace) -> int:
    if args.json_request:
        text = sys.stdin.read() if args.json_request == "-" else args.json_request
        try:
            request = json_format.Parse(text, pb.ScoreRequest())
        except json_format.ParseError as exc:
            print(f"ringfence: --json is not a ScoreRequest: {exc}", file=sys.stderr)
            return 2
    else:
        if not args.account or not args.ip:
            print("ringfence: give --json, or --account and --ip", file=sys.stderr)
            return 2
        request = pb.ScoreRequest(account_id=args.account, client_ip=args.ip,
                                  fingerprint=pb.DeviceFingerprint(
                                      user_agent=args.user_agent, ja4=args.ja4,
                                      device_id=args.device_id))
    with grpc.insecure_channel(args.target) as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        try:
            response = stub.Score(request, timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"ringfence: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    print(json.dumps(json_format.MessageToDict(response), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
