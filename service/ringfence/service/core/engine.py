"""The transport-neutral data plane: one request in, one decision out.

It enriches the IP, analyses the fingerprint, records the request in the live profiles, scores
it (with the account's cluster and any analyst labels), stores the decision and appends the
event. Everything it touches comes in through ports; clustering work never runs here — a known
account's cluster is a cached lookup.
"""

from __future__ import annotations

from ringfence.service.core.analyst import Analyst
from ringfence.service.core.cluster_state import ClusterState
from ringfence.service.core.errors import NotFound
from ringfence.service.core.features import request_tokens
from ringfence.service.core.fingerprint import FingerprintAnalyzer
from ringfence.service.core.identity import Hasher
from ringfence.service.core.labels import LabelBook
from ringfence.service.core.model import (
    AccountSummary,
    Decision,
    Label,
    LabelTarget,
    Observation,
    Reason,
    ScoredEvent,
)
from ringfence.service.core.policy import Policy
from ringfence.service.core.ports import Clock, EventLog, GeoIp, LabelStore, ProfileStore
from ringfence.service.core.profiles import AccountEvent, token_of
from ringfence.service.core.scoring import Assessment, assess, decide, with_cluster
from ringfence.service.core.volume import VolumeGuard

_VOLUME_META = "volume_guard"


class _HashMemo:
    """Keyed hashes of values that come back request after request (client IPs, network
    prefixes, JA4 strings), kept for the next time: a bounded dict, emptied when full."""

    def __init__(self, hasher: Hasher, kind: str, size: int = 4096) -> None:
        self._hexdigest = hasher.hexdigest
        self._kind = kind
        self._size = size
        self._memo: dict[object, str] = {}

    def __call__(self, value: object) -> str:
        found = self._memo.get(value)
        if found is None:
            if len(self._memo) >= self._size:
                self._memo.clear()
            found = self._memo[value] = self._hexdigest(self._kind, str(value))
        return found


class RiskEngine:
    def __init__(self, *, policy: Policy, geoip: GeoIp, store: ProfileStore, events: EventLog,
                 clock: Clock, hasher: Hasher, clusters: ClusterState | None = None,
                 labels: LabelStore | None = None) -> None:
        self._policy = policy
        self._geoip = geoip
        self._store = store
        self._events = events
        self._clock = clock
        self._hasher = hasher
        self._ip_hash = _HashMemo(hasher, "ip")
        self._prefix_hash = _HashMemo(hasher, "prefix")
        self._ja4_hash = _HashMemo(hasher, "ja4")
        self._analyzer = FingerprintAnalyzer(hasher)
        self.clusters = clusters
        self._label_store = labels
        self.labels = LabelBook(labels.all() if labels is not None else ())
        self.volume = VolumeGuard(policy.fallback)
        self.analyst = Analyst(clusters, store, self.labels, policy)
        saved = store.load_meta(_VOLUME_META)
        if saved:
            self.volume.restore(saved)

    @property
    def policy(self) -> Policy:
        return self._policy

    def replace_policy(self, policy: Policy) -> None:
        """Swap the policy (one reference assignment: requests in flight keep the old one)."""
        self._policy = policy
        self.volume.policy = policy.fallback
        self.analyst.policy = policy

    def score(self, obs: Observation) -> Decision:
        policy = self._policy
        hasher = self._hasher
        t = obs.context.event_time
        ip = self._geoip.lookup(obs.client_ip)
        device = self._analyzer.analyze(obs.fingerprint)
        ip_hash = self._ip_hash(obs.client_ip)
        prefix_key = self._prefix_hash(ip.prefix)
        # Profile tokens derive from the hashes the event log keeps, so the batch job rebuilds
        # exactly the same profiles from the log (see profiles.token_of).
        event = AccountEvent(
            t=t,
            account_token=hasher.token("account", obs.account_id),
            ip_token=token_of(ip_hash),
            prefix_token=token_of(prefix_key),
            asn=ip.asn or 0,
            country_token=hasher.token("country", ip.country) if ip.country else 0,
            device_token=token_of(device.device_key),
            stack_token=token_of(device.stack_key),
            content_signature=obs.context.content_signature,
            anonymized=ip.anonymized,
            task=int(obs.context.task),
            input_tokens=obs.context.input_tokens,
            output_tokens=obs.context.output_tokens,
        )
        link = self._store.record(obs.account_id, device.device_key, prefix_key, event,
                                  obs.account_created_at)
        self.volume.observe(t)
        cluster = None
        model_version = ""
        if self.clusters is not None:
            self.clusters.note(obs.account_id, link.identity_changed)
            cluster = self.clusters.view(obs.account_id, request_tokens(
                device=event.device_token, stack=event.stack_token, ip=event.ip_token,
                prefix=event.prefix_token, signature=event.content_signature))
            model = self.clusters.model
            model_version = model.version if model is not None else ""
        cluster_label = self.labels.cluster(cluster.cluster_id) if cluster else None
        assessment = with_cluster(policy, assess(policy, link, ip, device, now=t), cluster,
                                  cluster_label)
        fallback = self.volume.near_peak()
        if fallback:
            assessment = Assessment(assessment.score, (*assessment.reasons, Reason(
                "GLOBAL_VOLUME_NEAR_PEAK", 0.0,
                f"today's volume is {self.volume.today} of a {self.volume.peak} daily peak; "
                "serve from the fallback model")))
        decision = decide(policy, obs.account_id, assessment, now=self._clock.now(),
                          degraded=ip.degraded or link.degraded,
                          route_to_fallback=fallback, cluster=cluster,
                          model_version=model_version,
                          account_label=self.labels.account(obs.account_id),
                          cluster_label=cluster_label)
        self._store.save_decision(obs.account_id, decision)
        fp = obs.fingerprint
        ctx = obs.context
        self._events.append(ScoredEvent(
            event_time=t,
            account_id=obs.account_id,
            api_key_id=obs.api_key_id,
            org_id=obs.org_id,
            ip_hash=ip_hash,
            prefix_hash=prefix_key,
            asn=ip.asn,
            country=ip.country,
            anonymized=ip.anonymized,
            hosting=ip.is_hosting,
            proxy=ip.is_public_proxy or ip.is_residential_proxy or ip.is_vpn,
            tor=ip.is_tor,
            device_key=device.device_key,
            stack_key=device.stack_key,
            ja4_hash=self._ja4_hash(fp.ja4) if fp.ja4 else "",
            client_kind=device.client_kind.value,
            ua_family=device.ua_family,
            os_family=device.os_family,
            sdk_name=fp.sdk_name,
            endpoint=ctx.endpoint,
            model=ctx.model,
            task=int(ctx.task),
            input_tokens=ctx.input_tokens,
            output_tokens=ctx.output_tokens,
            content_signature=ctx.content_signature,
            account_created_at=obs.account_created_at,
            risk_score=decision.risk_score,
            action=int(decision.action),
            policy_action=int(decision.policy_action),
            reasons=tuple(r.code for r in decision.reasons),
            policy_version=decision.policy_version,
        ))
        return decision

    def account(self, account_id: str) -> tuple[AccountSummary, Decision | None]:
        summary = self._store.account_summary(account_id, self._clock.now())
        if summary is None:
            raise NotFound(f"account {account_id!r} has no live profile")
        return summary, self._store.last_decision(account_id)

    def submit_label(self, label: Label) -> None:
        """Store a label durably, then let it change decisions."""
        if label.target is LabelTarget.CLUSTER and (
                self.clusters is None or self.clusters.model is None
                or label.target_id not in self.clusters.model.clusters):
            raise NotFound(f"cluster {label.target_id!r} is not in the current model")
        if self._label_store is not None:
            self._label_store.add(label)
        self.labels.add(label)

    def save_state(self) -> None:
        """Persist small engine state (the volume guard) through the store."""
        self._store.save_meta(_VOLUME_META, self.volume.to_json())
