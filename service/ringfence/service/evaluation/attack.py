"""Fleet accounts shaped like the incident: ~26 extraction queries per account per day, IP
rotation through residential proxies or a cloud pool, a small device/stack pool or per-account
randomized fingerprints, steady or synchronized timing, templated prompts, camouflage, churn
(dropped accounts replaced by fresh ones) and accounts registered in bursts."""

from __future__ import annotations

import math
import random

from ringfence.service.evaluation.catalog import (
    BROWSERS,
    COUNTRIES,
    HUMAN_DIURNAL,
    MOBILE_BROWSERS,
    SCRIPT_STACKS,
    SDK_STACKS,
    TASKS_CHAT_HEAVY,
    TASKS_EXTRACTION,
)
from ringfence.service.evaluation.networks import CLOUDS, AddressPlan
from ringfence.service.evaluation.scenario import CampaignSpec, ScenarioConfig
from ringfence.service.evaluation.timing import DAY, FLAT, HOUR, Rhythm, Steady, Timing, Waves
from ringfence.service.evaluation.traffic import (
    Addressing,
    Json,
    Picker,
    PoolAddress,
    ProxyRotating,
    ProxySticky,
    Tags,
    Workload,
    browser_fingerprint,
    hex_id,
    request_json,
    rfc3339,
    stack_fingerprint,
)

_COUNTRY = Picker([(c, c.share) for c in COUNTRIES])
_ANY_BROWSER = Picker([(b, b.share) for b in BROWSERS])
_LANGUAGES = [c.accept_language for c in COUNTRIES]


class Campaign:
    """What a fleet's accounts share: templates, device or address pools, the wave grid and
    the sign-up schedule."""

    def __init__(self, spec: CampaignSpec, config: ScenarioConfig, plan: AddressPlan,
                 rng: random.Random) -> None:
        self.spec = spec
        self.plan = plan
        self.start = config.start + spec.start_h * HOUR
        self.tags = Tags("attack", spec.id, "", spec.id)
        self.templates = [rng.getrandbits(64) | 1 for _ in range(spec.templates)]
        self.extraction = Workload(TASKS_EXTRACTION, templates=self.templates,
                                   templated_share=spec.templated_share, signed_share=0.9,
                                   out_scale=2.5)
        self.camouflage = Workload(TASKS_CHAT_HEAVY, signed_share=0.6)
        self.wave_phase = rng.uniform(0, spec.wave_period_s)
        self.burst_hour = rng.uniform(0, 24)
        self.signups = 0
        pool_size = max(2, round(spec.accounts / spec.accounts_per_device))
        self.pool: list[Json] = []
        if spec.device_mode == "device_pool":
            # Emulated phones: each device id is one emulator image serving many accounts.
            for _ in range(pool_size):
                b = MOBILE_BROWSERS[rng.randrange(len(MOBILE_BROWSERS))]
                self.pool.append(browser_fingerprint(b, rng.choice(b.versions),
                                                     rng.choice(_LANGUAGES),
                                                     hex_id(rng, "dev_")))
        elif spec.device_mode == "script_pool":
            for _ in range(pool_size):
                s = SCRIPT_STACKS[rng.randrange(len(SCRIPT_STACKS))]
                fp = stack_fingerprint(s, rng.choice(s.versions))
                fp["acceptLanguage"] = rng.choice(_LANGUAGES)
                self.pool.append(fp)
        elif spec.device_mode == "sdk_stack":
            sdk = next(s for s in SDK_STACKS if s.sdk_name == "openai-python")
            self.pool = [stack_fingerprint(sdk, v) for v in sdk.versions]
        self.addresses: list[str] = []
        if spec.ip_mode == "hosting_pool":
            prefixes = [plan.cloud_prefix(rng, rng.randrange(len(CLOUDS) - 1)) for _ in
                        range(max(1, round(spec.accounts / spec.accounts_per_prefix)))]
            n_ips = max(len(prefixes), round(spec.accounts / spec.accounts_per_ip))
            for i in range(n_ips):
                p = prefixes[i % len(prefixes)]
                self.addresses.append(
                    f"{p >> 24}.{(p >> 16) & 255}.{(p >> 8) & 255}.{rng.randrange(1, 255)}")

    def created_at(self, slot: int, t: float | None) -> float:
        """Sign-up time: the initial fleet in bursts before the start; replacements in the
        daily burst before they take over."""
        spec = self.spec
        if t is None:
            bursts = math.ceil(spec.accounts / spec.burst_size)
            lead = spec.created_lead_h * HOUR
            burst = slot // spec.burst_size
            # Never after the start: the first request may come right at it.
            return min(self.start - 60,
                       self.start - lead + burst * lead / bursts + (slot % spec.burst_size) * 4)
        day = math.floor((t - 1800 - self.burst_hour * HOUR) / DAY)
        self.signups += 1
        return day * DAY + self.burst_hour * HOUR + (self.signups % spec.burst_size) * 4


class FleetSlot:
    """One seat of a fleet; when its account churns, a fresh account takes the seat."""

    __slots__ = ("account_id", "addressing", "api_key_id", "campaign", "created", "ends",
                 "fingerprint", "slot", "timing")

    def __init__(self, campaign: Campaign, slot: int, rng: random.Random) -> None:
        self.campaign = campaign
        self.slot = slot
        self._new_account(rng, None)

    def _new_account(self, rng: random.Random, t: float | None) -> None:
        c = self.campaign
        spec = c.spec
        country = _COUNTRY.pick(rng)
        self.account_id = hex_id(rng, "acct_")
        self.api_key_id = hex_id(rng, "key_", 48)
        created = c.created_at(self.slot, t)
        self.created = rfc3339(int(created) * 1000)
        start = t if t is not None else c.start
        self.ends = (start + rng.expovariate(spec.churn_per_day / DAY)
                     if spec.churn_per_day > 0 else math.inf)
        countries = [country.code] if spec.geo_pinned else [x.code for x in COUNTRIES]
        self.addressing: Addressing
        if spec.ip_mode == "hosting_pool":
            self.addressing = PoolAddress(c.addresses)
        elif spec.ip_mode == "resi_sticky":
            self.addressing = ProxySticky(c.plan, countries[0] if spec.geo_pinned
                                          else rng.choice(countries))
        else:
            self.addressing = ProxyRotating(c.plan, countries)
        if spec.device_mode == "randomized":
            b = _ANY_BROWSER.pick(rng)
            self.fingerprint = browser_fingerprint(b, rng.choice(b.versions),
                                                   country.accept_language, hex_id(rng, "dev_"))
        else:
            self.fingerprint = c.pool[rng.randrange(len(c.pool))]
        rhythm = (Rhythm.of(HUMAN_DIURNAL, 1.0, country.utc_offset_h)
                  if spec.diurnal_camouflage else FLAT)
        self.timing: Timing = (
            Waves(spec.queries_per_day, spec.wave_period_s, spec.wave_jitter_s, c.wave_phase,
                  rhythm) if spec.timing == "waves" else Steady(spec.queries_per_day, rhythm))

    def first_time(self, rng: random.Random) -> float:
        c = self.campaign
        return self.timing.next_time(c.start + rng.random() * c.spec.ramp_h * HOUR, rng)[0]

    def next_time(self, t: float, rng: random.Random) -> float:
        nt = self.timing.next_time(t, rng)[0]
        if nt >= self.ends:
            self._new_account(rng, nt)
        return nt

    def event(self, t: float, rng: random.Random) -> Json:
        c = self.campaign
        camouflaged = rng.random() < c.spec.camouflage_share
        workload = c.camouflage if camouflaged else c.extraction
        return request_json(
            account_id=self.account_id, api_key_id=self.api_key_id, org_id="",
            ip=self.addressing.ip(t, False, rng), forwarded_for=(),
            fingerprint=self.fingerprint, context=workload.context(int(t * 1000), rng),
            created=self.created, tags=c.tags)


def fleet_slots(config: ScenarioConfig, plan: AddressPlan,
                rng: random.Random) -> list[FleetSlot]:
    slots: list[FleetSlot] = []
    for spec in config.campaigns:
        campaign = Campaign(spec, config, plan, rng)
        slots.extend(FleetSlot(campaign, i, rng) for i in range(spec.accounts))
    return slots
