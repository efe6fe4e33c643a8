"""Operator subcommands of ``ringfence``: ``healthcheck`` (the container's HEALTHCHECK),
``keygen`` (a new hash key) and ``token`` (a new bearer token added to the tokens file).
Light imports only: a health check runs every few seconds."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

COMMANDS = frozenset({"healthcheck", "keygen", "token"})
_NAME = re.compile(r"[A-Za-z0-9._@:/+-]{1,128}")


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser(
        "healthcheck", help="exit 0 if the local service answers SERVING to a gRPC health check",
        description="Checks grpc.health.v1 on RINGFENCE_HEALTH_PORT when set (plaintext), "
                    "else on RINGFENCE_HOST:RINGFENCE_PORT (with TLS when RINGFENCE_TLS_* "
                    "are set).")
    check.add_argument("--config", type=Path, help="TOML settings file, as for serve")
    check.add_argument("--target", help="host:port to check (default: from the settings)")
    check.add_argument("--service", default="", help="service name ('' = the whole server)")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds")
    check.add_argument("--tls", action="store_true", help="use TLS even with --target")
    check.add_argument("--tls-ca", type=Path, help="CA bundle to trust (default: system roots)")
    check.add_argument("--tls-cert", type=Path, help="client certificate (mutual TLS)")
    check.add_argument("--tls-key", type=Path, help="client key (mutual TLS)")
    check.add_argument("--tls-server-name", help="name the server certificate must carry")

    keygen = sub.add_parser("keygen", help="print a new random hash key (hex) for "
                                           "RINGFENCE_HASH_KEY")
    keygen.add_argument("--bytes", type=int, default=32, choices=range(16, 65),
                        metavar="16..64", help="key length in bytes (default 32)")

    token = sub.add_parser("token", help="create a bearer token: its hash is appended to the "
                                         "tokens file, the token itself printed once")
    token.add_argument("--name", required=True, help="caller name (shown in logs and errors)")
    token.add_argument("--role", required=True, action="append",
                       choices=["scorer", "reader", "admin"], help="repeat for several roles")
    token.add_argument("--tokens-file", type=Path, required=True,
                       help="the tokens file (created with mode 0600 if missing)")


def run(args: argparse.Namespace) -> int:
    if args.command == "keygen":
        from ringfence.service.keys import new_key_hex
        print(new_key_hex(args.bytes))
        return 0
    if args.command == "token":
        return _token(args)
    return _healthcheck(args)


def _local(host: str) -> str:
    """Where to reach a server bound to ``host`` from inside the same container or pod."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host in ("::", "[::]"):
        return "[::1]"
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _healthcheck(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from pydantic import ValidationError

    from ringfence.service.settings import Settings

    use_tls = args.tls or any((args.tls_ca, args.tls_cert, args.tls_key))
    target = args.target
    if target is None:
        try:
            settings = Settings.load(args.config)
        except (ValidationError, OSError, ValueError) as exc:
            print(f"ringfence: invalid settings: {exc}", file=sys.stderr)
            return 1
        if settings.health_port:
            target = f"{_local(settings.host)}:{settings.health_port}"
        else:
            target = f"{_local(settings.host)}:{settings.port}"
            use_tls = use_tls or settings.tls_cert_file is not None
    options = ([("grpc.ssl_target_name_override", args.tls_server_name)]
               if args.tls_server_name else [])
    if use_tls:
        from ringfence.service.api.tls import channel_credentials
        channel = grpc.secure_channel(
            target, channel_credentials(args.tls_ca, args.tls_cert, args.tls_key), options)
    else:
        channel = grpc.insecure_channel(target, options)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"ringfence: {target}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{target}: {status}")
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


def _token(args: argparse.Namespace) -> int:
    from ringfence.service.api.auth import TokenBook, new_token, token_hash

    if not _NAME.fullmatch(args.name):
        print("ringfence: --name may use letters, digits and ._@:/+- (at most 128)",
              file=sys.stderr)
        return 2
    path: Path = args.tokens_file
    if path.exists():
        try:
            TokenBook.load(path)
        except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
            print(f"ringfence: {exc}", file=sys.stderr)
            return 2
    token = new_token()
    roles = sorted(set(args.role))
    role = f'"{roles[0]}"' if len(roles) == 1 else "[" + ", ".join(f'"{r}"' for r in roles) + "]"
    entry = (f'\n[[caller]]\nname = "{args.name}"\nrole = {role}\n'
             f'token_sha256 = "{token_hash(token)}"\n')
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a") as f:
        f.write(entry)
    print(token)
    print(f"ringfence: added caller {args.name!r} ({', '.join(roles)}) to {path}; the token "
          "above is shown only this once", file=sys.stderr)
    return 0
