"""What a simulation generates: the benign population, the attack campaigns, how long, from
when, with which seed. Two presets: ``ci`` (minutes of CPU, runs in the test suite) and
``incident`` (the whole incident: 25,000 fleet accounts, ~28.8M fleet queries, 45 days);
``scaled`` shrinks or grows either one."""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field, replace
from typing import Literal

INCIDENT_START = float(calendar.timegm((2026, 4, 22, 0, 0, 0)))  # Apr 22 2026, 00:00 UTC

IpMode = Literal["resi_rotating", "resi_sticky", "hosting_pool"]
DeviceMode = Literal["sdk_stack", "script_pool", "device_pool", "randomized"]
TimingMode = Literal["steady", "waves"]


@dataclass(frozen=True, slots=True)
class BenignMix:
    """How many honest accounts of each kind (the ``segment`` of their events)."""

    browser: int = 420
    """Web-app users on home broadband (device id from the web app), some also on a phone."""
    mobile: int = 200
    """Phone users behind carrier CGNAT (some on IPv6)."""
    enterprise: int = 150
    """Employees behind their company's NAT: many accounts on one /24, diverse devices."""
    developer: int = 120
    """SDK and script users (common library TLS stacks), from home or a cloud VM."""
    backend: int = 20
    """Company backends on a cloud (hosting ASN): steady, high volume, a few NAT IPs."""
    vpn: int = 40
    """Privacy-VPN users: shared exits, sometimes in another country."""
    heavy: int = 20
    """Power users and agentic coding tools: volume far above average."""
    new_account_share: float = 0.03
    """Share of honest accounts created during the simulation (sign-ups)."""

    @property
    def total(self) -> int:
        return (self.browser + self.mobile + self.enterprise + self.developer + self.backend
                + self.vpn + self.heavy)

    def scaled(self, factor: float) -> BenignMix:
        def n(x: int) -> int:
            return max(1, round(x * factor)) if x else 0
        return replace(self, browser=n(self.browser), mobile=n(self.mobile),
                       enterprise=n(self.enterprise), developer=n(self.developer),
                       backend=n(self.backend), vpn=n(self.vpn), heavy=n(self.heavy))


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    """One operator's fleet. Accounts are slots: a churned account is replaced by a fresh one
    in the same slot, so ``accounts`` is the fleet size at any moment."""

    id: str
    accounts: int
    queries_per_day: float = 25.6
    start_h: float = 0.0
    """Hours after the simulation start when the first account sends."""
    ramp_h: float = 1.0
    """Accounts begin uniformly over this many hours after ``start_h``."""
    ip_mode: IpMode = "resi_rotating"
    geo_pinned: bool = True
    """Proxy exits in one country per account (as proxy providers let you target)."""
    device_mode: DeviceMode = "sdk_stack"
    accounts_per_device: float = 90.0
    """Fleet accounts per device id or client stack in ``device_pool`` / ``script_pool``."""
    accounts_per_ip: float = 15.0
    """Fleet accounts per address in ``hosting_pool`` (the fleet owns its pool, so the pool
    grows with the fleet)."""
    accounts_per_prefix: float = 80.0
    """Fleet accounts per /24 in ``hosting_pool``."""
    timing: TimingMode = "steady"
    wave_period_s: float = 900.0
    wave_jitter_s: float = 30.0
    diurnal_camouflage: bool = False
    """Follow a fake human day (in the account's proxy country) instead of running 24/7."""
    camouflage_share: float = 0.1
    """Share of requests made to look ordinary (chat, short, unique prompts)."""
    templates: int = 40
    """Prompt templates the fleet reuses (shared content signatures)."""
    templated_share: float = 0.8
    """Share of the non-camouflage requests built from a template."""
    churn_per_day: float = 0.02
    """Chance per day that an account is dropped and replaced by a fresh one."""
    burst_size: int = 50
    """Accounts registered together in one sign-up burst."""
    created_lead_h: float = 36.0
    """The initial accounts are registered in bursts over this many hours before start."""


@dataclass(frozen=True, slots=True)
class ScenarioConfig:
    seed: int = 1
    start: float = INCIDENT_START
    days: float = 2.0
    benign: BenignMix = field(default_factory=BenignMix)
    campaigns: tuple[CampaignSpec, ...] = ()

    @property
    def end(self) -> float:
        return self.start + self.days * 86400

    @property
    def attack_accounts(self) -> int:
        return sum(c.accounts for c in self.campaigns)

    def scaled(self, factor: float) -> ScenarioConfig:
        """Every account count times ``factor``; densities of fleet-owned infrastructure
        (accounts per device, per address, per /24) stay the same."""
        if factor <= 0:
            raise ValueError("scale must be positive")
        return replace(self, benign=self.benign.scaled(factor), campaigns=tuple(
            replace(c, accounts=max(2, round(c.accounts * factor))) for c in self.campaigns))

    def with_days(self, days: float) -> ScenarioConfig:
        if days <= 0:
            raise ValueError("days must be positive")
        return replace(self, days=days)


def _campaigns(total: int, start_h: float, ramp_h: float,
               churn_per_day: float) -> tuple[CampaignSpec, ...]:
    """The incident's fleet as four tactics (shares of ``total``), each a campaign."""
    def n(share: float) -> int:
        return max(2, round(total * share))
    return tuple(replace(c, churn_per_day=churn_per_day) for c in (
        # SDK traffic through rotating residential proxies, load-balanced 24/7.
        CampaignSpec("resi-sdk", n(0.35), start_h=start_h, ramp_h=ramp_h,
                     ip_mode="resi_rotating", device_mode="sdk_stack", timing="steady",
                     camouflage_share=0.1, burst_size=100),
        # Scripts on a cloud address pool from a small set of client stacks, in waves.
        CampaignSpec("hosting-farm", n(0.2), start_h=start_h, ramp_h=ramp_h,
                     ip_mode="hosting_pool", accounts_per_ip=2.0, accounts_per_prefix=80.0,
                     device_mode="script_pool", accounts_per_device=400,
                     timing="waves", wave_period_s=600, wave_jitter_s=20,
                     camouflage_share=0.05, burst_size=200),
        # Emulated phones sharing a small pool of device ids, one proxy exit per day.
        CampaignSpec("emulator-farm", n(0.15), start_h=start_h, ramp_h=ramp_h,
                     ip_mode="resi_sticky", device_mode="device_pool", accounts_per_device=90,
                     timing="steady", camouflage_share=0.1, burst_size=50),
        # Per-account randomized browser fingerprints, one sticky exit per day, fake day
        # rhythm, more camouflage: nothing per-account stands out.
        CampaignSpec("stealth", n(0.3), start_h=start_h, ramp_h=ramp_h,
                     ip_mode="resi_sticky", device_mode="randomized", timing="waves",
                     wave_period_s=1200, wave_jitter_s=240, diurnal_camouflage=True,
                     camouflage_share=0.25, templated_share=0.6, burst_size=25,
                     created_lead_h=72),
    ))


def _ci() -> ScenarioConfig:
    # 36 h: 6 of honest traffic alone, then 30 of attack; ~30k events. Fewer of the costly
    # high-volume accounts than the default mix keeps the replay in CI budget; churn is
    # heavier than the incident's so that replacements show up within 30 hours.
    return ScenarioConfig(seed=7, days=1.5, benign=replace(BenignMix(), backend=12, heavy=12),
                          campaigns=_campaigns(240, start_h=6.0, ramp_h=1.0,
                                               churn_per_day=0.02))


def _incident() -> ScenarioConfig:
    # 46 days: one of benign traffic alone, then 45 of the campaign (25,000 slots x 25.6/day
    # x 45 days = 28.8M fleet queries), beside 48,500 honest accounts. The incident's
    # 1,152 queries per account mean accounts lived about the whole 45 days, so churn is
    # light: ~2,800 replacements, ~27,800 fleet accounts in all.
    return ScenarioConfig(seed=1, days=46.0, benign=BenignMix().scaled(50.0),
                          campaigns=_campaigns(25_000, start_h=24.0, ramp_h=48.0,
                                               churn_per_day=0.0025))


PRESETS = {"ci": _ci, "incident": _incident}


def preset(name: str) -> ScenarioConfig:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}") from None
