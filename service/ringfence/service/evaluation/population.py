"""The honest population: browser and phone users, company NATs, developers on SDKs, company
backends on clouds, VPN users and heavy users, each with a realistic rhythm and volume.

Shared-address groups (a company NAT, a carrier's CGNAT, a VPN provider, a backend's cloud
NAT) are tagged in ``group`` so the report can show the worst-hit honest group."""

from __future__ import annotations

import random
from collections.abc import Iterator

from ringfence.service.evaluation.catalog import (
    BACKEND_DIURNAL,
    BROWSERS,
    COUNTRIES,
    DESKTOP_BROWSERS,
    HUMAN_DIURNAL,
    MOBILE_BROWSERS,
    SDK_STACKS,
    TASKS_BACKEND,
    TASKS_CHAT_HEAVY,
    TASKS_DEVELOPER,
    Browser,
    ClientStack,
)
from ringfence.service.evaluation.networks import VPN_EXIT_COUNTRIES, VPN_PROVIDERS, AddressPlan
from ringfence.service.evaluation.scenario import ScenarioConfig
from ringfence.service.evaluation.timing import DAY, Rhythm, Sessions, Steady
from ringfence.service.evaluation.traffic import (
    Account,
    HomeAddress,
    Json,
    MobileAddress,
    Picker,
    Place,
    PoolAddress,
    Tags,
    VpnAddress,
    Workload,
    browser_fingerprint,
    hex_id,
    stack_fingerprint,
)

_COUNTRY = Picker([(c, c.share) for c in COUNTRIES])
_DESKTOP = Picker([(b, b.share) for b in DESKTOP_BROWSERS])
_PHONE = Picker([(b, b.share) for b in MOBILE_BROWSERS])
_ANY_BROWSER = Picker([(b, b.share) for b in BROWSERS])
_SDK = Picker([(s, s.share) for s in SDK_STACKS])
# Managed company fleets: mostly Chrome and Edge on Windows, Macs for some teams.
_COMPANY_BROWSER = Picker([(b, w) for b in DESKTOP_BROWSERS for name, w in (
    ("chrome-windows", 0.45), ("edge-windows", 0.25), ("chrome-mac", 0.15),
    ("safari-mac", 0.08), ("firefox-windows", 0.04), ("chrome-linux", 0.03)) if b.name == name])


class _Builder:
    """Creates the honest accounts in a fixed order from one RNG (so seeds reproduce)."""

    def __init__(self, config: ScenarioConfig, plan: AddressPlan, rng: random.Random) -> None:
        self.config = config
        self.plan = plan
        self.rng = rng

    # Identity and rhythm --------------------------------------------------------------
    def _account(self, *, segment: str, group: str, org_id: str, timing: Sessions | Steady,
                 places: list[tuple[Place, float]], workload: Workload) -> Account:
        rng, cfg = self.rng, self.config
        if rng.random() < cfg.benign.new_account_share:
            # A sign-up during the simulation: first request minutes after registering.
            created = cfg.start + rng.random() * (cfg.end - cfg.start)
            first = created + rng.uniform(60, 3600)
        else:
            created = cfg.start - rng.uniform(1, 730) * DAY
            first = cfg.start
        return Account(account_id=hex_id(rng, "acct_"), api_key_id=hex_id(rng, "key_", 48),
                       org_id=org_id, created_at=created, first=first, timing=timing,
                       places=places, workload=workload,
                       tags=Tags("benign", "", group, segment))

    def _sessions(self, per_day_median: float, sigma: float, size: float, gap_s: float,
                  weekend: float, utc_offset_h: float) -> Sessions:
        rate = per_day_median * self.rng.lognormvariate(0, sigma)
        return Sessions(rate, size, gap_s, Rhythm.of(HUMAN_DIURNAL, weekend, utc_offset_h))

    def _browser(self, browser: Browser, language: str, *, device_id: bool = True) -> Json:
        rng = self.rng
        return browser_fingerprint(browser, rng.choice(browser.versions), language,
                                   hex_id(rng, "dev_") if device_id else "")

    def _stack(self, stack: ClientStack) -> Json:
        return stack_fingerprint(stack, self.rng.choice(stack.versions))

    def _home(self, country: str) -> HomeAddress:
        return HomeAddress(self.plan, country, self.rng, ipv6=self.rng.random() < 0.2)

    def _phone(self, country: str) -> tuple[MobileAddress, str]:
        carrier = self.plan.carrier(self.rng, country)
        v6 = self.rng.random() < 0.35
        return MobileAddress(carrier, self.rng, v6), "" if v6 else f"cgnat-{carrier.index}"

    # Populations ----------------------------------------------------------------------
    def browsers(self, n: int) -> Iterator[Account]:
        rng = self.rng
        for _ in range(n):
            c = _COUNTRY.pick(rng)
            # One in ten blocks web storage: no device id, only the browser's stack.
            home = Place(self._home(c.code), self._browser(
                _DESKTOP.pick(rng), c.accept_language, device_id=rng.random() > 0.1))
            places = [(home, 1.0)]
            if rng.random() < 0.25:  # also uses the web app on a phone now and then
                addressing, _ = self._phone(c.code)
                places.append((Place(addressing, self._browser(
                    _PHONE.pick(rng), c.accept_language)), 0.25))
            yield self._account(
                segment="browser", group="", org_id="",
                timing=self._sessions(1.2, 0.8, 4, 75, 0.9, c.utc_offset_h), places=places,
                workload=Workload(TASKS_CHAT_HEAVY, signed_share=0.6))

    def phones(self, n: int) -> Iterator[Account]:
        rng = self.rng
        for _ in range(n):
            c = _COUNTRY.pick(rng)
            addressing, group = self._phone(c.code)
            yield self._account(
                segment="mobile", group=group, org_id="",
                timing=self._sessions(1.5, 0.8, 3, 60, 1.0, c.utc_offset_h),
                places=[(Place(addressing, self._browser(_PHONE.pick(rng), c.accept_language)),
                         1.0)],
                workload=Workload(TASKS_CHAT_HEAVY, signed_share=0.6))

    def companies(self, n: int) -> Iterator[Account]:
        """Companies of 5..400 seats (heavy-tailed sizes) until ``n`` seats are filled."""
        rng = self.rng
        made, k = 0, 0
        while made < n:
            size = min(n - made, 400, int(5 * rng.paretovariate(1.1)))
            c = _COUNTRY.pick(rng)
            prefix = self.plan.company_prefix(c.code)
            egress = [f"{prefix >> 24}.{(prefix >> 16) & 255}.{(prefix >> 8) & 255}.{h}"
                      for h in rng.sample(range(1, 255), rng.randint(1, 4))]
            nat = PoolAddress(egress)
            org = hex_id(rng, "org_", 48)
            group = f"nat-{k}"
            forwards = rng.random() < 0.4  # the company proxy adds X-Forwarded-For
            for _ in range(size):
                if rng.random() < 0.2:  # engineers calling the API from their laptops
                    fp = self._stack(_SDK.pick(rng))
                else:
                    fp = self._browser(_COMPANY_BROWSER.pick(rng), c.accept_language)
                inner = (f"172.{16 + rng.randrange(16)}.{rng.randrange(256)}."
                         f"{rng.randrange(1, 255)}",) if forwards else ()
                yield self._account(
                    segment="enterprise", group=group, org_id=org,
                    timing=self._sessions(2.0, 0.7, 5, 60, 0.2, c.utc_offset_h),
                    places=[(Place(nat, fp, inner), 1.0)],
                    workload=Workload(TASKS_DEVELOPER, signed_share=0.6))
            made += size
            k += 1

    def developers(self, n: int) -> Iterator[Account]:
        rng = self.rng
        for _ in range(n):
            c = _COUNTRY.pick(rng)
            if rng.random() < 0.3:  # works from a cloud VM
                prefix = self.plan.cloud_prefix(rng)
                addressing: HomeAddress | PoolAddress = PoolAddress(
                    [f"{prefix >> 24}.{(prefix >> 16) & 255}.{(prefix >> 8) & 255}."
                     f"{rng.randrange(1, 255)}"])
            else:
                addressing = self._home(c.code)
            own = [rng.getrandbits(64) | 1 for _ in range(3)]
            yield self._account(
                segment="developer", group="", org_id="",
                timing=self._sessions(1.0, 1.0, 12, 8, 0.6, c.utc_offset_h),
                places=[(Place(addressing, self._stack(_SDK.pick(rng))), 1.0)],
                workload=Workload(TASKS_DEVELOPER, templates=own, templated_share=0.3))

    def backends(self, n: int) -> Iterator[Account]:
        """Companies' production systems: 1..4 accounts each behind a cloud NAT gateway."""
        rng = self.rng
        made, k = 0, 0
        while made < n:
            size = min(n - made, rng.randint(1, 4))
            c = _COUNTRY.pick(rng)
            prefix = self.plan.cloud_prefix(rng)
            nat = PoolAddress([f"{prefix >> 24}.{(prefix >> 16) & 255}.{(prefix >> 8) & 255}."
                               f"{h}" for h in rng.sample(range(1, 255), rng.randint(1, 3))])
            fp = self._stack(_SDK.pick(rng))
            org = hex_id(rng, "org_", 48)
            templates = [rng.getrandbits(64) | 1 for _ in range(6)]
            rhythm = Rhythm.of(BACKEND_DIURNAL, 0.8, c.utc_offset_h)
            for _ in range(size):
                yield self._account(
                    segment="backend", group=f"cloud-{k}", org_id=org,
                    timing=Steady(150 * rng.lognormvariate(0, 0.8), rhythm),
                    places=[(Place(nat, fp), 1.0)],
                    workload=Workload(TASKS_BACKEND, templates=templates,
                                      templated_share=0.85, signed_share=0.9))
            made += size
            k += 1

    def vpn_users(self, n: int) -> Iterator[Account]:
        rng = self.rng
        for _ in range(n):
            c = _COUNTRY.pick(rng)
            provider = rng.randrange(len(VPN_PROVIDERS))
            home = c.code if c.code in VPN_EXIT_COUNTRIES else "US"
            yield self._account(
                segment="vpn", group=f"vpn-{provider}", org_id="",
                timing=self._sessions(1.2, 0.8, 4, 75, 0.9, c.utc_offset_h),
                places=[(Place(VpnAddress(provider, home, VPN_EXIT_COUNTRIES),
                               self._browser(_ANY_BROWSER.pick(rng), c.accept_language)), 1.0)],
                workload=Workload(TASKS_CHAT_HEAVY, signed_share=0.6))

    def heavy_users(self, n: int) -> Iterator[Account]:
        """Power users in the browser, and agentic coding tools driving an SDK in long,
        fast sessions (the honest accounts most likely to look like automation)."""
        rng = self.rng
        for _ in range(n):
            c = _COUNTRY.pick(rng)
            if rng.random() < 0.5:
                # An agent makes a request per tool call: long sessions, seconds apart.
                place = Place(self._home(c.code), self._stack(_SDK.pick(rng)))
                timing = self._sessions(5, 0.6, 80, 5, 0.7, c.utc_offset_h)
                workload = Workload(TASKS_DEVELOPER, signed_share=0.8)
            else:
                place = Place(self._home(c.code), self._browser(_DESKTOP.pick(rng),
                                                                 c.accept_language))
                timing = self._sessions(8, 0.6, 20, 40, 0.8, c.utc_offset_h)
                workload = Workload(TASKS_CHAT_HEAVY, signed_share=0.6)
            yield self._account(segment="heavy", group="", org_id="", timing=timing,
                                places=[(place, 1.0)], workload=workload)


def benign_accounts(config: ScenarioConfig, plan: AddressPlan,
                    rng: random.Random) -> list[Account]:
    """Every honest account of the scenario (O(accounts) memory, no events yet)."""
    b = _Builder(config, plan, rng)
    mix = config.benign
    return [*b.browsers(mix.browser), *b.phones(mix.mobile), *b.companies(mix.enterprise),
            *b.developers(mix.developer), *b.backends(mix.backend), *b.vpn_users(mix.vpn),
            *b.heavy_users(mix.heavy)]


def mobile_users(config: ScenarioConfig) -> float:
    """Expected accounts on carrier networks (sizes the CGNAT pools)."""
    return config.benign.mobile + 0.25 * config.benign.browser
