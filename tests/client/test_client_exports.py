"""Pins the public surface of ringfence.client: changing it must be deliberate."""

import dataclasses
import enum

from google.protobuf.message import Message

import ringfence.client
import ringfence.client.testing

EXPECTED = {
    "DEFAULT_CHANNEL_OPTIONS",
    "DEFAULT_TIMEOUT",
    "FAIL_OPEN_REASON",
    "AccountInfo",
    "AccountProfile",
    "Action",
    "ActiveDecision",
    "AsyncClient",
    "AsyncDecisionCache",
    "Client",
    "ClusterInfo",
    "Decision",
    "DecisionCache",
    "FieldViolation",
    "Fingerprint",
    "InvalidRequestError",
    "ItemError",
    "Limit",
    "LimitScope",
    "LimitUnit",
    "NotFoundError",
    "OnUnavailable",
    "Reason",
    "RequestContext",
    "RingfenceError",
    "RingfenceRpcError",
    "ScoreRequest",
    "ServiceUnavailableError",
    "TaskCategory",
    "TaskCount",
    "WindowCounts",
}


def test_public_exports_are_pinned() -> None:
    assert set(ringfence.client.__all__) == EXPECTED
    assert len(ringfence.client.__all__) == len(EXPECTED)
    for name in ringfence.client.__all__:
        assert hasattr(ringfence.client, name), name


def test_testing_exports_are_pinned() -> None:
    assert ringfence.client.testing.__all__ == ["FakeRiskServer"]


def test_no_protobuf_type_is_public() -> None:
    for name in ringfence.client.__all__:
        value = getattr(ringfence.client, name)
        assert not (isinstance(value, type) and issubclass(value, Message)), name


def test_value_types_are_frozen_dataclasses_or_int_enums() -> None:
    for name in ringfence.client.__all__:
        value = getattr(ringfence.client, name)
        if dataclasses.is_dataclass(value):
            assert value.__dataclass_params__.frozen, name  # type: ignore[union-attr]
        elif isinstance(value, type) and issubclass(value, enum.Enum) and name != "OnUnavailable":
            assert issubclass(value, enum.IntEnum), name


def test_errors_share_one_base() -> None:
    for name in (
        "InvalidRequestError",
        "NotFoundError",
        "ServiceUnavailableError",
        "RingfenceRpcError",
    ):
        assert issubclass(getattr(ringfence.client, name), ringfence.client.RingfenceError)
