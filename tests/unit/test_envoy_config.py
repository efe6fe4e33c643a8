"""deploy/envoy/envoy.yaml is a valid Envoy bootstrap (parsed with the real xds-protos
messages) and reads the metadata keys the gateway really emits."""

from __future__ import annotations

from pathlib import Path

import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from envoy.extensions.filters.http.header_mutation.v3 import header_mutation_pb2
from envoy.extensions.filters.http.jwt_authn.v3 import config_pb2 as jwt_pb2
from envoy.extensions.filters.http.ratelimit.v3 import rate_limit_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2  # noqa: F401  (Any type)
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm_pb2,
)
from envoy.extensions.upstreams.http.v3 import http_protocol_options_pb2  # noqa: F401
from google.protobuf import json_format

from ringfence.service.api.envoy import METADATA_KEY
from ringfence.service.api.gateway import ANSWER_HEADERS, GatewayConfig, verdict
from ringfence.service.core.model import Action, Decision, Limit, LimitScope, LimitUnit

ROOT = Path(__file__).resolve().parents[2]


def load() -> bootstrap_pb2.Bootstrap:
    data = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    return json_format.ParseDict(data, bootstrap_pb2.Bootstrap())


def http_manager() -> hcm_pb2.HttpConnectionManager:
    listener = load().static_resources.listeners[0]
    manager = hcm_pb2.HttpConnectionManager()
    listener.filter_chains[0].filters[0].typed_config.Unpack(manager)
    return manager


def test_the_example_config_parses_as_an_envoy_bootstrap():
    bootstrap = load()
    assert {c.name for c in bootstrap.static_resources.clusters} == {"ringfence", "api_backend"}


def test_ext_authz_fails_open_within_200ms_before_the_ratelimit_filter():
    filters = http_manager().http_filters
    names = [f.name for f in filters]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.ext_authz",
        "envoy.filters.http.ratelimit",
        "envoy.filters.http.router",
    ]
    authz = ext_authz_pb2.ExtAuthz()
    filters[names.index("envoy.filters.http.ext_authz")].typed_config.Unpack(authz)
    assert authz.failure_mode_allow
    assert authz.grpc_service.timeout.ToMilliseconds() == 200
    assert authz.encode_raw_headers
    assert not authz.HasField("with_request_body")
    limiter = rate_limit_pb2.RateLimit()
    filters[names.index("envoy.filters.http.ratelimit")].typed_config.Unpack(limiter)
    assert not limiter.failure_mode_deny
    assert limiter.rate_limit_service.grpc_service.envoy_grpc.cluster_name == "ringfence"


def test_client_set_identity_and_answer_headers_are_dropped_before_the_account_is_set():
    filters = {f.name: f for f in http_manager().http_filters}
    mutation = header_mutation_pb2.HeaderMutation()
    filters["envoy.filters.http.header_mutation"].typed_config.Unpack(mutation)
    removed = {m.remove for m in mutation.mutations.request_mutations}
    assert {"x-ringfence-account", "x-ja4", "x-ja3"} <= removed
    # ext_authz overwrites the answer headers only when it answers, not when it fails open
    assert {*ANSWER_HEADERS, "x-ringfence-limit-remaining"} <= removed
    jwt = jwt_pb2.JwtAuthentication()
    filters["envoy.filters.http.jwt_authn"].typed_config.Unpack(jwt)
    claims = jwt.providers["api"].claim_to_headers
    assert [(c.header_name, c.claim_name) for c in claims] == [("x-ringfence-account", "sub")]


def test_rate_limit_actions_read_the_metadata_the_gateway_emits():
    d = Decision(
        risk_score=0.6,
        action=Action.THROTTLE,
        policy_action=Action.THROTTLE,
        shadow=False,
        route_to_fallback=False,
        limit_key="account:a",
        limit_scope=LimitScope.ACCOUNT,
        suggested_limit=Limit(10, LimitUnit.MINUTE),
        ttl_seconds=300,
        reasons=(),
        policy_version="p",
        decided_at=0.0,
    )
    emitted = verdict(d, GatewayConfig()).metadata
    manager = http_manager()
    # On the filter, not the route: a route's rate_limits ignore hits_addend (Envoy 1.40,
    # found by tests/e2e/test_envoy_real.py).
    assert not manager.route_config.virtual_hosts[0].routes[0].route.rate_limits
    limiter = rate_limit_pb2.RateLimit()
    {f.name: f for f in manager.http_filters}["envoy.filters.http.ratelimit"].typed_config.Unpack(
        limiter
    )
    [rate_limit] = limiter.rate_limits
    key = rate_limit.actions[0].metadata.metadata_key
    assert key.key == "envoy.filters.http.ext_authz"
    assert [p.key for p in key.path] == [METADATA_KEY, "limit_key"]
    override = rate_limit.limit.dynamic_metadata.metadata_key
    assert [p.key for p in override.path] == [METADATA_KEY, "limit"]
    assert set(emitted["limit"]) == {"requests_per_unit", "unit"}
    assert f"{METADATA_KEY}:hits_addend" in rate_limit.hits_addend.format
    assert isinstance(emitted["limit_key"], str)  # metadata actions only match strings
