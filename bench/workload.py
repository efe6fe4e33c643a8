"""Synthetic but realistic Score traffic for the benchmarks.

A fixed population (same seed → same population in every process): accounts with a home device
and a home IP or two, a few thousand devices (browsers, vendor SDKs, HTTP libraries; half of
them with a client device id), a few thousand IPs in ~1,500 networks (15 % IPv6), and a few
rings of accounts that share a device and a network. Account popularity is Zipf-like, so some
accounts are hot (profile cache hits) and the tail keeps bringing accounts seen for the first
time (misses); 15 % of requests come from a device or IP outside the account's usual ones.
"""

from __future__ import annotations

import bisect
import ipaddress
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from envoy.service.auth.v3 import external_auth_pb2

from ringfence.v1 import risk_pb2 as pb

CHROME_HEADERS = (
    "host",
    "connection",
    "sec-ch-ua",
    "sec-ch-ua-mobile",
    "user-agent",
    "content-type",
    "accept",
    "sec-ch-ua-platform",
    "origin",
    "sec-fetch-site",
    "sec-fetch-mode",
    "sec-fetch-dest",
    "referer",
    "accept-encoding",
    "accept-language",
    "authorization",
)
FIREFOX_HEADERS = (
    "host",
    "user-agent",
    "accept",
    "accept-language",
    "accept-encoding",
    "content-type",
    "authorization",
    "origin",
    "connection",
    "referer",
    "sec-fetch-dest",
    "sec-fetch-mode",
    "sec-fetch-site",
)
SAFARI_HEADERS = (
    "host",
    "content-type",
    "origin",
    "accept-encoding",
    "connection",
    "accept",
    "user-agent",
    "referer",
    "accept-language",
    "authorization",
)
STAINLESS_HEADERS = (
    "host",
    "accept-encoding",
    "connection",
    "accept",
    "content-type",
    "user-agent",
    "x-stainless-lang",
    "x-stainless-package-version",
    "x-stainless-os",
    "x-stainless-arch",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "authorization",
    "x-stainless-async",
    "content-length",
)
LIBRARY_HEADERS = (
    "host",
    "user-agent",
    "accept-encoding",
    "accept",
    "connection",
    "authorization",
    "content-type",
    "content-length",
)
CURL_HEADERS = ("host", "user-agent", "accept", "authorization", "content-type", "content-length")

JA4_CHROME = ("t13d1516h2_8daaf6152771_02713d6af862", "t13d1517h2_8daaf6152771_b0da82dd1658")
JA4_FIREFOX = ("t13d1715h2_5b57614c22b0_3d5424432f57",)
JA4_SAFARI = ("t13d2014h2_a09f3c656075_14788d8d241b",)
JA4_PYTHON = ("t13d181000_85036bcba153_d41ae481755e", "t13d1811h1_85036bcba153_b26ce05bbdd6")
JA4_NODE = ("t13d1712h2_5b234860e130_a7c7ab71d6b1",)
JA4_GO = ("t13d190900_9dc949149365_97f8aa674fd9",)
JA4_CURL = ("t13d3112h2_e8f1e7e78f70_6bebaf5329ac",)

_WIN = "Windows NT 10.0; Win64; x64"
_MAC = "Macintosh; Intel Mac OS X 10_15_7"
_WEBKIT = "AppleWebKit/537.36 (KHTML, like Gecko)"
# Each maker draws a version, so the population holds several hundred distinct user agents
# (as real traffic does) and the user-agent parse cache sees misses before it settles.
# Browsers: (user agent maker, JA4 choices, header names).
BROWSERS: tuple[tuple[Callable[[random.Random], str], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        lambda r: (
            f"Mozilla/5.0 ({_WIN}) {_WEBKIT} Chrome/{r.randint(118, 127)}.0.0.0 Safari/537.36"
        ),
        JA4_CHROME,
        CHROME_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 ({_MAC}) {_WEBKIT} Chrome/{r.randint(118, 127)}.0.0.0 Safari/537.36"
        ),
        JA4_CHROME,
        CHROME_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 (X11; Linux x86_64) {_WEBKIT} Chrome/{r.randint(118, 127)}.0.0.0 "
            "Safari/537.36"
        ),
        JA4_CHROME,
        CHROME_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 ({_WIN}) {_WEBKIT} Chrome/{(m := r.randint(120, 127))}.0.0.0 "
            f"Safari/537.36 Edg/{m}.0.{r.randint(2200, 2600)}.{r.randint(40, 99)}"
        ),
        JA4_CHROME,
        CHROME_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 (Linux; Android 10; K) {_WEBKIT} Chrome/{r.randint(118, 127)}"
            ".0.0.0 Mobile Safari/537.36"
        ),
        JA4_CHROME,
        CHROME_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 ({_WIN}; rv:{(v := r.randint(115, 129))}.0) Gecko/20100101 Firefox/{v}.0"
        ),
        JA4_FIREFOX,
        FIREFOX_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 (X11; Linux x86_64; rv:{(v := r.randint(115, 129))}.0) "
            f"Gecko/20100101 Firefox/{v}.0"
        ),
        JA4_FIREFOX,
        FIREFOX_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 ({_MAC}) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Version/{r.randint(16, 17)}.{r.randint(0, 6)} Safari/605.1.15"
        ),
        JA4_SAFARI,
        SAFARI_HEADERS,
    ),
    (
        lambda r: (
            f"Mozilla/5.0 (iPhone; CPU iPhone OS {(a := r.randint(16, 17))}_"
            f"{(b := r.randint(0, 6))} like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
            f"Gecko) Version/{a}.{b} Mobile/15E148 Safari/604.1"
        ),
        JA4_SAFARI,
        SAFARI_HEADERS,
    ),
)
# Vendor SDKs: (user agent prefix, sdk name, version maker, JA4 choices).
SDKS: tuple[tuple[str, str, Callable[[random.Random], str], tuple[str, ...]], ...] = (
    (
        "OpenAI/Python",
        "openai-python",
        lambda r: f"1.{r.randint(30, 55)}.{r.randint(0, 9)}",
        JA4_PYTHON,
    ),
    ("OpenAI/JS", "openai-node", lambda r: f"4.{r.randint(40, 70)}.{r.randint(0, 5)}", JA4_NODE),
    (
        "Anthropic/Python",
        "anthropic-python",
        lambda r: f"0.{r.randint(25, 40)}.{r.randint(0, 3)}",
        JA4_PYTHON,
    ),
    (
        "Anthropic/JS",
        "anthropic-typescript",
        lambda r: f"0.{r.randint(20, 30)}.{r.randint(0, 3)}",
        JA4_NODE,
    ),
)
# HTTP libraries and tools: (user agent maker, JA4 choices, header names).
LIBRARIES: tuple[tuple[Callable[[random.Random], str], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        lambda r: f"python-requests/2.{r.randint(25, 32)}.{r.randint(0, 3)}",
        JA4_PYTHON,
        LIBRARY_HEADERS,
    ),
    (
        lambda r: f"python-httpx/0.{r.randint(23, 27)}.{r.randint(0, 2)}",
        JA4_PYTHON,
        LIBRARY_HEADERS,
    ),
    (
        lambda r: f"Python/3.{r.randint(9, 12)} aiohttp/3.{r.randint(8, 10)}.{r.randint(0, 5)}",
        JA4_PYTHON,
        LIBRARY_HEADERS,
    ),
    (lambda r: f"curl/8.{r.randint(0, 9)}.{r.randint(0, 1)}", JA4_CURL, CURL_HEADERS),
    (lambda r: r.choice(("Go-http-client/1.1", "Go-http-client/2.0")), JA4_GO, LIBRARY_HEADERS),
    (lambda r: f"axios/1.{r.randint(0, 7)}.{r.randint(0, 4)}", JA4_NODE, LIBRARY_HEADERS),
    (lambda r: "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)", JA4_NODE, LIBRARY_HEADERS),
)
LANGUAGES = (
    "en-US,en;q=0.9",
    "en-GB,en;q=0.9",
    "de-DE,de;q=0.9,en;q=0.8",
    "fr-FR,fr;q=0.9",
    "ja-JP,ja;q=0.9",
    "pt-BR,pt;q=0.9,en;q=0.8",
    "zh-CN,zh;q=0.9",
    "es-ES,es;q=0.9",
)
# (endpoint, model, wire TaskCategory, typical input tokens, typical output tokens)
ENDPOINTS = (
    ("/v1/chat/completions", "gpt-4o-mini", 1, 800, 300),
    ("/v1/chat/completions", "gpt-4o", 1, 1500, 500),
    ("/v1/chat/completions", "o1-mini", 3, 2000, 3000),
    ("/v1/responses", "gpt-4.1", 2, 4000, 900),
    ("/v1/completions", "gpt-3.5-turbo-instruct", 2, 600, 200),
    ("/v1/embeddings", "text-embedding-3-small", 4, 300, 0),
    ("/v1/audio/transcriptions", "whisper-1", 5, 0, 400),
)


@dataclass(frozen=True, slots=True)
class Device:
    """What one client installation looks like on the wire."""

    user_agent: str
    ja4: str
    header_names: tuple[str, ...]
    sdk_name: str = ""
    sdk_version: str = ""
    device_id: str = ""
    accept_language: str = ""
    ja4h: str = ""


@dataclass(frozen=True, slots=True)
class Account:
    account_id: str
    org_id: str
    api_key_ids: tuple[str, ...]
    devices: tuple[int, ...]  # indexes into Population.devices
    ips: tuple[int, ...]  # indexes into Population.ips
    created_at: float | None


def make_device(rng: random.Random, device_id: str | None = None) -> Device:
    """A random client: 30 % browsers, 45 % vendor SDKs, 25 % HTTP libraries."""
    kind = rng.random()
    if kind < 0.30:
        make_ua, ja4s, headers = rng.choice(BROWSERS)
        has_id = rng.random() < 0.6
        return Device(
            make_ua(rng),
            rng.choice(ja4s),
            headers,
            device_id=_device_id(rng, "web", device_id, has_id),
            accept_language=rng.choice(LANGUAGES),
            ja4h=f"po11cn{rng.randrange(10, 20)}enus_{rng.getrandbits(48):012x}_"
            f"{rng.getrandbits(48):012x}_000000000000",
        )
    if kind < 0.75:
        prefix, sdk, make_version, ja4s = rng.choice(SDKS)
        version = make_version(rng)
        return Device(
            f"{prefix} {version}",
            rng.choice(ja4s),
            STAINLESS_HEADERS,
            sdk_name=sdk,
            sdk_version=version,
            device_id=_device_id(rng, "inst", device_id, rng.random() < 0.5),
        )
    make_ua, ja4s, headers = rng.choice(LIBRARIES)
    return Device(
        make_ua(rng),
        rng.choice(ja4s),
        headers,
        device_id=_device_id(rng, "cli", device_id, rng.random() < 0.15),
    )


def _device_id(rng: random.Random, kind: str, fixed: str | None, present: bool) -> str:
    if fixed is not None:
        return fixed
    return f"{kind}-{rng.getrandbits(128):032x}" if present else ""


def _public_ipv4_prefix(rng: random.Random) -> int:
    while True:
        first = rng.randrange(1, 224)
        if first not in (10, 100, 127, 169, 172, 192, 198, 203):
            return (first << 24) | (rng.randrange(0, 1 << 16) << 8)


class Population:
    """Accounts, devices and IPs; identical for the same arguments in every process."""

    def __init__(
        self,
        *,
        seed: int = 7,
        accounts: int = 10_000,
        devices: int = 3_000,
        ips: int = 4_000,
        ring_share: float = 0.08,
    ) -> None:
        rng = random.Random(seed)
        self.devices = [make_device(rng) for _ in range(devices)]
        self.ips = self._make_ips(rng, ips)
        now = time.time()
        self.accounts: list[Account] = []
        ring: tuple[tuple[int, ...], tuple[int, ...]] | None = None
        ring_left = 0
        for i in range(accounts):
            if ring_left == 0 and rng.random() < ring_share / 12:
                # A ring: 5-20 accounts run from one or two devices on one network.
                start = rng.randrange(0, len(self.ips) - 3)
                ring = (
                    tuple(rng.randrange(devices) for _ in range(rng.randint(1, 2))),
                    tuple(range(start, start + 3)),
                )
                ring_left = rng.randint(5, 20)
            if ring_left and ring is not None:
                ring_left -= 1
                dev, ip = ring
            else:
                dev = tuple(rng.randrange(devices) for _ in range(rng.choice((1, 1, 1, 2, 3))))
                ip = tuple(rng.randrange(len(self.ips)) for _ in range(rng.choice((1, 1, 2, 3))))
            created = now - rng.uniform(3600, 400 * 86400) if rng.random() < 0.3 else None
            self.accounts.append(
                Account(
                    account_id=f"acct_{i:06d}_{rng.getrandbits(32):08x}",
                    org_id=f"org-{rng.getrandbits(40):010x}",
                    api_key_ids=tuple(
                        f"key_{rng.getrandbits(48):012x}" for _ in range(rng.choice((1, 1, 2)))
                    ),
                    devices=dev,
                    ips=ip,
                    created_at=created,
                )
            )
        # Zipf-like popularity over a shuffled order (so hot accounts are spread over rings).
        order = list(range(accounts))
        rng.shuffle(order)
        self._order = order
        cum, total = [], 0.0
        for rank in range(accounts):
            total += 1.0 / (rank + 10) ** 0.9
            cum.append(total)
        self._cum = cum

    @staticmethod
    def _make_ips(rng: random.Random, n: int) -> list[str]:
        ips: list[str] = []
        networks = max(1, n * 3 // 8)  # ~2.7 addresses per network
        nets: list[tuple[int, int]] = []
        for _ in range(networks):
            if rng.random() < 0.15:
                nets.append((6, (0x2A00 + rng.randrange(0x100)) << 112 | rng.getrandbits(48) << 64))
            else:
                nets.append((4, _public_ipv4_prefix(rng)))
        for _ in range(n):
            version, base = rng.choice(nets)
            if version == 4:
                ips.append(str(ipaddress.IPv4Address(base | rng.randrange(1, 255))))
            else:
                ips.append(str(ipaddress.IPv6Address(base | rng.getrandbits(64))))
        return ips

    def pick_account(self, rng: random.Random) -> Account:
        rank = bisect.bisect_left(self._cum, rng.random() * self._cum[-1])
        return self.accounts[self._order[min(rank, len(self._order) - 1)]]

    def request(self, rng: random.Random) -> pb.ScoreRequest:
        """One ScoreRequest. ``event_time`` is left unset: the server stamps it (now)."""
        a = self.pick_account(rng)
        dev = rng.choice(a.devices) if rng.random() < 0.85 else rng.randrange(len(self.devices))
        ip = rng.choice(a.ips) if rng.random() < 0.85 else rng.randrange(len(self.ips))
        d = self.devices[dev]
        endpoint, model, task, tin, tout = rng.choice(ENDPOINTS)
        fp = pb.DeviceFingerprint(
            ja4=d.ja4,
            user_agent=d.user_agent,
            header_names=d.header_names,
            sdk_name=d.sdk_name,
            sdk_version=d.sdk_version,
            device_id=d.device_id,
            accept_language=d.accept_language,
        )
        if d.ja4h:
            fp.extra_fingerprints["ja4h"] = d.ja4h
        ctx = pb.RequestContext(
            endpoint=endpoint,
            model=model,
            task_category=task,
            input_tokens=int(tin * rng.lognormvariate(0, 0.8)),
            output_tokens=int(tout * rng.lognormvariate(0, 0.6)),
        )
        if task != 4 and rng.random() < 0.7:
            ctx.content_signature = rng.getrandbits(64)
        req = pb.ScoreRequest(
            account_id=a.account_id,
            api_key_id=rng.choice(a.api_key_ids),
            org_id=a.org_id,
            client_ip=self.ips[ip],
            fingerprint=fp,
            context=ctx,
        )
        if rng.random() < 0.2:
            req.forwarded_for.extend(rng.choice(self.ips) for _ in range(rng.randint(1, 2)))
        if a.created_at is not None:
            req.account_created_at.FromNanoseconds(int(a.created_at * 1e9))
        return req

    def request_pool(self, n: int, seed: int) -> list[bytes]:
        """``n`` serialized requests drawn with their own random stream."""
        rng = random.Random(seed)
        return [self.request(rng).SerializeToString() for _ in range(n)]

    def batch_pool(self, n: int, batch_size: int, seed: int) -> list[bytes]:
        """``n`` serialized ScoreBatchRequests of ``batch_size`` requests each."""
        rng = random.Random(seed)
        return [
            pb.ScoreBatchRequest(
                requests=[self.request(rng) for _ in range(batch_size)]
            ).SerializeToString()
            for _ in range(n)
        ]

    def check_pool(self, n: int, seed: int) -> list[bytes]:
        """``n`` serialized Envoy CheckRequests carrying the same draws as ``request``."""
        rng = random.Random(seed)
        return [check_request(self.request(rng)).SerializeToString() for _ in range(n)]


TASK_NAMES = {1: "chat", 2: "code", 3: "reasoning", 4: "embedding", 5: "other"}
HEADER_VALUES = {
    "connection": "keep-alive",
    "content-type": "application/json",
    "accept": "*/*",
    "accept-encoding": "gzip, deflate, br",
    "origin": "https://app.example.com",
    "referer": "https://app.example.com/",
    "sec-ch-ua-mobile": "?0",
    "sec-fetch-site": "same-site",
    "sec-fetch-mode": "cors",
    "sec-fetch-dest": "empty",
    "content-length": "412",
}


def check_request(req: pb.ScoreRequest) -> external_auth_pb2.CheckRequest:
    """The CheckRequest Envoy's ext_authz filter sends (``encode_raw_headers: true``) for the
    request ``req`` describes: the source address, the pseudo headers, the client's headers in
    its own order, and the x-ringfence-* / x-ja4 headers the gateway in front of it sets."""
    check = external_auth_pb2.CheckRequest()
    check.attributes.source.address.socket_address.address = req.client_ip
    check.attributes.source.address.socket_address.port_value = 40_000 + len(req.account_id)
    http = check.attributes.request.http
    http.method = "POST"
    http.path = req.context.endpoint
    http.host = "api.example.com"
    http.scheme = "https"
    http.protocol = "HTTP/2"
    fp = req.fingerprint
    values = {
        ":authority": "api.example.com",
        ":method": "POST",
        ":path": req.context.endpoint,
        ":scheme": "https",
    }
    for name in fp.header_names:
        if name == "host":
            continue  # :authority carries it on HTTP/2
        if name == "user-agent":
            values[name] = fp.user_agent
        elif name == "accept-language":
            values[name] = fp.accept_language or "en-US,en;q=0.9"
        elif name == "authorization":
            values[name] = f"Bearer sk-{req.api_key_id}"
        elif name.startswith("x-stainless-"):
            values[name] = fp.sdk_version or "unknown"
        elif name.startswith("sec-ch-ua") and name not in HEADER_VALUES:
            values[name] = '"Chromium";v="124"'
        else:
            values[name] = HEADER_VALUES.get(name, "1")
    values["x-ringfence-account"] = req.account_id
    values["x-ringfence-api-key-id"] = req.api_key_id
    values["x-ringfence-org"] = req.org_id
    values["x-ja4"] = fp.ja4
    if fp.device_id:
        values["x-ringfence-device-id"] = fp.device_id
    if fp.sdk_name:
        values["x-ringfence-sdk"] = f"{fp.sdk_name}/{fp.sdk_version}"
    for kind, value in fp.extra_fingerprints.items():
        values[f"x-ringfence-fp-{kind}"] = value
    if req.context.model:
        values["x-ringfence-model"] = req.context.model
    if req.context.task_category in TASK_NAMES:
        values["x-ringfence-task"] = TASK_NAMES[req.context.task_category]
    if req.context.HasField("content_signature"):
        values["x-ringfence-content-signature"] = str(req.context.content_signature)
    if req.HasField("account_created_at"):
        values["x-ringfence-account-created"] = str(req.account_created_at.seconds)
    if req.forwarded_for:
        values["x-forwarded-for"] = ", ".join(req.forwarded_for)
    values["x-request-id"] = f"{len(req.account_id):08x}-bench"
    for key, value in values.items():
        http.header_map.headers.add(key=key, raw_value=value.encode())
    return check


def prefill_requests(n: int, seed: int = 13) -> Iterator[pb.ScoreRequest]:
    """``n`` ScoreRequests, one for each of ``n`` distinct accounts that are not in any
    Population (ids ``prefill_0000000`` …), each with its own device id and its own /24 (so
    the device and network books grow with the accounts, as in account_memory's worst case),
    drawn from a few hundred client stacks. One message object is reused and changed in
    place: the caller must convert it before asking for the next one."""
    rng = random.Random(seed)
    stacks = [make_device(rng) for _ in range(500)]
    req = pb.ScoreRequest()
    base = int(ipaddress.IPv4Address("11.0.0.0"))  # account i: 11.0.0.0 + i·256 + 7
    for i in range(n):
        d = stacks[i % len(stacks)]
        endpoint, model, task, tin, tout = ENDPOINTS[i % len(ENDPOINTS)]
        req.Clear()
        req.account_id = f"prefill_{i:07d}"
        req.api_key_id = f"key_pf_{i:07d}"
        req.client_ip = str(ipaddress.IPv4Address(base + (i << 8) + 7))
        fp = req.fingerprint
        fp.ja4 = d.ja4
        fp.user_agent = d.user_agent
        fp.header_names.extend(d.header_names)
        fp.sdk_name = d.sdk_name
        fp.sdk_version = d.sdk_version
        fp.device_id = f"pf-dev-{i:07d}"
        fp.accept_language = d.accept_language
        req.context.endpoint = endpoint
        req.context.model = model
        req.context.task_category = task  # type: ignore[assignment]
        req.context.input_tokens = tin
        req.context.output_tokens = tout
        yield req
