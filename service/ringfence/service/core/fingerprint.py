"""Device fingerprints made canonical: a stable device key, what the client claims to be, and
the inconsistencies between its parts (a browser UA on a script library's TLS stack, ...)."""

from __future__ import annotations

import functools
from collections import OrderedDict

import ua_parser

from ringfence.service.core.identity import Hasher
from ringfence.service.core.model import ClientKind, DeviceAnalysis, Fingerprint

BROWSER_FAMILIES = frozenset(
    {
        "Chrome",
        "Chrome Mobile",
        "Chrome Mobile iOS",
        "Chromium",
        "Firefox",
        "Firefox Mobile",
        "Firefox iOS",
        "Safari",
        "Mobile Safari",
        "Edge",
        "Edge Mobile",
        "Opera",
        "Brave",
        "Samsung Internet",
        "Yandex Browser",
        "Vivaldi",
    }
)
CHROMIUM_FAMILIES = frozenset(
    {
        "Chrome",
        "Chrome Mobile",
        "Chromium",
        "Edge",
        "Opera",
        "Brave",
        "Samsung Internet",
        "Yandex Browser",
        "Vivaldi",
    }
)
FIREFOX_FAMILIES = frozenset({"Firefox", "Firefox Mobile"})
# Well-known JA4s of HTTP libraries (public values; see docs/fingerprints.md).
SCRIPT_JA4 = frozenset(
    {
        "t13d181000_85036bcba153_d41ae481755e",  # python-requests / urllib3
        "t13d190900_9dc949149365_97f8aa674fd9",  # Go net/http
    }
)
# Headers every mainstream browser sends on a fetch/XHR to an API.
BROWSER_HEADERS = frozenset({"user-agent", "accept", "accept-encoding", "accept-language"})

FP_BROWSER_UA_SCRIPT_TLS = "FP_BROWSER_UA_SCRIPT_TLS"
FP_BROWSER_UA_WITH_SDK = "FP_BROWSER_UA_WITH_SDK"
FP_HEADERS_CONTRADICT_UA = "FP_HEADERS_CONTRADICT_UA"
FP_MISSING_BROWSER_HEADERS = "FP_MISSING_BROWSER_HEADERS"
FP_NO_USER_AGENT = "FP_NO_USER_AGENT"


@functools.lru_cache(maxsize=8192)
def _parse_ua(user_agent: str) -> tuple[str, str, str]:
    """(family, major, os family) of a user agent; parsing is the costly step, so cache it."""
    result = ua_parser.parse(user_agent)
    ua = result.user_agent
    os = result.os
    return (ua.family if ua else "Other", (ua.major or "") if ua else "", os.family if os else "")


def analyze_user_agent(user_agent: str) -> tuple[str, str, str]:
    """(family, major version, OS family) of a user agent."""
    return _parse_ua(user_agent)


def _ja4_has_no_alpn(ja4: str) -> bool:
    # JA4 part a ends with the first+last ALPN characters; "00" means no ALPN, which no
    # browser does (they all offer h2/http/1.1).
    part_a = ja4.split("_", 1)[0]
    return len(part_a) == 10 and part_a.endswith("00")


ANALYSIS_CACHE_SIZE = 4096  # distinct fingerprints whose analysis is kept (about 1.5 KB each)
_Parts = tuple[
    str,
    str,
    str,
    tuple[str, ...],
    str,
    str,
    str,
    str,
    tuple[tuple[str, str], ...],
    tuple[tuple[str, str], ...],
]


class FingerprintAnalyzer:
    """Turns a Fingerprint into a DeviceAnalysis. Keys are keyed hashes, never raw values.

    The same clients come back again and again, so the last ``cache_size`` distinct
    fingerprints' analyses are kept (least recently used out): a repeat costs one lookup
    instead of the canonicalisation and two keyed hashes."""

    def __init__(self, hasher: Hasher, cache_size: int = ANALYSIS_CACHE_SIZE) -> None:
        self._hasher = hasher
        self._cache: OrderedDict[_Parts, DeviceAnalysis] = OrderedDict()
        self._cache_size = cache_size

    def analyze(self, fp: Fingerprint) -> DeviceAnalysis:
        extra, attributes = fp.extra_fingerprints, fp.attributes
        parts: _Parts = (
            fp.ja4,
            fp.ja3,
            fp.user_agent,
            tuple(fp.header_names),
            fp.sdk_name,
            fp.sdk_version,
            fp.device_id,
            fp.accept_language,
            tuple(extra.items()) if extra else (),
            tuple(attributes.items()) if attributes else (),
        )
        cache = self._cache
        analysis = cache.get(parts)
        if analysis is not None:
            cache.move_to_end(parts)
            return analysis
        analysis = self._analyze(fp)
        cache[parts] = analysis
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
        return analysis

    def _analyze(self, fp: Fingerprint) -> DeviceAnalysis:
        family, major, os_family = _parse_ua(fp.user_agent) if fp.user_agent else ("", "", "")
        headers = tuple(map(str.lower, fp.header_names))
        kind = _client_kind(fp, family)
        stack = "\x1f".join(
            (
                fp.ja4.lower(),
                fp.ja3.lower(),
                family,
                major,
                os_family,
                ",".join(headers),
                fp.sdk_name.lower(),
                fp.sdk_version.split(".", 1)[0],
                fp.accept_language.lower(),
                ";".join(f"{k}={v}" for k, v in sorted(fp.extra_fingerprints.items())),
                ";".join(f"{k}={v}" for k, v in sorted(fp.attributes.items())),
            )
        )
        stack_key = self._hasher.hexdigest("stack", stack)
        device_key = self._hasher.hexdigest("device", fp.device_id) if fp.device_id else stack_key
        return DeviceAnalysis(
            device_key=device_key,
            stack_key=stack_key,
            has_device_id=bool(fp.device_id),
            client_kind=kind,
            ua_family=family,
            ua_major=major,
            os_family=os_family,
            inconsistencies=_inconsistencies(fp, family, headers),
        )


def _client_kind(fp: Fingerprint, family: str) -> ClientKind:
    if fp.sdk_name:
        return ClientKind.SDK
    if family in BROWSER_FAMILIES:
        return ClientKind.BROWSER
    if fp.user_agent or fp.ja4:
        return ClientKind.SCRIPT
    return ClientKind.UNKNOWN


def _inconsistencies(fp: Fingerprint, family: str, headers: tuple[str, ...]) -> tuple[str, ...]:
    found: list[str] = []
    if not fp.user_agent:
        found.append(FP_NO_USER_AGENT)
    if family not in BROWSER_FAMILIES:
        return tuple(found)
    ja4 = fp.ja4.lower()
    if ja4 and (ja4 in SCRIPT_JA4 or _ja4_has_no_alpn(ja4)):
        found.append(FP_BROWSER_UA_SCRIPT_TLS)
    if fp.sdk_name:
        found.append(FP_BROWSER_UA_WITH_SDK)
    if headers:
        if not BROWSER_HEADERS.issubset(headers):
            found.append(FP_MISSING_BROWSER_HEADERS)
        client_hints = any(h.startswith("sec-ch-ua") for h in headers)
        # Chromium sends client hints on every secure request; Firefox and Safari never do.
        if (family in CHROMIUM_FAMILIES and not client_hints) or (
            family not in CHROMIUM_FAMILIES and client_hints
        ):
            found.append(FP_HEADERS_CONTRADICT_UA)
    return tuple(found)
