"""IP enrichment from MaxMind .mmdb databases (ASN, Country, City, Anonymous-IP, ISP,
Connection-Type), with a small LRU cache and hot reload of replaced files."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import re
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import maxminddb

from ringfence.service.core.model import IpAddress, IpInfo

__all__ = [
    "DATABASE_KINDS",
    "GeoIpError",
    "GeoIpPaths",
    "MaxMindGeoIp",
    "network_prefixes",
]

logger = logging.getLogger(__name__)


class GeoIpError(Exception):
    """A configured GeoIP database is missing or is not a readable MaxMind database."""


@dataclass(frozen=True)
class GeoIpPaths:
    """Where each MaxMind database lives; any subset may be configured, including none."""

    asn: Path | None = None
    """GeoLite2-ASN: autonomous system number and organization."""
    country: Path | None = None
    """GeoIP2-Country (or GeoLite2-Country): country ISO code."""
    city: Path | None = None
    """GeoIP2-City (or GeoLite2-City): city name, and country when no Country database is set."""
    anonymous_ip: Path | None = None
    """GeoIP2-Anonymous-IP: hosting, VPN, public/residential proxy and Tor flags."""
    isp: Path | None = None
    """GeoIP2-ISP: ISP name, and the ASN when no ASN database is set."""
    connection_type: Path | None = None
    """GeoIP2-Connection-Type: "Cable/DSL", "Cellular", "Corporate", "Satellite", "Dialup"."""


DATABASE_KINDS: tuple[str, ...] = tuple(f.name for f in fields(GeoIpPaths))
"""The database kinds, named as the GeoIpPaths fields, in a fixed order."""

_Signature = tuple[int, int, int]  # (st_ino, st_mtime_ns, st_size)
_MISSING: _Signature = (-1, -1, -1)

# Reader messages can quote the address being looked up; log lines must never carry one.
_IP_LIKE = re.compile(
    r"\b(?:\d{1,3}\.){3}\d{1,3}\b|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"
)


def _redact(text: str) -> str:
    return _IP_LIKE.sub("<ip>", text)


def _unmap(ip: IpAddress) -> IpAddress:
    """::ffff:a.b.c.d is the IPv4 client a.b.c.d seen through a dual-stack socket."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
    return ip


def network_prefixes(ip: IpAddress) -> tuple[str, str]:
    """(prefix, wide_prefix): the /24 and /16 of an IPv4 address, the /64 and /48 of an IPv6
    one. An IPv4-mapped IPv6 address counts as its IPv4 address."""
    ip = _unmap(ip)
    value = int(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return (
            str(ipaddress.IPv4Network((value & 0xFFFFFF00, 24))),
            str(ipaddress.IPv4Network((value & 0xFFFF0000, 16))),
        )
    return (
        str(ipaddress.IPv6Network((value >> 64 << 64, 64))),
        str(ipaddress.IPv6Network((value >> 80 << 80, 48))),
    )


@dataclass(frozen=True, slots=True)
class _Database:
    kind: str
    path: Path
    reader: maxminddb.Reader
    signature: _Signature
    ip_version: int


@dataclass(frozen=True, slots=True)
class _State:
    """What a lookup reads: replaced as a whole, so a lookup sees readers and cache that
    belong together even while another thread swaps in new databases."""

    databases: Mapping[str, _Database]
    cache: OrderedDict[IpAddress, IpInfo]


def _signature(path: Path) -> _Signature:
    st = os.stat(path)
    return (st.st_ino, st.st_mtime_ns, st.st_size)


def _open_private_copy(path: Path) -> maxminddb.Reader:
    """Open a private copy of ``path``. The reader memory-maps its file, and a file rewritten
    in place under a mapping (``cp new.mmdb`` over it, a download truncating it) kills the
    whole process with SIGBUS at the next lookup; a copy nobody else knows of cannot change.
    The copy is unlinked at once: the mapping keeps it alive until the reader is closed."""
    fd, copy = tempfile.mkstemp(prefix="ringfence-geoip-", suffix=".mmdb")
    try:
        with os.fdopen(fd, "wb") as out, path.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        return maxminddb.open_database(copy, maxminddb.MODE_AUTO)
    finally:
        os.unlink(copy)


def _open_checked(kind: str, path: Path) -> _Database:
    """Opens and smoke-tests one database; raises on anything that is not a usable file."""
    signature = _signature(path)
    reader = _open_private_copy(path)
    try:
        ip_version = int(reader.metadata().ip_version)
        reader.get("1.1.1.1")
        if ip_version == 6:
            reader.get("::1")
    except BaseException:
        reader.close()
        raise
    return _Database(kind, path, reader, signature, ip_version)


# Record layouts follow MaxMind's GeoIP2/GeoLite2 databases.
_Record = Mapping[str, Any]
_Fields = dict[str, Any]


def _text(record: _Record, key: str) -> str:
    value = record.get(key)
    return value if isinstance(value, str) else ""


def _number(record: _Record, key: str) -> int | None:
    value = record.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _child(record: _Record, key: str) -> _Record:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def _from_asn(record: _Record, out: _Fields) -> None:
    asn = _number(record, "autonomous_system_number")
    if asn is not None:
        out["asn"] = asn
    org = _text(record, "autonomous_system_organization")
    if org:
        out["as_org"] = org


def _from_isp(record: _Record, out: _Fields) -> None:
    isp = _text(record, "isp") or _text(record, "organization")
    if isp:
        out["isp"] = isp
    # The ASN database is the better source; the ISP one only fills in when it said nothing.
    if "asn" not in out:
        _from_asn(record, out)


def _country_code(record: _Record) -> str:
    return _text(_child(record, "country"), "iso_code")


def _from_country(record: _Record, out: _Fields) -> None:
    country = _country_code(record)
    if country:
        out["country"] = country


def _from_city(record: _Record, out: _Fields) -> None:
    city = _text(_child(_child(record, "city"), "names"), "en")
    if city:
        out["city"] = city
    if "country" not in out:
        _from_country(record, out)


_ANONYMITY_FLAGS = (
    ("is_hosting", "is_hosting_provider"),
    ("is_vpn", "is_anonymous_vpn"),
    ("is_public_proxy", "is_public_proxy"),
    ("is_residential_proxy", "is_residential_proxy"),
    ("is_tor", "is_tor_exit_node"),
)


def _from_anonymous_ip(record: _Record, out: _Fields) -> None:
    anonymous = record.get("is_anonymous") is True
    for name, key in _ANONYMITY_FLAGS:
        if record.get(key) is True:
            out[name] = True
            anonymous = True
    if anonymous:
        out["is_anonymous"] = True


def _from_connection_type(record: _Record, out: _Fields) -> None:
    connection_type = _text(record, "connection_type")
    if connection_type:
        out["connection_type"] = connection_type


# Order matters: ASN before ISP and Country before City, so the dedicated database wins.
_EXTRACTORS: tuple[tuple[str, Callable[[_Record, _Fields], None]], ...] = (
    ("asn", _from_asn),
    ("isp", _from_isp),
    ("country", _from_country),
    ("city", _from_city),
    ("anonymous_ip", _from_anonymous_ip),
    ("connection_type", _from_connection_type),
)


class MaxMindGeoIp:
    """The GeoIp port over MaxMind databases.

    ``lookup`` runs on the event loop; ``maybe_reload`` may run in a worker thread. New readers
    and a fresh cache are published together by replacing one reference, so a lookup never
    sees half a swap. Files must be replaced by rename (as geoipupdate does): readers mmap
    them, so rewriting a loaded file in place is unsafe.
    """

    def __init__(self, paths: GeoIpPaths, *, cache_size: int = 65536) -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self._cache_size = cache_size
        self._configured: tuple[tuple[str, Path], ...] = tuple(
            (kind, Path(path))
            for kind in DATABASE_KINDS
            if (path := getattr(paths, kind)) is not None
        )
        self._reload_lock = threading.Lock()
        # Signatures of files that failed to load, so each bad file is reported once.
        self._failed: dict[str, _Signature] = {}
        self._lookup_failures_logged: set[tuple[str, _Signature]] = set()
        # Readers swapped out by the last reload. They are closed one reload later, because
        # a lookup on another thread may still hold the state that referenced them.
        self._retired: list[_Database] = []

        databases: dict[str, _Database] = {}
        try:
            for kind, path in self._configured:
                databases[kind] = self._open_at_startup(kind, path)
        except BaseException:
            for database in databases.values():
                database.reader.close()
            raise
        self._state = _State(MappingProxyType(databases), OrderedDict())
        if databases:
            logger.info("geoip: loaded %s", ", ".join(databases))

    @staticmethod
    def _open_at_startup(kind: str, path: Path) -> _Database:
        if not path.is_file():
            raise GeoIpError(f"geoip setting {kind!r}: database file not found: {path}")
        try:
            return _open_checked(kind, path)
        except Exception as exc:
            raise GeoIpError(
                f"geoip setting {kind!r}: {path} is not a readable MaxMind database "
                f"({type(exc).__name__}: {_redact(str(exc))})"
            ) from exc

    @property
    def loaded(self) -> tuple[str, ...]:
        """The kinds of the databases open now, in DATABASE_KINDS order."""
        return tuple(self._state.databases)

    @property
    def cache_entries(self) -> int:
        """How many answers the cache holds now (for metrics and tests)."""
        return len(self._state.cache)

    def lookup(self, ip: IpAddress) -> IpInfo:
        """Everything the open databases know about ``ip``; never raises for a valid address."""
        ip = _unmap(ip)
        state = self._state
        cache = state.cache
        if self._cache_size:
            # pop + re-insert marks it most recent, and unlike get + move_to_end cannot
            # raise if a lookup on another thread evicts the entry in between.
            cached = cache.pop(ip, None)
            if cached is not None:
                cache[ip] = cached
                return cached

        info = self._resolve(ip, state.databases)
        # A degraded answer is not cached: the next lookup retries the failing database.
        if self._cache_size and not info.degraded:
            cache[ip] = info
            if len(cache) > self._cache_size:
                with contextlib.suppress(KeyError):  # emptied by another thread meanwhile
                    cache.popitem(last=False)
        return info

    def _resolve(self, ip: IpAddress, databases: Mapping[str, _Database]) -> IpInfo:
        prefix, wide_prefix = network_prefixes(ip)
        out: _Fields = {}
        degraded = False
        for kind, extract in _EXTRACTORS:
            database = databases.get(kind)
            if database is None or (ip.version == 6 and database.ip_version == 4):
                continue
            try:
                record = database.reader.get(ip)
            except Exception as exc:
                degraded = True
                self._log_lookup_failure(database, exc)
                continue
            if isinstance(record, dict):
                extract(record, out)
        return IpInfo(
            version=ip.version, prefix=prefix, wide_prefix=wide_prefix, degraded=degraded, **out
        )

    def _log_lookup_failure(self, database: _Database, exc: Exception) -> None:
        key = (database.kind, database.signature)
        if key in self._lookup_failures_logged:
            return
        self._lookup_failures_logged.add(key)
        # Only the exception type: its message may quote the address.
        logger.warning(
            "geoip: %s database at %s failed a lookup (%s); answers from it are degraded",
            database.kind, database.path, type(exc).__name__,
        )

    def maybe_reload(self) -> list[str]:
        """Swaps in every configured file that changed on disk and passes the checks.

        Returns the kinds swapped. A missing or broken file keeps the previous reader.
        """
        with self._reload_lock:
            # Anything retired by the previous reload is no longer referenced by a lookup.
            for database in self._retired:
                database.reader.close()
            self._retired = []

            state = self._state
            databases = dict(state.databases)
            swapped: list[str] = []
            for kind, path in self._configured:
                new = self._load_if_changed(kind, path, databases.get(kind))
                if new is not None:
                    old = databases.get(kind)
                    if old is not None:
                        self._retired.append(old)
                    databases[kind] = new
                    swapped.append(kind)
            if swapped:
                self._state = _State(MappingProxyType(databases), OrderedDict())
                logger.info("geoip: reloaded %s", ", ".join(swapped))
            return swapped

    def _load_if_changed(
        self, kind: str, path: Path, current: _Database | None
    ) -> _Database | None:
        try:
            signature = _signature(path)
        except OSError as exc:
            if self._failed.get(kind) != _MISSING:
                self._failed[kind] = _MISSING
                logger.warning(
                    "geoip: %s database at %s is missing or unreadable (%s); "
                    "keeping the loaded one",
                    kind, path, type(exc).__name__,
                )
            return None
        if current is not None and current.signature == signature:
            self._failed.pop(kind, None)
            return None
        if self._failed.get(kind) == signature:
            return None
        try:
            database = _open_checked(kind, path)
        except Exception as exc:
            self._failed[kind] = signature
            logger.warning(
                "geoip: %s database at %s is not a usable MaxMind database (%s: %s); "
                "keeping the loaded one",
                kind, path, type(exc).__name__, _redact(str(exc)),
            )
            return None
        self._failed.pop(kind, None)
        return database

    def close(self) -> None:
        """Closes every reader; later lookups answer with the prefixes only."""
        with self._reload_lock:
            state = self._state
            self._state = _State(MappingProxyType({}), OrderedDict())
            for database in [*self._retired, *state.databases.values()]:
                database.reader.close()
            self._retired = []
