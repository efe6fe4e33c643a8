"""What a cluster of accounts looks like as a whole, and how risky that is.

Signals (each in [0, 1]) are measured over the members at refit time; the policy's
``[cluster]`` weights combine them by noisy-OR into the cluster's risk, as the account scorer
does for account signals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ringfence.service.core.model import Reason
from ringfence.service.core.policy import ClusterWeights
from ringfence.service.core.scoring import MIN_REASON_WEIGHT, ramp

F64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ClusterProfile:
    cluster_id: str
    size: int
    daily_volume: float  # the members' requests in the last 24 h, together
    baseline_daily_volume: float  # the mean active account's requests in 24 h
    median_member_volume: float
    new_account_share: float  # members younger than 7 days
    anonymized_share: float  # mean share of hosting/VPN/proxy/Tor requests
    device_diversity: float  # distinct devices / members (1 = everyone has their own)
    # members on a device that this cluster has (nearly) to itself and shares among several
    # members; a stack-only key (no client device id) counts ``stack_only_factor`` of a member
    shared_device_share: float
    # members tied to others by prompt templates the cluster has (nearly) to itself, in a
    # group of at least TEMPLATE_GROUP_MIN accounts (see _template_linked_share)
    shared_signature_share: float
    timing_sync: float  # mean similarity of members' hour-of-day rhythm to the cluster's
    timing_regularity: float  # mean machine-regularity of members' request gaps
    mean_probability: float
    fitted_at: float
    lineage: tuple[str, ...] = ()  # earlier cluster ids this one continues or merged
    # members registered within CREATED_TOGETHER_S of at least two other members
    created_together_share: float = 0.0
    # the largest share of members behind one address or /24 (an office's NAT: ~1); 1 when
    # the addresses were not measured
    network_concentration: float = 1.0

    @property
    def low_frequency_high_volume(self) -> bool:
        """The seeds' rule: each member no busier than the average account, the cluster
        together more than three times the average."""
        return (self.median_member_volume <= max(self.baseline_daily_volume, 1.0)
                and self.daily_volume > 3 * max(self.baseline_daily_volume, 1.0))


def _shared_device_share(members: npt.NDArray[np.intp],
                        device_tokens: list[npt.NDArray[np.uint64]],
                        stack_only: list[npt.NDArray[np.bool_]],
                        global_df: Callable[[npt.NDArray[np.uint64]], npt.NDArray[np.int64]],
                        stack_only_factor: float) -> float:
    per_member = [device_tokens[i] for i in members]
    flat = np.concatenate(per_member) if per_member else np.zeros(0, np.uint64)
    if not len(flat):
        return 0.0
    values, counts = np.unique(flat, return_counts=True)
    exclusive = values[(counts >= 2) & (counts >= 0.5 * global_df(values))]
    # one np.isin for all members (one per member cost 5 s for a 50k-member cluster)
    owner = np.repeat(np.arange(len(members)), [len(t) for t in per_member])
    hit = np.isin(flat, exclusive)
    device_hit = hit & ~np.concatenate([stack_only[i] for i in members])
    any_hit = np.bincount(owner[hit], minlength=len(members)) > 0
    full = np.bincount(owner[device_hit], minlength=len(members)) > 0
    score = float(full.sum()) + stack_only_factor * float((any_hit & ~full).sum())
    return score / len(members)


# Sign-ups this close together, three or more, are one batch (a fleet registers its accounts
# in bursts); only accounts younger than CREATED_TOGETHER_MAX_DAYS are compared.
CREATED_TOGETHER_S = 600.0
CREATED_TOGETHER_MAX_DAYS = 30.0


def _created_together_share(age_days: F64Array) -> float:
    """Share of members registered within ``CREATED_TOGETHER_S`` of two other members. The
    registration time is the request's ``account_created_at`` (or, without it, the account's
    first request: replaying logs without creation times from the start of a deployment would
    make everyone look registered together, so send it)."""
    young = np.sort(age_days[age_days < CREATED_TOGETHER_MAX_DAYS] * 86400.0)
    if len(young) < 3 or not len(age_days):
        return 0.0
    # for each account, how many accounts lie within the window on either side
    lo = np.searchsorted(young, young - CREATED_TOGETHER_S, side="left")
    hi = np.searchsorted(young, young + CREATED_TOGETHER_S, side="right")
    return float(np.sum(hi - lo - 1 >= 2)) / len(age_days)


def _network_concentration(members: npt.NDArray[np.intp],
                           network_tokens: list[npt.NDArray[np.uint64]]) -> float:
    """The largest share of members that used one address or /24 (tokens of either kind)."""
    per_member = [np.unique(network_tokens[i]) for i in members]
    flat = np.concatenate(per_member) if per_member else np.zeros(0, np.uint64)
    if not len(flat):
        return 0.0
    return float(np.unique(flat, return_counts=True)[1].max()) / len(members)


# Members linked through shared templates count once their group has this many accounts: a
# company's few backends share their own templates, a fleet's templates tie dozens together.
TEMPLATE_GROUP_MIN = 5


def _template_linked_share(sigs: list[npt.NDArray[np.uint64]],
                           global_df: Callable[[npt.NDArray[np.uint64]], npt.NDArray[np.int64]]
                           ) -> float:
    """Share of members tied together by prompt templates into a group of at least
    ``TEMPLATE_GROUP_MIN`` accounts. Two members are tied when they send a template that the
    cluster (nearly) has to itself — at least half of all the accounts sending it are members
    (a popular app's prompt is sent mostly elsewhere). Ties through different templates chain:
    a fleet's accounts each send a few of its many templates in their first hours, so few
    templates have three senders yet, but the ties already span the fleet."""
    n = len(sigs)
    owner = np.repeat(np.arange(n), [len(s) for s in sigs])
    flat = np.concatenate(sigs)
    values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    tying = (counts >= 2) & (counts >= 0.5 * global_df(values))
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first: dict[int, int] = {}
    for member, value in zip(owner.tolist(), inverse.tolist(), strict=True):
        if tying[value]:
            other = first.setdefault(value, member)
            a, b = find(member), find(other)
            if a != b:
                parent[a] = b
    roots = [find(i) for i in range(n)]
    tied = {i for i in range(n) if tying[inverse[owner == i]].any()}
    sizes = Counter(roots[i] for i in tied)
    return sum(1 for i in tied if sizes[roots[i]] >= TEMPLATE_GROUP_MIN) / n


def profile_cluster(cluster_id: str, members: npt.NDArray[np.intp], *,
                    device_tokens: list[npt.NDArray[np.uint64]],
                    stack_only: list[npt.NDArray[np.bool_]],
                    global_df: Callable[[npt.NDArray[np.uint64]], npt.NDArray[np.int64]],
                    stack_only_factor: float,
                    signature_tokens: list[npt.NDArray[np.uint64]], hours: F64Array,
                    daily_volume: F64Array, anonymized: F64Array, age_days: F64Array,
                    regularity: F64Array, probabilities: F64Array, fitted_at: float,
                    lineage: tuple[str, ...], registered_age_days: F64Array | None = None,
                    network_tokens: list[npt.NDArray[np.uint64]] | None = None
                    ) -> ClusterProfile:
    """Measure one cluster from per-account arrays indexed by ``members``.
    ``registered_age_days`` is ``age_days`` with accounts whose creation time the gateway did
    not send set to infinity (sign-up batches are looked for among the others only).
    ``network_tokens`` are each account's address and /24 tokens; without them the members
    count as behind one network (a sign-up batch then needs other evidence, see
    ``assess_cluster``)."""
    size = len(members)
    devices = np.unique(np.concatenate([device_tokens[i] for i in members] or [[]]))
    sigs = [np.unique(signature_tokens[i]) for i in members]
    flat = np.concatenate(sigs) if sigs else np.zeros(0, np.uint64)
    shared_sig = _template_linked_share(sigs, global_df) if len(flat) else 0.0
    h = hours[members]
    norms = np.linalg.norm(h, axis=1)
    mean = h.sum(axis=0)
    sync = 0.0
    if np.linalg.norm(mean) > 0:
        unit = mean / np.linalg.norm(mean)
        active = norms > 0
        if active.any():
            sync = float(np.mean((h[active] @ unit) / norms[active]))
    return ClusterProfile(
        cluster_id=cluster_id,
        size=size,
        daily_volume=float(daily_volume[members].sum()),
        baseline_daily_volume=float(daily_volume.mean()) if len(daily_volume) else 0.0,
        median_member_volume=float(np.median(daily_volume[members])),
        new_account_share=float(np.mean(age_days[members] < 7)),
        anonymized_share=float(anonymized[members].mean()),
        device_diversity=min(1.0, len(devices) / size),
        shared_device_share=_shared_device_share(members, device_tokens, stack_only, global_df,
                                                 stack_only_factor),
        shared_signature_share=shared_sig,
        timing_sync=sync,
        timing_regularity=float(regularity[members].mean()),
        mean_probability=float(probabilities[members].mean()),
        fitted_at=fitted_at,
        lineage=lineage,
        created_together_share=_created_together_share(
            (registered_age_days if registered_age_days is not None else age_days)[members]),
        network_concentration=(_network_concentration(members, network_tokens)
                               if network_tokens is not None else 1.0),
    )


@dataclass(frozen=True, slots=True)
class ClusterAssessment:
    risk: float
    reasons: tuple[Reason, ...]


def assess_cluster(w: ClusterWeights, c: ClusterProfile) -> ClusterAssessment:
    """The cluster's risk in [0, 1] with its reasons, strongest first."""
    found: list[Reason] = []

    def add(code: str, weight: float, strength: float, message: str) -> None:
        if weight * strength >= MIN_REASON_WEIGHT:
            found.append(Reason(code, round(weight * strength, 4), message))

    shared_devices = ramp(c.shared_device_share, 0.3, 0.9)
    shared_templates = ramp(c.shared_signature_share, 0.2, 0.8)
    anonymized = ramp(c.anonymized_share, 0.2, 0.8)
    synchronized = ramp(c.timing_sync, 0.8, 0.98) * ramp(c.timing_regularity, 0.5, 0.75)
    add("CLUSTER_SHARED_DEVICES", w.shared_devices, shared_devices,
        f"{c.shared_device_share:.0%} of {c.size} accounts share devices used almost only "
        f"inside this cluster ({max(1, round(c.device_diversity * c.size))} devices in all)")
    add("CLUSTER_SHARED_TEMPLATES", w.shared_templates, shared_templates,
        f"{c.shared_signature_share:.0%} of members send the same prompt templates")
    add("CLUSTER_ANONYMIZED", w.anonymized, anonymized,
        f"{c.anonymized_share:.0%} of the cluster's requests come through hosting, VPN, "
        "proxies or Tor")
    add("CLUSTER_NEW_ACCOUNTS", w.new_accounts, ramp(c.new_account_share, 0.3, 0.9),
        f"{c.new_account_share:.0%} of members are less than 7 days old")
    # A sign-up batch is fleet evidence when its cluster is spread over many networks (a
    # fleet registers and works through its exits) or shows something else a company does
    # not: shared devices or templates, anonymizers, one machine clock. A company that
    # onboards its staff in one go (SSO) has them behind its own network (an office's NAT).
    # Profiles of models saved before the concentration was measured count as one network.
    one_network = ramp(getattr(c, "network_concentration", 1.0), 0.5, 0.8)
    batch_evidence = max(1 - one_network, shared_devices, shared_templates, anonymized,
                         synchronized)
    add("CLUSTER_CREATED_TOGETHER", w.created_together,
        ramp(c.created_together_share, 0.2, 0.6) * batch_evidence,
        f"{c.created_together_share:.0%} of members were registered in batches (three or more "
        f"within {CREATED_TOGETHER_S / 60:.0f} minutes)")
    add("CLUSTER_SYNCHRONIZED", w.synchronized, synchronized,
        f"members keep the same clock (rhythm similarity {c.timing_sync:.2f}, "
        f"regularity {c.timing_regularity:.2f})")
    # Any group of ordinary users (an office, a campus, the customers of one VPN) is "light
    # each, heavy together"; the seeds' rule counts only as far as the cluster also shows
    # coordination — shared devices, shared templates or one clock. Sharing anonymizers is
    # not coordination: whole VPN customer bases do.
    coordination = max(shared_devices, shared_templates, synchronized)
    if c.low_frequency_high_volume and coordination > 0:
        ratio = c.daily_volume / max(c.baseline_daily_volume, 1.0)
        add("CLUSTER_LOW_FREQUENCY_HIGH_VOLUME", w.low_frequency_high_volume,
            ramp(ratio, 3, 30) * coordination,
            f"members look light ({c.median_member_volume:.0f}/day each) but together send "
            f"{c.daily_volume:.0f}/day, {ratio:.0f}× the average account")
    keep = 1.0
    for r in found:
        keep *= 1 - r.weight
    found.sort(key=lambda r: (-r.weight, r.code))
    return ClusterAssessment(round(1 - keep, 6), tuple(found))
