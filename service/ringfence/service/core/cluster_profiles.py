"""What a cluster of accounts looks like as a whole, and how risky that is.

Signals (each in [0, 1]) are measured over the members at refit time; the policy's
``[cluster]`` weights combine them by noisy-OR into the cluster's risk, as the account scorer
does for account signals.
"""

from __future__ import annotations

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
    shared_signature_share: float  # members sending a prompt template others send too
    timing_sync: float  # mean similarity of members' hour-of-day rhythm to the cluster's
    timing_regularity: float  # mean machine-regularity of members' request gaps
    mean_probability: float
    fitted_at: float
    lineage: tuple[str, ...] = ()  # earlier cluster ids this one continues or merged

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
    score = 0.0
    for i, tokens in zip(members, per_member, strict=True):
        hit = np.isin(tokens, exclusive)
        if hit.any():
            score += 1.0 if (hit & ~stack_only[i]).any() else stack_only_factor
    return score / len(members)


def profile_cluster(cluster_id: str, members: npt.NDArray[np.intp], *,
                    device_tokens: list[npt.NDArray[np.uint64]],
                    stack_only: list[npt.NDArray[np.bool_]],
                    global_df: Callable[[npt.NDArray[np.uint64]], npt.NDArray[np.int64]],
                    stack_only_factor: float,
                    signature_tokens: list[npt.NDArray[np.uint64]], hours: F64Array,
                    daily_volume: F64Array, anonymized: F64Array, age_days: F64Array,
                    regularity: F64Array, probabilities: F64Array, fitted_at: float,
                    lineage: tuple[str, ...]) -> ClusterProfile:
    """Measure one cluster from per-account arrays indexed by ``members``."""
    size = len(members)
    devices = np.unique(np.concatenate([device_tokens[i] for i in members] or [[]]))
    sigs = [np.unique(signature_tokens[i]) for i in members]
    flat = np.concatenate(sigs) if sigs else np.zeros(0, np.uint64)
    shared_sig = 0.0
    if len(flat):
        values, counts = np.unique(flat, return_counts=True)
        common = values[counts >= max(3, 0.1 * size)]
        shared_sig = float(np.mean([bool(np.isin(s, common).any()) for s in sigs]))
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
