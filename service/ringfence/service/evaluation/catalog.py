"""Static tables the simulator draws from: browsers, SDK and script stacks, countries, task mixes.

The browser rows are hand-written from current public user agents and the header orders those
browsers send on a JSON ``fetch`` over HTTP/2 (pseudo-headers left out). JA4 values marked
``documented`` are the public ones in docs (Chromium, python-requests, Go net/http); the others
are illustrative placeholders — ringfence treats JA4 as an opaque string apart from its first
part, so any stable, well-formed value serves the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

JA4_CHROMIUM = "t13d1516h2_8daaf6152771_02713d6af862"  # documented
JA4_PYTHON_REQUESTS = "t13d181000_85036bcba153_d41ae481755e"  # documented
JA4_GO_NET_HTTP = "t13d190900_9dc949149365_97f8aa674fd9"  # documented
JA4_FIREFOX = "t13d1715h2_5b57614c22b0_3d5424432f57"  # illustrative
JA4_SAFARI = "t13d2014h2_a09f3c656075_14788d8d241b"  # illustrative
JA4_PYTHON_HTTPX = "t13d1812h1_85036bcba153_b26ce05bbdd6"  # illustrative
JA4_NODE = "t13d1712h2_5b234860e130_014157ec0da2"  # illustrative
JA4_CURL = "t13d3112h2_e8f1e7e78f70_6bebaf5329ac"  # illustrative

_CHROME_HEADERS = (
    "content-length", "sec-ch-ua-platform", "user-agent", "sec-ch-ua", "content-type",
    "sec-ch-ua-mobile", "accept", "origin", "sec-fetch-site", "sec-fetch-mode",
    "sec-fetch-dest", "referer", "accept-encoding", "accept-language", "cookie", "priority",
)
_FIREFOX_HEADERS = (
    "user-agent", "accept", "accept-language", "accept-encoding", "referer", "content-type",
    "content-length", "origin", "sec-fetch-dest", "sec-fetch-mode", "sec-fetch-site",
    "priority", "cookie", "te",
)
_SAFARI_HEADERS = (
    "content-type", "accept", "sec-fetch-site", "origin", "sec-fetch-mode", "user-agent",
    "referer", "content-length", "sec-fetch-dest", "accept-language", "priority",
    "accept-encoding", "cookie",
)


@dataclass(frozen=True, slots=True)
class Browser:
    """One browser build family; ``versions`` fill ``{v}`` in the user agent."""

    name: str
    share: float
    user_agent: str
    versions: tuple[str, ...]
    ja4: str
    headers: tuple[str, ...]
    mobile: bool = False


BROWSERS: tuple[Browser, ...] = (
    Browser("chrome-windows", 0.34,
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/{v}.0.0.0 Safari/537.36", ("123", "124", "125"), JA4_CHROMIUM,
            _CHROME_HEADERS),
    Browser("chrome-mac", 0.14,
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
            "Gecko) Chrome/{v}.0.0.0 Safari/537.36", ("123", "124", "125"), JA4_CHROMIUM,
            _CHROME_HEADERS),
    Browser("chrome-linux", 0.03,
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/{v}.0.0.0 Safari/537.36", ("124", "125"), JA4_CHROMIUM, _CHROME_HEADERS),
    Browser("chrome-android", 0.12,
            "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/{v}.0.0.0 Mobile Safari/537.36", ("124", "125"), JA4_CHROMIUM,
            _CHROME_HEADERS, mobile=True),
    Browser("edge-windows", 0.08,
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0", ("124", "125"), JA4_CHROMIUM,
            _CHROME_HEADERS),
    Browser("firefox-windows", 0.04,
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:{v}.0) Gecko/20100101 Firefox/{v}.0",
            ("125", "126"), JA4_FIREFOX, _FIREFOX_HEADERS),
    Browser("firefox-mac", 0.02,
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:{v}.0) Gecko/20100101 "
            "Firefox/{v}.0", ("125", "126"), JA4_FIREFOX, _FIREFOX_HEADERS),
    Browser("safari-mac", 0.09,
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
            "like Gecko) Version/{v} Safari/605.1.15", ("17.4.1", "17.5"), JA4_SAFARI,
            _SAFARI_HEADERS),
    Browser("safari-ios", 0.11,
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/{v} Mobile/15E148 Safari/604.1", ("17.4", "17.5"),
            JA4_SAFARI, _SAFARI_HEADERS, mobile=True),
    Browser("samsung-android", 0.03,
            "Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, "
            "like Gecko) SamsungBrowser/{v}.0 Chrome/121.0.0.0 Mobile Safari/537.36",
            ("24", "25"), JA4_CHROMIUM, _CHROME_HEADERS, mobile=True),
)
MOBILE_BROWSERS = tuple(b for b in BROWSERS if b.mobile)
DESKTOP_BROWSERS = tuple(b for b in BROWSERS if not b.mobile)


@dataclass(frozen=True, slots=True)
class ClientStack:
    """An SDK or HTTP library as it appears on the wire (no device id: scripts send none)."""

    name: str
    share: float
    user_agent: str
    versions: tuple[str, ...]
    ja4: str
    headers: tuple[str, ...]
    sdk_name: str = ""


SDK_STACKS: tuple[ClientStack, ...] = (
    ClientStack("openai-python", 0.45, "OpenAI/Python {v}", ("1.30.1", "1.35.3", "1.40.0"),
                JA4_PYTHON_HTTPX,
                ("accept", "accept-encoding", "connection", "user-agent", "x-stainless-lang",
                 "x-stainless-package-version", "authorization", "content-type",
                 "content-length"), sdk_name="openai-python"),
    ClientStack("openai-node", 0.2, "OpenAI/JS {v}", ("4.47.1", "4.52.0"), JA4_NODE,
                ("accept", "content-type", "user-agent", "x-stainless-lang",
                 "x-stainless-package-version", "authorization", "accept-encoding",
                 "content-length"), sdk_name="openai-node"),
    ClientStack("python-requests", 0.2, "python-requests/{v}", ("2.31.0", "2.32.3"),
                JA4_PYTHON_REQUESTS,
                ("user-agent", "accept-encoding", "accept", "connection", "authorization",
                 "content-type", "content-length")),
    ClientStack("go-net-http", 0.1, "Go-http-client/2.0", ("2.0",), JA4_GO_NET_HTTP,
                ("content-type", "authorization", "accept-encoding", "user-agent")),
    ClientStack("curl", 0.05, "curl/{v}", ("8.5.0", "8.7.1"), JA4_CURL,
                ("user-agent", "accept", "authorization", "content-type", "content-length")),
)
SCRIPT_STACKS = tuple(s for s in SDK_STACKS if not s.sdk_name)


@dataclass(frozen=True, slots=True)
class Country:
    code: str
    share: float
    utc_offset_h: float
    accept_language: str


COUNTRIES: tuple[Country, ...] = (
    Country("US", 0.33, -6, "en-US,en;q=0.9"),
    Country("IN", 0.1, 5.5, "en-IN,en;q=0.9,hi;q=0.8"),
    Country("GB", 0.07, 0, "en-GB,en;q=0.9"),
    Country("DE", 0.07, 1, "de-DE,de;q=0.9,en;q=0.8"),
    Country("BR", 0.06, -3, "pt-BR,pt;q=0.9,en;q=0.8"),
    Country("FR", 0.05, 1, "fr-FR,fr;q=0.9,en;q=0.8"),
    Country("JP", 0.05, 9, "ja-JP,ja;q=0.9,en;q=0.8"),
    Country("CA", 0.05, -5, "en-CA,en;q=0.9,fr;q=0.8"),
    Country("AU", 0.04, 10, "en-AU,en;q=0.9"),
    Country("KR", 0.04, 9, "ko-KR,ko;q=0.9,en;q=0.8"),
    Country("NL", 0.03, 1, "nl-NL,nl;q=0.9,en;q=0.8"),
    Country("SG", 0.03, 8, "en-SG,en;q=0.9"),
    Country("ES", 0.04, 1, "es-ES,es;q=0.9,en;q=0.8"),
    Country("MX", 0.04, -6, "es-MX,es;q=0.9,en;q=0.8"),
)

# Share of requests per task category (wire enum names), by kind of traffic.
TASKS_CHAT_HEAVY = {"TASK_CATEGORY_CHAT": 0.58, "TASK_CATEGORY_CODE": 0.2,
                    "TASK_CATEGORY_REASONING": 0.1, "TASK_CATEGORY_OTHER": 0.12}
TASKS_DEVELOPER = {"TASK_CATEGORY_CHAT": 0.25, "TASK_CATEGORY_CODE": 0.45,
                   "TASK_CATEGORY_REASONING": 0.1, "TASK_CATEGORY_EMBEDDING": 0.1,
                   "TASK_CATEGORY_OTHER": 0.1}
TASKS_BACKEND = {"TASK_CATEGORY_CHAT": 0.5, "TASK_CATEGORY_EMBEDDING": 0.3,
                 "TASK_CATEGORY_OTHER": 0.2}
# The incident's targets: reasoning chains and code generation.
TASKS_EXTRACTION = {"TASK_CATEGORY_CODE": 0.55, "TASK_CATEGORY_REASONING": 0.37,
                    "TASK_CATEGORY_CHAT": 0.08}

MODEL_FOR_TASK = {
    "TASK_CATEGORY_CHAT": ("frontier-large", "fast-small"),
    "TASK_CATEGORY_CODE": ("frontier-large", "frontier-reasoning"),
    "TASK_CATEGORY_REASONING": ("frontier-reasoning",),
    "TASK_CATEGORY_EMBEDDING": ("embed-3",),
    "TASK_CATEGORY_OTHER": ("fast-small", "frontier-large"),
}
ENDPOINT_FOR_TASK = {"TASK_CATEGORY_EMBEDDING": "/v1/embeddings"}
DEFAULT_ENDPOINT = "/v1/chat/completions"

# Local-time activity of people, hour 0..23 (relative; the simulator normalises to mean 1).
HUMAN_DIURNAL = (0.18, 0.1, 0.07, 0.06, 0.07, 0.12, 0.3, 0.55, 0.85, 1.0, 1.05, 1.0, 0.9,
                 1.0, 1.05, 1.05, 1.0, 0.9, 0.8, 0.75, 0.7, 0.6, 0.45, 0.3)
# Business systems: flatter, still shaped by the customers they serve.
BACKEND_DIURNAL = (0.55, 0.5, 0.45, 0.45, 0.5, 0.6, 0.8, 0.95, 1.1, 1.2, 1.25, 1.25, 1.2,
                   1.2, 1.25, 1.25, 1.2, 1.1, 1.0, 0.9, 0.8, 0.7, 0.65, 0.6)
