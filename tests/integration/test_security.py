"""TLS, mutual TLS and per-caller bearer tokens over real gRPC, with a throwaway CA made here."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic import ValidationError

from ringfence.client import AsyncClient, Fingerprint, RingfenceError, ScoreRequest
from ringfence.service import cli
from ringfence.service.adapters.clock import ManualClock
from ringfence.service.api.auth import AuthInterceptor, TokenBook, bearer_token, token_hash
from ringfence.service.edge import Edge
from ringfence.service.settings import Settings
from ringfence.v1 import risk_pb2 as pb
from ringfence.v1 import risk_pb2_grpc

# --- a throwaway PKI ---------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, cn: str) -> Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, server: bool) -> tuple[bytes, bytes]:
        """(key PEM, certificate PEM) for a server (localhost, 127.0.0.1) or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (x509.CertificateBuilder().subject_name(_name(cn))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem(key), cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    ca: Ca
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: bytes
    client_key: bytes


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca = Ca.create("ringfence test CA")
    (d / "ca.pem").write_bytes(ca.pem)
    key, cert = ca.issue("ringfence", server=True)
    (d / "server.key").write_bytes(key)
    (d / "server.pem").write_bytes(cert)
    client_key, client_cert = ca.issue("envoy-edge", server=False)
    return Pki(ca, d / "ca.pem", d / "server.pem", d / "server.key", client_cert, client_key)


async def health_check(channel: grpc.aio.Channel) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(),
                                                            timeout=3)
    return reply.status


# --- TLS and mutual TLS ------------------------------------------------------------------


async def test_tls_works_with_the_ca_and_plaintext_fails(start_app, pki):
    app = await start_app(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    target = f"127.0.0.1:{app.port}"
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)
    async with grpc.aio.secure_channel(target, creds) as channel:
        assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING
        reply = await risk_pb2_grpc.RiskServiceStub(channel).Score(
            pb.ScoreRequest(account_id="tls-a", client_ip="198.51.100.9"), timeout=5)
        assert reply.limit_key == "account:tls-a"

    async with grpc.aio.insecure_channel(target) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_check(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    # A client that does not trust the CA refuses the server.
    other = Ca.create("somebody else")
    untrusting = grpc.ssl_channel_credentials(root_certificates=other.pem)
    async with grpc.aio.secure_channel(target, untrusting) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_check(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_requires_a_client_certificate_from_the_ca(start_app, pki):
    app = await start_app(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                          tls_client_ca_file=pki.ca_file)
    target = f"127.0.0.1:{app.port}"

    without = grpc.ssl_channel_credentials(root_certificates=pki.ca.pem)
    async with grpc.aio.secure_channel(target, without) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_check(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    rogue_key, rogue_cert = Ca.create("rogue").issue("intruder", server=False)
    rogue = grpc.ssl_channel_credentials(pki.ca.pem, rogue_key, rogue_cert)
    async with grpc.aio.secure_channel(target, rogue) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await health_check(channel)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    # The light client, configured for mTLS, gets real decisions (it would fail open otherwise).
    good = grpc.ssl_channel_credentials(pki.ca.pem, pki.client_key, pki.client_cert)
    async with AsyncClient(target, credentials=good, timeout=5) as client:
        decision = await client.score(ScoreRequest(
            account_id="mtls-a", client_ip="198.51.100.10", fingerprint=Fingerprint()))
    assert not decision.fail_open and decision.limit_key == "account:mtls-a"


async def test_a_renewed_certificate_is_served_without_a_restart(start_app, pki, tmp_path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    app = await start_app(tls_cert_file=cert, tls_key_file=key)
    target = f"127.0.0.1:{app.port}"

    renewed_by = Ca.create("next CA")
    new_key, new_cert = renewed_by.issue("ringfence", server=True)
    key.write_bytes(new_key)
    cert.write_bytes(new_cert)
    os.utime(cert, ns=(1, 1))  # a distinct mtime even on coarse-clock file systems

    trusting_new = grpc.ssl_channel_credentials(root_certificates=renewed_by.pem)
    async with grpc.aio.secure_channel(target, trusting_new) as channel:
        assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING


def test_tls_settings_are_checked_together(tmp_path):
    with pytest.raises(ValidationError, match="set together"):
        Settings(tls_cert_file=tmp_path / "c.pem")
    with pytest.raises(ValidationError, match="mutual TLS"):
        Settings(tls_client_ca_file=tmp_path / "ca.pem")


# --- bearer tokens -----------------------------------------------------------------------

TOKENS = {"scorer": "rft_scorer-token", "reader": "rft_reader-token", "admin": "rft_admin-tok"}


def write_tokens(path: Path, tokens: dict[str, str]) -> Path:
    path.write_text("".join(
        f'[[caller]]\nname = "{role}-caller"\nrole = "{role}"\n'
        f'token_sha256 = "{token_hash(token)}"\n\n' for role, token in tokens.items()))
    return path


@pytest.fixture
async def guarded(start_app, tmp_path):
    app = await start_app(tokens_file=write_tokens(tmp_path / "tokens.toml", TOKENS))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield channel


def auth(role: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[role]}"),)


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_missing_or_unknown_token_is_unauthenticated(guarded):
    stub = risk_pb2_grpc.RiskServiceStub(guarded)
    score = pb.ScoreRequest(account_id="t-a", client_ip="198.51.100.11")
    assert await code_of(stub.Score(score, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    for header in ("Bearer nope", "Basic " + TOKENS["admin"], TOKENS["admin"], "Bearer "):
        md = (("authorization", header),)
        assert await code_of(stub.Score(score, metadata=md, timeout=5)) == \
            grpc.StatusCode.UNAUTHENTICATED, header
    assert await code_of(stub.Score(score, metadata=auth("scorer"), timeout=5)) == \
        grpc.StatusCode.OK


async def test_roles_decide_which_rpcs_a_caller_may_use(guarded):
    stub = risk_pb2_grpc.RiskServiceStub(guarded)
    await stub.Score(pb.ScoreRequest(account_id="t-b", client_ip="198.51.100.12"),
                     metadata=auth("scorer"), timeout=5)
    get = pb.GetAccountRequest(account_id="t-b")
    label = pb.SubmitLabelRequest(account_id="t-b", label=pb.LABEL_VALUE_ABUSIVE)
    score = pb.ScoreRequest(account_id="t-c", client_ip="198.51.100.13")
    denied = grpc.StatusCode.PERMISSION_DENIED
    ok = grpc.StatusCode.OK
    expected = {
        "scorer": {"Score": ok, "GetAccount": denied, "SubmitLabel": denied},
        "reader": {"Score": denied, "GetAccount": ok, "SubmitLabel": denied},
        "admin": {"Score": ok, "GetAccount": ok, "SubmitLabel": ok},
    }
    for role, methods in expected.items():
        got = {
            "Score": await code_of(stub.Score(score, metadata=auth(role), timeout=5)),
            "GetAccount": await code_of(stub.GetAccount(get, metadata=auth(role), timeout=5)),
            "SubmitLabel": await code_of(stub.SubmitLabel(label, metadata=auth(role),
                                                          timeout=5)),
        }
        assert got == methods, role
    try:
        await stub.SubmitLabel(label, metadata=auth("reader"), timeout=5)
    except grpc.aio.AioRpcError as exc:
        assert "reader-caller" in exc.details() and "SubmitLabel" in exc.details()
        assert TOKENS["reader"] not in exc.details()


async def test_health_and_reflection_need_no_token(guarded):
    assert await health_check(guarded) == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(guarded)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
        list_services="")]))
    async for reply in replies:
        names = {s.name for s in reply.list_services_response.service}
        assert "ringfence.v1.RiskService" in names
        break


async def test_the_light_client_sends_its_token_and_a_bad_one_is_not_failed_open(
        start_app, tmp_path):
    app = await start_app(tokens_file=write_tokens(tmp_path / "tokens.toml", TOKENS))
    target = f"127.0.0.1:{app.port}"
    request = ScoreRequest(account_id="t-e", client_ip="198.51.100.15")
    async with AsyncClient(target, metadata=auth("scorer"), timeout=5) as client:
        assert not (await client.score(request)).fail_open
    async with AsyncClient(target, metadata=(("authorization", "Bearer wrong"),),
                           timeout=5) as client:
        with pytest.raises(RingfenceError) as err:  # a misconfigured caller hears of it
            await client.score(request)
    assert err.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_token_cli_adds_a_caller_that_can_then_call(start_app, tmp_path, capsys):
    tokens = tmp_path / "tokens.toml"
    assert cli.main(["token", "--name", "analyst-1", "--role", "reader", "--role", "admin",
                     "--tokens-file", str(tokens)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("rft_") and token not in tokens.read_text()
    assert token_hash(token) in tokens.read_text()
    assert tokens.stat().st_mode & 0o777 == 0o600
    app = await start_app(tokens_file=tokens)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        stub = risk_pb2_grpc.RiskServiceStub(channel)
        md = (("authorization", f"Bearer {token}"),)
        await stub.Score(pb.ScoreRequest(account_id="t-d", client_ip="198.51.100.14"),
                         metadata=md, timeout=5)
        await stub.SubmitLabel(pb.SubmitLabelRequest(account_id="t-d",
                                                     label=pb.LABEL_VALUE_BENIGN),
                               metadata=md, timeout=5)


# --- the tokens file ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ('[[caller]]\nname = "x"\nrole = "root"\ntoken_sha256 = "' + "a" * 64 + '"\n', "role"),
    ('[[caller]]\nname = "x"\nrole = "admin"\ntoken_sha256 = "secret"\n', "64 hex"),
    ('[[caller]]\nname = ""\nrole = "admin"\ntoken_sha256 = "' + "a" * 64 + '"\n', "name"),
    ('[[caller]]\nname = "x"\nrole = "admin"\ntoken = "plain"\n', "unknown keys"),
    ('[[caller]]\nname = "x"\nrole = "admin"\ntoken_sha256 = "' + "a" * 64 + '"\n'
     '[[caller]]\nname = "y"\nrole = "reader"\ntoken_sha256 = "' + "a" * 64 + '"\n', "repeats"),
    ('[callers]\n', "unknown keys"),
])
def test_a_bad_tokens_file_is_refused_with_a_reason(tmp_path, text, message):
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        TokenBook.load(path)


def test_a_changed_tokens_file_is_reloaded_and_a_broken_one_ignored(tmp_path):
    path = write_tokens(tmp_path / "tokens.toml", {"scorer": "rft_one"})
    now = [0.0]
    interceptor = AuthInterceptor(path, recheck_s=5.0, monotonic=lambda: now[0])
    book = interceptor._file.current
    assert book().authenticate("rft_one") is not None
    write_tokens(path, {"reader": "rft_two"})
    os.utime(path, ns=(1, 1))
    assert book().authenticate("rft_two") is None  # not re-checked yet
    now[0] = 6.0
    assert book().authenticate("rft_two") is not None
    assert book().authenticate("rft_one") is None  # revoked
    path.write_text("not = [valid")
    now[0] = 12.0
    assert book().authenticate("rft_two") is not None  # the broken edit is ignored


def test_bearer_token_parsing():
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("Authorization", "bearer  abc "),)) == "abc"
    assert bearer_token((("authorization", b"Bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) is None
    assert bearer_token(()) is None


# --- probe port, exposure warnings, key rotation -----------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_the_probe_port_serves_only_health_in_plaintext(start_app, pki, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.toml", TOKENS)
    app = await start_app(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                          tls_client_ca_file=pki.ca_file, tokens_file=tokens,
                          health_port=free_port())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.edge.health_port}") as channel:
        assert await health_check(channel) == health_pb2.HealthCheckResponse.SERVING
        score = risk_pb2_grpc.RiskServiceStub(channel).Score(
            pb.ScoreRequest(account_id="p", client_ip="198.51.100.16"),
            metadata=auth("admin"), timeout=5)
        assert await code_of(score) == grpc.StatusCode.UNIMPLEMENTED
        await app.health.enter_graceful_shutdown()  # what stop() does first
        assert await health_check(channel) == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_an_exposed_port_without_tokens_or_tls_is_warned_about(caplog, pki, tmp_path):
    tokens = write_tokens(tmp_path / "tokens.toml", TOKENS)
    tls = dict(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key)
    cases = [(dict(host="127.0.0.1"), 0), (dict(host="::1"), 0), (dict(host="localhost"), 0),
             (dict(host="0.0.0.0"), 2), (dict(host="10.1.2.3"), 2),
             (dict(host="ringfence.internal"), 2), (dict(host="0.0.0.0", **tls), 1),
             (dict(host="0.0.0.0", tokens_file=tokens), 1),
             (dict(host="0.0.0.0", tokens_file=tokens, **tls), 0)]
    for overrides, expected in cases:
        caplog.clear()
        edge = Edge(Settings(**overrides), ManualClock(0.0))
        with caplog.at_level(logging.INFO, logger="ringfence.service.edge"):
            await edge.start(health.aio.HealthServicer())  # binds nothing: no side ports
        await edge.close()
        found = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(found) == expected, overrides


async def test_restarting_with_a_new_hash_key_warns_that_linkage_restarts(start_app, tmp_path,
                                                                          caplog):
    data = tmp_path / "keyed"
    first = await start_app(data_dir=data, hash_key="11" * 32)
    await first.stop(0)
    with caplog.at_level(logging.WARNING, logger="ringfence.service.keys"):
        await start_app(data_dir=data, hash_key="22" * 32)
    assert any("linked afresh" in r.getMessage() for r in caplog.records)
