"""Building blocks shared by honest and fleet accounts: where a request comes from (addressing),
what the client looks like (fingerprint), what it asks for (workload), and the event itself in
protobuf JSON form (camelCase keys, 64-bit integers as strings, enums by name)."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Protocol

from ringfence.service.evaluation.catalog import (
    DEFAULT_ENDPOINT,
    ENDPOINT_FOR_TASK,
    MODEL_FOR_TASK,
    Browser,
    ClientStack,
)
from ringfence.service.evaluation.networks import AddressPlan, Carrier, v4, v6
from ringfence.service.evaluation.timing import DAY, Timing

Json = dict[str, Any]


def rfc3339(ms: int) -> str:
    """Epoch milliseconds as protobuf's JSON Timestamp (what MessageToDict writes)."""
    seconds, frac = divmod(ms, 1000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{base}.{frac:03d}Z" if frac else f"{base}Z"


def hex_id(rng: random.Random, prefix: str, bits: int = 64) -> str:
    return f"{prefix}{rng.getrandbits(bits):0{bits // 4}x}"


class Picker:
    """Weighted choice with precomputed cumulative weights (``random.choices`` is slow when it
    has to add the weights up on every call)."""

    __slots__ = ("cum", "items")

    def __init__(self, weighted: Mapping[Any, float] | Sequence[tuple[Any, float]]) -> None:
        pairs = list(weighted.items()) if isinstance(weighted, Mapping) else list(weighted)
        self.items = [item for item, _ in pairs]
        self.cum = list(accumulate(weight for _, weight in pairs))

    def pick(self, rng: random.Random) -> Any:
        return rng.choices(self.items, cum_weights=self.cum)[0]


# Addressing -------------------------------------------------------------------------------

class Addressing(Protocol):
    def ip(self, t: float, new_session: bool, rng: random.Random) -> str: ...


class HomeAddress:
    """A household: one address that the ISP reassigns now and then (or an IPv6 /64 whose
    interface id rotates daily, as privacy extensions do)."""

    __slots__ = ("country", "current", "day", "plan", "prefix6")

    def __init__(self, plan: AddressPlan, country: str, rng: random.Random,
                 ipv6: bool) -> None:
        self.plan = plan
        self.country = country
        self.prefix6 = plan.home_v6(rng, country) if ipv6 else 0
        self.day = -1
        self.current = ""

    def ip(self, t: float, new_session: bool, rng: random.Random) -> str:
        day = int(t // DAY)
        if day != self.day:
            if self.prefix6:
                self.current = v6(self.prefix6 | rng.getrandbits(64))
            elif not self.current or rng.random() < 0.08:
                self.current = v4(self.plan.home_prefix(rng, self.country)
                                  + rng.randrange(1, 255))
            self.day = day
        return self.current


class MobileAddress:
    """A phone: a fresh CGNAT address per session, or its IPv6 /64 with a rotating suffix."""

    __slots__ = ("carrier", "current", "prefix6")

    def __init__(self, carrier: Carrier, rng: random.Random, ipv6: bool) -> None:
        self.carrier = carrier
        self.prefix6 = AddressPlan.phone_v6(rng, carrier) if ipv6 else 0
        self.current = ""

    def ip(self, t: float, new_session: bool, rng: random.Random) -> str:
        if new_session or not self.current:
            self.current = (v6(self.prefix6 | rng.getrandbits(64)) if self.prefix6
                            else AddressPlan.cgnat_ip(rng, self.carrier))
        return self.current


class PoolAddress:
    """Any address of a fixed pool per request (a NAT's egress IPs, a fleet's cloud pool)."""

    __slots__ = ("pool",)

    def __init__(self, pool: Sequence[str]) -> None:
        self.pool = tuple(pool)

    def ip(self, t: float, new_session: bool, rng: random.Random) -> str:
        return self.pool[rng.randrange(len(self.pool))] if len(self.pool) > 1 else self.pool[0]


class VpnAddress:
    """A VPN user: the usual exit country most sessions, another one sometimes."""

    __slots__ = ("countries", "current", "home", "provider")

    def __init__(self, provider: int, home: str, countries: Sequence[str]) -> None:
        self.provider = provider
        self.home = home
        self.countries = tuple(countries)
        self.current = ""

    def ip(self, t: float, new_session: bool, rng: random.Random) -> str:
        if new_session or not self.current:
            country = self.home if rng.random() < 0.75 else rng.choice(self.countries)
            self.current = AddressPlan.vpn_exit(rng, self.provider, country)
        return self.current


class ProxyRotating:
    """A residential proxy gateway that gives every request a new exit."""

    __slots__ = ("countries", "plan")

    def __init__(self, plan: AddressPlan, countries: Sequence[str]) -> None:
        self.plan = plan
        self.countries = tuple(countries)

    def ip(self, t: float, new_session: bool, rng: random.Random) -> str:
        country = self.countries[0] if len(self.countries) == 1 else rng.choice(self.countries)
        return self.plan.exit_ip(rng, country)


class ProxySticky:
    """A residential proxy "sticky session": one exit per account per day."""

    __slots__ = ("country", "current", "day", "plan")

    def __init__(self, plan: AddressPlan, country: str) -> None:
        self.plan = plan
        self.country = country
        self.day = -1
        self.current = ""

    def ip(self, t: float, new_session: bool, rng: random.Random) -> str:
        day = int(t // DAY)
        if day != self.day:
            self.current = self.plan.exit_ip(rng, self.country)
            self.day = day
        return self.current


# Clients ----------------------------------------------------------------------------------

def browser_fingerprint(browser: Browser, version: str, accept_language: str,
                        device_id: str) -> Json:
    fp: Json = {"ja4": browser.ja4, "userAgent": browser.user_agent.format(v=version),
                "headerNames": list(browser.headers)}
    if device_id:
        fp["deviceId"] = device_id
    fp["acceptLanguage"] = accept_language
    return fp


def stack_fingerprint(stack: ClientStack, version: str) -> Json:
    fp: Json = {"ja4": stack.ja4, "userAgent": stack.user_agent.format(v=version),
                "headerNames": list(stack.headers)}
    if stack.sdk_name:
        fp["sdkName"] = stack.sdk_name
        fp["sdkVersion"] = version
    return fp


@dataclass(frozen=True, slots=True)
class Place:
    """One way an account reaches the API: from where, with which client."""

    addressing: Addressing
    fingerprint: Json
    forwarded_for: tuple[str, ...] = ()


# Workloads --------------------------------------------------------------------------------

# Median (input, output) tokens per task; spread is log-normal.
_TOKENS = {
    "TASK_CATEGORY_CHAT": (400, 350),
    "TASK_CATEGORY_CODE": (1500, 900),
    "TASK_CATEGORY_REASONING": (800, 2500),
    "TASK_CATEGORY_EMBEDDING": (300, 0),
    "TASK_CATEGORY_OTHER": (500, 300),
}


class Workload:
    """What an account asks for: the task mix, token sizes and prompt signatures.

    ``templates`` are the content signatures of prompts built from a template; a request uses
    one with probability ``templated_share``, otherwise its prompt is unique (or carries no
    signature at all with probability ``1 - signed_share``)."""

    __slots__ = ("out_scale", "signed_share", "tasks", "templated_share", "templates")

    def __init__(self, tasks: Mapping[str, float], *, templates: Sequence[int] = (),
                 templated_share: float = 0.0, signed_share: float = 0.7,
                 out_scale: float = 1.0) -> None:
        self.tasks = Picker(tasks)
        self.templates = tuple(templates)
        self.templated_share = templated_share if templates else 0.0
        self.signed_share = signed_share
        self.out_scale = out_scale

    def context(self, ms: int, rng: random.Random) -> Json:
        task = self.tasks.pick(rng)
        models = MODEL_FOR_TASK[task]
        median_in, median_out = _TOKENS[task]
        ctx: Json = {
            "eventTime": rfc3339(ms),
            "endpoint": ENDPOINT_FOR_TASK.get(task, DEFAULT_ENDPOINT),
            "model": models[0] if len(models) == 1 else rng.choice(models),
            "taskCategory": task,
            "inputTokens": min(200_000, 1 + int(median_in * rng.lognormvariate(0, 0.8))),
        }
        if median_out:
            ctx["outputTokens"] = min(100_000, 1 + int(
                median_out * self.out_scale * rng.lognormvariate(0, 0.7)))
        u = rng.random()
        if u < self.templated_share:
            ctx["contentSignature"] = str(self.templates[rng.randrange(len(self.templates))])
        elif u < self.templated_share + (1 - self.templated_share) * self.signed_share:
            ctx["contentSignature"] = str(rng.getrandbits(64) | 1)
        return ctx


# The account and its events ---------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Tags:
    """The ground truth carried next to each request (see docs/evaluation.md)."""

    label: str
    campaign: str = ""
    group: str = ""
    segment: str = ""


class Account:
    """One honest account: its identity, rhythm, places and workload. The simulator keeps
    exactly one pending request time per account."""

    __slots__ = ("account_id", "api_key_id", "created", "first", "org_id", "place",
                 "place_picker", "places", "session", "tags", "timing", "workload")

    def __init__(self, *, account_id: str, api_key_id: str, org_id: str, created_at: float,
                 first: float, timing: Timing, places: Sequence[tuple[Place, float]],
                 workload: Workload, tags: Tags) -> None:
        self.account_id = account_id
        self.api_key_id = api_key_id
        self.org_id = org_id
        self.created = rfc3339(int(created_at) * 1000)
        self.first = first
        self.timing = timing
        self.places = [p for p, _ in places]
        self.place_picker = Picker(places) if len(places) > 1 else None
        self.place = self.places[0]
        self.session = True
        self.workload = workload
        self.tags = tags

    def first_time(self, rng: random.Random) -> float:
        return self.next_time(self.first, rng)

    def next_time(self, t: float, rng: random.Random) -> float:
        t, self.session = self.timing.next_time(t, rng)
        if self.session and self.place_picker is not None:
            self.place = self.place_picker.pick(rng)
        return t

    def event(self, t: float, rng: random.Random) -> Json:
        place = self.place
        return request_json(
            account_id=self.account_id, api_key_id=self.api_key_id, org_id=self.org_id,
            ip=place.addressing.ip(t, self.session, rng), forwarded_for=place.forwarded_for,
            fingerprint=place.fingerprint, context=self.workload.context(int(t * 1000), rng),
            created=self.created, tags=self.tags)


def request_json(*, account_id: str, api_key_id: str, org_id: str, ip: str,
                 forwarded_for: Sequence[str], fingerprint: Json, context: Json, created: str,
                 tags: Tags) -> Json:
    """One event line's object, keys in field-number order like MessageToDict writes them."""
    d: Json = {"accountId": account_id, "apiKeyId": api_key_id}
    if org_id:
        d["orgId"] = org_id
    d["clientIp"] = ip
    if forwarded_for:
        d["forwardedFor"] = list(forwarded_for)
    d["fingerprint"] = fingerprint
    d["context"] = context
    d["accountCreatedAt"] = created
    d["label"] = tags.label
    d["campaign"] = tags.campaign
    d["group"] = tags.group
    d["segment"] = tags.segment
    return d
