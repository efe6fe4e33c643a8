import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskCategory(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_CATEGORY_UNSPECIFIED: _ClassVar[TaskCategory]
    TASK_CATEGORY_CHAT: _ClassVar[TaskCategory]
    TASK_CATEGORY_CODE: _ClassVar[TaskCategory]
    TASK_CATEGORY_REASONING: _ClassVar[TaskCategory]
    TASK_CATEGORY_EMBEDDING: _ClassVar[TaskCategory]
    TASK_CATEGORY_OTHER: _ClassVar[TaskCategory]

class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACTION_UNSPECIFIED: _ClassVar[Action]
    ACTION_ALLOW: _ClassVar[Action]
    ACTION_THROTTLE: _ClassVar[Action]
    ACTION_CHALLENGE: _ClassVar[Action]
    ACTION_BLOCK: _ClassVar[Action]

class LimitScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIMIT_SCOPE_UNSPECIFIED: _ClassVar[LimitScope]
    LIMIT_SCOPE_ACCOUNT: _ClassVar[LimitScope]
    LIMIT_SCOPE_CLUSTER: _ClassVar[LimitScope]

class LabelValue(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LABEL_VALUE_UNSPECIFIED: _ClassVar[LabelValue]
    LABEL_VALUE_ABUSIVE: _ClassVar[LabelValue]
    LABEL_VALUE_BENIGN: _ClassVar[LabelValue]
TASK_CATEGORY_UNSPECIFIED: TaskCategory
TASK_CATEGORY_CHAT: TaskCategory
TASK_CATEGORY_CODE: TaskCategory
TASK_CATEGORY_REASONING: TaskCategory
TASK_CATEGORY_EMBEDDING: TaskCategory
TASK_CATEGORY_OTHER: TaskCategory
ACTION_UNSPECIFIED: Action
ACTION_ALLOW: Action
ACTION_THROTTLE: Action
ACTION_CHALLENGE: Action
ACTION_BLOCK: Action
LIMIT_SCOPE_UNSPECIFIED: LimitScope
LIMIT_SCOPE_ACCOUNT: LimitScope
LIMIT_SCOPE_CLUSTER: LimitScope
LABEL_VALUE_UNSPECIFIED: LabelValue
LABEL_VALUE_ABUSIVE: LabelValue
LABEL_VALUE_BENIGN: LabelValue

class ScoreRequest(_message.Message):
    __slots__ = ("account_id", "api_key_id", "org_id", "client_ip", "forwarded_for", "fingerprint", "context", "account_created_at")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    API_KEY_ID_FIELD_NUMBER: _ClassVar[int]
    ORG_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_IP_FIELD_NUMBER: _ClassVar[int]
    FORWARDED_FOR_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    ACCOUNT_CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    api_key_id: str
    org_id: str
    client_ip: str
    forwarded_for: _containers.RepeatedScalarFieldContainer[str]
    fingerprint: DeviceFingerprint
    context: RequestContext
    account_created_at: _timestamp_pb2.Timestamp
    def __init__(self, account_id: _Optional[str] = ..., api_key_id: _Optional[str] = ..., org_id: _Optional[str] = ..., client_ip: _Optional[str] = ..., forwarded_for: _Optional[_Iterable[str]] = ..., fingerprint: _Optional[_Union[DeviceFingerprint, _Mapping]] = ..., context: _Optional[_Union[RequestContext, _Mapping]] = ..., account_created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DeviceFingerprint(_message.Message):
    __slots__ = ("ja4", "ja3", "user_agent", "header_names", "sdk_name", "sdk_version", "device_id", "accept_language", "extra_fingerprints", "attributes")
    class ExtraFingerprintsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JA4_FIELD_NUMBER: _ClassVar[int]
    JA3_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    HEADER_NAMES_FIELD_NUMBER: _ClassVar[int]
    SDK_NAME_FIELD_NUMBER: _ClassVar[int]
    SDK_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FINGERPRINTS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ja4: str
    ja3: str
    user_agent: str
    header_names: _containers.RepeatedScalarFieldContainer[str]
    sdk_name: str
    sdk_version: str
    device_id: str
    accept_language: str
    extra_fingerprints: _containers.ScalarMap[str, str]
    attributes: _containers.ScalarMap[str, str]
    def __init__(self, ja4: _Optional[str] = ..., ja3: _Optional[str] = ..., user_agent: _Optional[str] = ..., header_names: _Optional[_Iterable[str]] = ..., sdk_name: _Optional[str] = ..., sdk_version: _Optional[str] = ..., device_id: _Optional[str] = ..., accept_language: _Optional[str] = ..., extra_fingerprints: _Optional[_Mapping[str, str]] = ..., attributes: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RequestContext(_message.Message):
    __slots__ = ("event_time", "endpoint", "model", "task_category", "input_tokens", "output_tokens", "content_signature")
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TASK_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    event_time: _timestamp_pb2.Timestamp
    endpoint: str
    model: str
    task_category: TaskCategory
    input_tokens: int
    output_tokens: int
    content_signature: int
    def __init__(self, event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., endpoint: _Optional[str] = ..., model: _Optional[str] = ..., task_category: _Optional[_Union[TaskCategory, str]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., content_signature: _Optional[int] = ...) -> None: ...

class Limit(_message.Message):
    __slots__ = ("requests_per_unit", "unit")
    class Unit(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNIT_UNSPECIFIED: _ClassVar[Limit.Unit]
        UNIT_SECOND: _ClassVar[Limit.Unit]
        UNIT_MINUTE: _ClassVar[Limit.Unit]
        UNIT_HOUR: _ClassVar[Limit.Unit]
        UNIT_DAY: _ClassVar[Limit.Unit]
    UNIT_UNSPECIFIED: Limit.Unit
    UNIT_SECOND: Limit.Unit
    UNIT_MINUTE: Limit.Unit
    UNIT_HOUR: Limit.Unit
    UNIT_DAY: Limit.Unit
    REQUESTS_PER_UNIT_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    requests_per_unit: int
    unit: Limit.Unit
    def __init__(self, requests_per_unit: _Optional[int] = ..., unit: _Optional[_Union[Limit.Unit, str]] = ...) -> None: ...

class Reason(_message.Message):
    __slots__ = ("code", "weight", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    weight: float
    message: str
    def __init__(self, code: _Optional[str] = ..., weight: _Optional[float] = ..., message: _Optional[str] = ...) -> None: ...

class ClusterInfo(_message.Message):
    __slots__ = ("cluster_id", "size")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    size: int
    def __init__(self, cluster_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class Cluster(_message.Message):
    __slots__ = ("cluster_id", "size", "risk", "reasons", "daily_volume", "baseline_daily_volume", "new_account_share", "anonymized_share", "device_diversity", "shared_device_share", "shared_template_share", "timing_sync", "timing_regularity", "fitted_at", "lineage", "label", "daily_budget", "enforced")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RISK_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    DAILY_VOLUME_FIELD_NUMBER: _ClassVar[int]
    BASELINE_DAILY_VOLUME_FIELD_NUMBER: _ClassVar[int]
    NEW_ACCOUNT_SHARE_FIELD_NUMBER: _ClassVar[int]
    ANONYMIZED_SHARE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    SHARED_DEVICE_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHARED_TEMPLATE_SHARE_FIELD_NUMBER: _ClassVar[int]
    TIMING_SYNC_FIELD_NUMBER: _ClassVar[int]
    TIMING_REGULARITY_FIELD_NUMBER: _ClassVar[int]
    FITTED_AT_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    DAILY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    ENFORCED_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    size: int
    risk: float
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    daily_volume: float
    baseline_daily_volume: float
    new_account_share: float
    anonymized_share: float
    device_diversity: float
    shared_device_share: float
    shared_template_share: float
    timing_sync: float
    timing_regularity: float
    fitted_at: _timestamp_pb2.Timestamp
    lineage: _containers.RepeatedScalarFieldContainer[str]
    label: LabelValue
    daily_budget: int
    enforced: bool
    def __init__(self, cluster_id: _Optional[str] = ..., size: _Optional[int] = ..., risk: _Optional[float] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., daily_volume: _Optional[float] = ..., baseline_daily_volume: _Optional[float] = ..., new_account_share: _Optional[float] = ..., anonymized_share: _Optional[float] = ..., device_diversity: _Optional[float] = ..., shared_device_share: _Optional[float] = ..., shared_template_share: _Optional[float] = ..., timing_sync: _Optional[float] = ..., timing_regularity: _Optional[float] = ..., fitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., lineage: _Optional[_Iterable[str]] = ..., label: _Optional[_Union[LabelValue, str]] = ..., daily_budget: _Optional[int] = ..., enforced: bool = ...) -> None: ...

class GetClusterRequest(_message.Message):
    __slots__ = ("cluster_id", "member_sample_size")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBER_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    cluster_id: str
    member_sample_size: int
    def __init__(self, cluster_id: _Optional[str] = ..., member_sample_size: _Optional[int] = ...) -> None: ...

class GetClusterResponse(_message.Message):
    __slots__ = ("cluster", "member_sample")
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MEMBER_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    cluster: Cluster
    member_sample: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cluster: _Optional[_Union[Cluster, _Mapping]] = ..., member_sample: _Optional[_Iterable[str]] = ...) -> None: ...

class ListClustersRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "min_risk")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MIN_RISK_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    min_risk: float
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., min_risk: _Optional[float] = ...) -> None: ...

class ListClustersResponse(_message.Message):
    __slots__ = ("clusters", "next_page_token", "model_version")
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    clusters: _containers.RepeatedCompositeFieldContainer[Cluster]
    next_page_token: str
    model_version: str
    def __init__(self, clusters: _Optional[_Iterable[_Union[Cluster, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ExplainAccountRequest(_message.Message):
    __slots__ = ("account_id", "nearest")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    NEAREST_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    nearest: int
    def __init__(self, account_id: _Optional[str] = ..., nearest: _Optional[int] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: float
    def __init__(self, name: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("account_id", "distance")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    distance: float
    def __init__(self, account_id: _Optional[str] = ..., distance: _Optional[float] = ...) -> None: ...

class ExplainAccountResponse(_message.Message):
    __slots__ = ("profile", "features", "feature_schema_version", "cluster", "membership_probability", "nearest_members", "last_decision")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    NEAREST_MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_FIELD_NUMBER: _ClassVar[int]
    profile: AccountProfile
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    feature_schema_version: int
    cluster: Cluster
    membership_probability: float
    nearest_members: _containers.RepeatedCompositeFieldContainer[Neighbour]
    last_decision: ScoreResponse
    def __init__(self, profile: _Optional[_Union[AccountProfile, _Mapping]] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., feature_schema_version: _Optional[int] = ..., cluster: _Optional[_Union[Cluster, _Mapping]] = ..., membership_probability: _Optional[float] = ..., nearest_members: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., last_decision: _Optional[_Union[ScoreResponse, _Mapping]] = ...) -> None: ...

class SubmitLabelRequest(_message.Message):
    __slots__ = ("account_id", "cluster_id", "label", "author", "note")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    cluster_id: str
    label: LabelValue
    author: str
    note: str
    def __init__(self, account_id: _Optional[str] = ..., cluster_id: _Optional[str] = ..., label: _Optional[_Union[LabelValue, str]] = ..., author: _Optional[str] = ..., note: _Optional[str] = ...) -> None: ...

class SubmitLabelResponse(_message.Message):
    __slots__ = ("recorded_at",)
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("clustering_enabled", "model_version", "fitted_at", "fit_seconds", "accounts", "clusters", "noise_accounts", "pending_accounts", "feature_schema_version", "feature_names", "min_cluster_size", "min_samples", "window_days")
    CLUSTERING_ENABLED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    CLUSTERS_FIELD_NUMBER: _ClassVar[int]
    NOISE_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    PENDING_ACCOUNTS_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_NAMES_FIELD_NUMBER: _ClassVar[int]
    MIN_CLUSTER_SIZE_FIELD_NUMBER: _ClassVar[int]
    MIN_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_DAYS_FIELD_NUMBER: _ClassVar[int]
    clustering_enabled: bool
    model_version: str
    fitted_at: _timestamp_pb2.Timestamp
    fit_seconds: float
    accounts: int
    clusters: int
    noise_accounts: int
    pending_accounts: int
    feature_schema_version: int
    feature_names: _containers.RepeatedScalarFieldContainer[str]
    min_cluster_size: int
    min_samples: int
    window_days: float
    def __init__(self, clustering_enabled: bool = ..., model_version: _Optional[str] = ..., fitted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., fit_seconds: _Optional[float] = ..., accounts: _Optional[int] = ..., clusters: _Optional[int] = ..., noise_accounts: _Optional[int] = ..., pending_accounts: _Optional[int] = ..., feature_schema_version: _Optional[int] = ..., feature_names: _Optional[_Iterable[str]] = ..., min_cluster_size: _Optional[int] = ..., min_samples: _Optional[int] = ..., window_days: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("risk_score", "action", "policy_action", "shadow", "route_to_fallback", "limit_key", "limit_scope", "suggested_limit", "decision_ttl", "reasons", "cluster", "model_version", "policy_version", "degraded", "decided_at")
    RISK_SCORE_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    POLICY_ACTION_FIELD_NUMBER: _ClassVar[int]
    SHADOW_FIELD_NUMBER: _ClassVar[int]
    ROUTE_TO_FALLBACK_FIELD_NUMBER: _ClassVar[int]
    LIMIT_KEY_FIELD_NUMBER: _ClassVar[int]
    LIMIT_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DECISION_TTL_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEGRADED_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    risk_score: float
    action: Action
    policy_action: Action
    shadow: bool
    route_to_fallback: bool
    limit_key: str
    limit_scope: LimitScope
    suggested_limit: Limit
    decision_ttl: _duration_pb2.Duration
    reasons: _containers.RepeatedCompositeFieldContainer[Reason]
    cluster: ClusterInfo
    model_version: str
    policy_version: str
    degraded: bool
    decided_at: _timestamp_pb2.Timestamp
    def __init__(self, risk_score: _Optional[float] = ..., action: _Optional[_Union[Action, str]] = ..., policy_action: _Optional[_Union[Action, str]] = ..., shadow: bool = ..., route_to_fallback: bool = ..., limit_key: _Optional[str] = ..., limit_scope: _Optional[_Union[LimitScope, str]] = ..., suggested_limit: _Optional[_Union[Limit, _Mapping]] = ..., decision_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., reasons: _Optional[_Iterable[_Union[Reason, _Mapping]]] = ..., cluster: _Optional[_Union[ClusterInfo, _Mapping]] = ..., model_version: _Optional[str] = ..., policy_version: _Optional[str] = ..., degraded: bool = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ("field", "description")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    field: str
    description: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message", "field_violations")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATIONS_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    field_violations: _containers.RepeatedCompositeFieldContainer[FieldViolation]
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ..., field_violations: _Optional[_Iterable[_Union[FieldViolation, _Mapping]]] = ...) -> None: ...

class ScoreBatchResult(_message.Message):
    __slots__ = ("response", "error")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    response: ScoreResponse
    error: ItemError
    def __init__(self, response: _Optional[_Union[ScoreResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ScoreBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ScoreBatchResult, _Mapping]]] = ...) -> None: ...

class GetAccountRequest(_message.Message):
    __slots__ = ("account_id",)
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    def __init__(self, account_id: _Optional[str] = ...) -> None: ...

class WindowCounts(_message.Message):
    __slots__ = ("last_5m", "last_1h", "last_24h")
    LAST_5M_FIELD_NUMBER: _ClassVar[int]
    LAST_1H_FIELD_NUMBER: _ClassVar[int]
    LAST_24H_FIELD_NUMBER: _ClassVar[int]
    last_5m: int
    last_1h: int
    last_24h: int
    def __init__(self, last_5m: _Optional[int] = ..., last_1h: _Optional[int] = ..., last_24h: _Optional[int] = ...) -> None: ...

class TaskCount(_message.Message):
    __slots__ = ("task_category", "requests")
    TASK_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    task_category: TaskCategory
    requests: int
    def __init__(self, task_category: _Optional[_Union[TaskCategory, str]] = ..., requests: _Optional[int] = ...) -> None: ...

class AccountProfile(_message.Message):
    __slots__ = ("account_id", "first_seen", "last_seen", "total_requests", "requests", "distinct_ips", "distinct_prefixes", "distinct_asns", "distinct_countries", "distinct_devices", "task_mix", "input_tokens", "output_tokens", "anonymized_share")
    ACCOUNT_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEEN_FIELD_NUMBER: _ClassVar[int]
    LAST_SEEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_IPS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_PREFIXES_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_ASNS_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_COUNTRIES_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_DEVICES_FIELD_NUMBER: _ClassVar[int]
    TASK_MIX_FIELD_NUMBER: _ClassVar[int]
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ANONYMIZED_SHARE_FIELD_NUMBER: _ClassVar[int]
    account_id: str
    first_seen: _timestamp_pb2.Timestamp
    last_seen: _timestamp_pb2.Timestamp
    total_requests: int
    requests: WindowCounts
    distinct_ips: int
    distinct_prefixes: int
    distinct_asns: int
    distinct_countries: int
    distinct_devices: int
    task_mix: _containers.RepeatedCompositeFieldContainer[TaskCount]
    input_tokens: int
    output_tokens: int
    anonymized_share: float
    def __init__(self, account_id: _Optional[str] = ..., first_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_seen: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., total_requests: _Optional[int] = ..., requests: _Optional[_Union[WindowCounts, _Mapping]] = ..., distinct_ips: _Optional[int] = ..., distinct_prefixes: _Optional[int] = ..., distinct_asns: _Optional[int] = ..., distinct_countries: _Optional[int] = ..., distinct_devices: _Optional[int] = ..., task_mix: _Optional[_Iterable[_Union[TaskCount, _Mapping]]] = ..., input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., anonymized_share: _Optional[float] = ...) -> None: ...

class GetAccountResponse(_message.Message):
    __slots__ = ("profile", "last_decision")
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LAST_DECISION_FIELD_NUMBER: _ClassVar[int]
    profile: AccountProfile
    last_decision: ScoreResponse
    def __init__(self, profile: _Optional[_Union[AccountProfile, _Mapping]] = ..., last_decision: _Optional[_Union[ScoreResponse, _Mapping]] = ...) -> None: ...

class ReloadModelRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadModelResponse(_message.Message):
    __slots__ = ("model_version",)
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_version: str
    def __init__(self, model_version: _Optional[str] = ...) -> None: ...

class StreamDecisionsRequest(_message.Message):
    __slots__ = ("min_action", "scopes", "skip_snapshot")
    MIN_ACTION_FIELD_NUMBER: _ClassVar[int]
    SCOPES_FIELD_NUMBER: _ClassVar[int]
    SKIP_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    min_action: Action
    scopes: _containers.RepeatedScalarFieldContainer[LimitScope]
    skip_snapshot: bool
    def __init__(self, min_action: _Optional[_Union[Action, str]] = ..., scopes: _Optional[_Iterable[_Union[LimitScope, str]]] = ..., skip_snapshot: bool = ...) -> None: ...

class ActiveDecision(_message.Message):
    __slots__ = ("scope", "limit_key", "subject_id", "action", "risk_score", "suggested_limit", "ttl", "expires_at", "decided_at", "reason_codes", "model_version", "policy_version")
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_KEY_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RISK_SCORE_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_LIMIT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    REASON_CODES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    scope: LimitScope
    limit_key: str
    subject_id: str
    action: Action
    risk_score: float
    suggested_limit: Limit
    ttl: _duration_pb2.Duration
    expires_at: _timestamp_pb2.Timestamp
    decided_at: _timestamp_pb2.Timestamp
    reason_codes: _containers.RepeatedScalarFieldContainer[str]
    model_version: str
    policy_version: str
    def __init__(self, scope: _Optional[_Union[LimitScope, str]] = ..., limit_key: _Optional[str] = ..., subject_id: _Optional[str] = ..., action: _Optional[_Union[Action, str]] = ..., risk_score: _Optional[float] = ..., suggested_limit: _Optional[_Union[Limit, _Mapping]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reason_codes: _Optional[_Iterable[str]] = ..., model_version: _Optional[str] = ..., policy_version: _Optional[str] = ...) -> None: ...

class DecisionEvent(_message.Message):
    __slots__ = ("kind", "decision", "sent_at", "heartbeat_interval")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[DecisionEvent.Kind]
        KIND_SNAPSHOT: _ClassVar[DecisionEvent.Kind]
        KIND_SNAPSHOT_END: _ClassVar[DecisionEvent.Kind]
        KIND_UPSERT: _ClassVar[DecisionEvent.Kind]
        KIND_DELETE: _ClassVar[DecisionEvent.Kind]
        KIND_HEARTBEAT: _ClassVar[DecisionEvent.Kind]
    KIND_UNSPECIFIED: DecisionEvent.Kind
    KIND_SNAPSHOT: DecisionEvent.Kind
    KIND_SNAPSHOT_END: DecisionEvent.Kind
    KIND_UPSERT: DecisionEvent.Kind
    KIND_DELETE: DecisionEvent.Kind
    KIND_HEARTBEAT: DecisionEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    kind: DecisionEvent.Kind
    decision: ActiveDecision
    sent_at: _timestamp_pb2.Timestamp
    heartbeat_interval: _duration_pb2.Duration
    def __init__(self, kind: _Optional[_Union[DecisionEvent.Kind, str]] = ..., decision: _Optional[_Union[ActiveDecision, _Mapping]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., heartbeat_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
