"""MaxMindGeoIp against real .mmdb files written by geodata: fields, subsets, cache, hot reload."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import logging
import os
import re
import threading
from pathlib import Path

import maxminddb
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ringfence.service.adapters.geoip import (
    DATABASE_KINDS,
    GeoIpError,
    GeoIpPaths,
    MaxMindGeoIp,
    network_prefixes,
)
from ringfence.service.core.model import IpInfo
from ringfence.service.geodata import NetworkRecord, write_geo_databases

LOGGER = "ringfence.service.adapters.geoip"
IP_IN_TEXT = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b|[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{0,4}){2,7}")

V4 = NetworkRecord(
    "203.0.113.0/24", asn=64496, as_org="Example Transit", country="NL", city="Amsterdam",
    isp="Example ISP", connection_type="Corporate", is_hosting=True,
)
V6 = NetworkRecord(
    "2001:db8:100::/48", asn=4200000001, as_org="Six Org", country="JP", city="Tokyo",
    isp="Six ISP", connection_type="Cellular", is_tor=True,
)
# One network per anonymity flag, so each flag is checked on its own.
FLAGS = ("is_hosting", "is_vpn", "is_public_proxy", "is_residential_proxy", "is_tor")
FLAG_RECORDS = [
    NetworkRecord(f"198.51.100.{16 * i}/28", **{flag: True}) for i, flag in enumerate(FLAGS)
]
RECORDS = [V4, V6, *FLAG_RECORDS]

V4_ADDR = ipaddress.ip_address("203.0.113.77")
V6_ADDR = ipaddress.ip_address("2001:db8:100:7::1")
UNKNOWN_V4 = ipaddress.ip_address("192.0.2.1")

V4_INFO = IpInfo(
    version=4, prefix="203.0.113.0/24", wide_prefix="203.0.0.0/16", asn=64496,
    as_org="Example Transit", country="NL", city="Amsterdam", isp="Example ISP",
    connection_type="Corporate", is_hosting=True, is_anonymous=True,
)
V6_INFO = IpInfo(
    version=6, prefix="2001:db8:100:7::/64", wide_prefix="2001:db8:100::/48", asn=4200000001,
    as_org="Six Org", country="JP", city="Tokyo", isp="Six ISP", connection_type="Cellular",
    is_tor=True, is_anonymous=True,
)

# Which IpInfo fields each database kind fills.
OWNED = {
    "asn": {"asn", "as_org"},
    "isp": {"isp", "asn", "as_org"},
    "country": {"country"},
    "city": {"city", "country"},
    "anonymous_ip": {*FLAGS, "is_anonymous"},
    "connection_type": {"connection_type"},
}


@pytest.fixture(scope="module")
def full_paths(tmp_path_factory: pytest.TempPathFactory) -> GeoIpPaths:
    return write_geo_databases(RECORDS, tmp_path_factory.mktemp("geo"))


@pytest.fixture
def geo(full_paths: GeoIpPaths):
    g = MaxMindGeoIp(full_paths)
    yield g
    g.close()


def _only(info: IpInfo, kept: set[str]) -> IpInfo:
    """``info`` with every enrichment field not in ``kept`` reset to its default."""
    reset = {
        f.name: f.default
        for f in dataclasses.fields(IpInfo)
        if f.name not in {"version", "prefix", "wide_prefix", "degraded", *kept}
    }
    return dataclasses.replace(info, **reset)


# --- network_prefixes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.77", ("203.0.113.0/24", "203.0.0.0/16")),
        ("0.0.0.0", ("0.0.0.0/24", "0.0.0.0/16")),
        ("255.255.255.255", ("255.255.255.0/24", "255.255.0.0/16")),
        ("2001:db8:abcd:12:34::1", ("2001:db8:abcd:12::/64", "2001:db8:abcd::/48")),
        ("::ffff:203.0.113.77", ("203.0.113.0/24", "203.0.0.0/16")),
    ],
)
def test_network_prefixes(address: str, expected: tuple[str, str]) -> None:
    assert network_prefixes(ipaddress.ip_address(address)) == expected


@given(st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)))
def test_network_prefixes_contain_the_address(ip) -> None:
    prefix, wide = (ipaddress.ip_network(p) for p in network_prefixes(ip))
    plain = ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip
    assert plain in prefix
    assert prefix.subnet_of(wide)
    assert (prefix.prefixlen, wide.prefixlen) == ((24, 16) if plain.version == 4 else (64, 48))


# --- lookups -------------------------------------------------------------------------------


def test_ipv4_lookup_fills_every_field(geo: MaxMindGeoIp) -> None:
    info = geo.lookup(V4_ADDR)
    assert info == V4_INFO
    assert type(info.asn) is int


def test_ipv6_lookup_fills_every_field(geo: MaxMindGeoIp) -> None:
    assert geo.lookup(V6_ADDR) == V6_INFO


def test_ipv4_mapped_address_is_looked_up_as_ipv4(geo: MaxMindGeoIp) -> None:
    assert geo.lookup(ipaddress.ip_address("::ffff:203.0.113.77")) == V4_INFO


@pytest.mark.parametrize(("flag", "record"), list(zip(FLAGS, FLAG_RECORDS, strict=True)))
def test_each_anonymity_flag_maps_to_its_field(geo: MaxMindGeoIp, flag: str, record) -> None:
    info = geo.lookup(ipaddress.ip_network(record.cidr)[1])
    assert {f for f in FLAGS if getattr(info, f)} == {flag}
    assert info.is_anonymous and info.anonymized


def test_unknown_address_gets_prefixes_only(geo: MaxMindGeoIp) -> None:
    assert geo.lookup(UNKNOWN_V4) == IpInfo(
        version=4, prefix="192.0.2.0/24", wide_prefix="192.0.0.0/16"
    )


SUBSETS = [
    frozenset(c) for n in range(len(DATABASE_KINDS) + 1)
    for c in itertools.combinations(DATABASE_KINDS, n)
]


@pytest.mark.parametrize("kinds", SUBSETS, ids=lambda k: "+".join(sorted(k)) or "none")
def test_each_subset_of_databases_fills_its_own_fields(
    full_paths: GeoIpPaths, kinds: frozenset[str]
) -> None:
    paths = GeoIpPaths(**{k: getattr(full_paths, k) for k in kinds})
    g = MaxMindGeoIp(paths)
    try:
        assert set(g.loaded) == kinds
        kept = set().union(*(OWNED[k] for k in kinds))
        assert g.lookup(V4_ADDR) == _only(V4_INFO, kept)
        assert g.lookup(V6_ADDR) == _only(V6_INFO, kept)
    finally:
        g.close()


def test_asn_database_wins_over_isp_and_isp_fills_in_without_it(tmp_path: Path) -> None:
    asn_only = write_geo_databases(
        [NetworkRecord("203.0.113.0/24", asn=1, as_org="From ASN")], tmp_path / "a",
        kinds=["asn"],
    )
    isp_only = write_geo_databases(
        [NetworkRecord("203.0.113.0/24", asn=2, as_org="From ISP", isp="Carrier")],
        tmp_path / "b", kinds=["isp"],
    )
    both = MaxMindGeoIp(GeoIpPaths(asn=asn_only.asn, isp=isp_only.isp))
    isp = MaxMindGeoIp(GeoIpPaths(isp=isp_only.isp))
    try:
        got = both.lookup(V4_ADDR)
        assert (got.asn, got.as_org, got.isp) == (1, "From ASN", "Carrier")
        got = isp.lookup(V4_ADDR)
        assert (got.asn, got.as_org, got.isp) == (2, "From ISP", "Carrier")
    finally:
        both.close()
        isp.close()


def test_no_databases_gives_prefixes_and_is_not_degraded() -> None:
    g = MaxMindGeoIp(GeoIpPaths())
    assert g.loaded == ()
    assert g.lookup(V6_ADDR) == IpInfo(
        version=6, prefix="2001:db8:100:7::/64", wide_prefix="2001:db8:100::/48"
    )
    assert g.maybe_reload() == []


def _corrupt_data_section(path: Path) -> None:
    """Keeps the tree and metadata (so the file opens and the smoke test passes) but makes
    every stored record undecodable."""
    data = bytearray(path.read_bytes())
    with maxminddb.open_database(path) as reader:
        meta = reader.metadata()
    start = meta.node_count * meta.record_size // 4 + 16
    end = data.rfind(b"\xab\xcd\xefMaxMind.com")
    data[start:end] = b"\xff" * (end - start)
    path.write_bytes(data)


def test_a_failing_database_degrades_the_answer_without_raising(
    tmp_path: Path, full_paths: GeoIpPaths, caplog: pytest.LogCaptureFixture
) -> None:
    broken = write_geo_databases(RECORDS, tmp_path, kinds=["asn"]).asn
    assert broken is not None
    _corrupt_data_section(broken)
    g = MaxMindGeoIp(dataclasses.replace(full_paths, asn=broken))
    try:
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            info = g.lookup(V4_ADDR)
            again = g.lookup(V4_ADDR)
        # The ISP database still supplies the ASN; everything else is there too.
        assert info == dataclasses.replace(V4_INFO, degraded=True)
        assert again == info and again is not info  # degraded answers are not cached
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "asn" in warnings[0].getMessage()
        assert not IP_IN_TEXT.search(warnings[0].getMessage())
    finally:
        g.close()


# --- cache ---------------------------------------------------------------------------------


def test_cache_is_bounded_lru(full_paths: GeoIpPaths) -> None:
    g = MaxMindGeoIp(full_paths, cache_size=3)
    try:
        a, b, c, d = (ipaddress.ip_address(f"203.0.113.{i}") for i in range(1, 5))
        first_a = g.lookup(a)
        g.lookup(b)
        g.lookup(c)
        assert g.lookup(a) is first_a  # a hit, and now the most recent
        first_b_again = g.lookup(b)
        g.lookup(d)  # evicts c, the least recently used
        assert g.cache_entries == 3
        assert g.lookup(a) is first_a
        assert g.lookup(b) is first_b_again
        for i in range(50):
            g.lookup(ipaddress.ip_address(f"198.51.100.{i}"))
            assert g.cache_entries <= 3
    finally:
        g.close()


def test_cache_size_zero_disables_cache(full_paths: GeoIpPaths) -> None:
    g = MaxMindGeoIp(full_paths, cache_size=0)
    try:
        first = g.lookup(V4_ADDR)
        second = g.lookup(V4_ADDR)
        assert first == second and first is not second
        assert g.cache_entries == 0
    finally:
        g.close()


# --- hot reload ----------------------------------------------------------------------------


def _new_asn_file(tmp_path: Path, name: str, asn: int) -> Path:
    path = write_geo_databases(
        [NetworkRecord("203.0.113.0/24", asn=asn, as_org=f"AS{asn}")],
        tmp_path / name, kinds=["asn"],
    ).asn
    assert path is not None
    return path


@pytest.fixture
def live(tmp_path: Path):
    """A geoip over one ASN database at a fixed path that tests replace."""
    path = tmp_path / "live" / "GeoLite2-ASN.mmdb"
    path.parent.mkdir()
    os.replace(_new_asn_file(tmp_path, "v1", 1), path)
    g = MaxMindGeoIp(GeoIpPaths(asn=path))
    yield g, path
    g.close()


def _install(tmp_path: Path, content: bytes, target: Path) -> None:
    staged = tmp_path / "staged.bin"
    staged.write_bytes(content)
    os.replace(staged, target)


def test_reload_swaps_a_replaced_file_and_clears_the_cache(live, tmp_path: Path) -> None:
    g, path = live
    assert g.maybe_reload() == []  # nothing changed yet
    assert g.lookup(V4_ADDR).asn == 1
    assert g.cache_entries == 1

    os.replace(_new_asn_file(tmp_path, "v2", 2), path)
    assert g.maybe_reload() == ["asn"]
    assert g.cache_entries == 0
    assert g.lookup(V4_ADDR).asn == 2
    assert g.maybe_reload() == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "corrupt_data", "missing"])
def test_bad_replacement_keeps_old_reader_and_warns_once(
    live, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    g, path = live
    assert g.lookup(V4_ADDR).asn == 1
    if damage == "garbage":
        _install(tmp_path, os.urandom(4096), path)
    elif damage == "truncated":
        good = _new_asn_file(tmp_path, "v2", 2).read_bytes()
        _install(tmp_path, good[: len(good) // 2], path)
    elif damage == "corrupt_data":
        # Opens fine, but the reload's test lookup of 1.1.1.1 hits a broken record, and the
        # reader's error message quotes that address.
        bad = write_geo_databases(
            [NetworkRecord("1.1.1.0/24", asn=13335)], tmp_path / "bad", kinds=["asn"]
        ).asn
        assert bad is not None
        _corrupt_data_section(bad)
        os.replace(bad, path)
    else:
        path.unlink()

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert g.maybe_reload() == []
        assert g.maybe_reload() == []  # the same bad file is not reported again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "asn" in warnings[0] and str(path) in warnings[0]
    assert not IP_IN_TEXT.search(warnings[0])
    assert g.lookup(V4_ADDR) == dataclasses.replace(
        _only(V4_INFO, set()), asn=1, as_org="AS1"
    )
    assert g.loaded == ("asn",)

    os.replace(_new_asn_file(tmp_path, "v3", 3), path)
    assert g.maybe_reload() == ["asn"]
    assert g.lookup(V4_ADDR).asn == 3


def test_missing_database_at_startup_names_setting_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "GeoIP2-City.mmdb"
    with pytest.raises(GeoIpError) as err:
        MaxMindGeoIp(GeoIpPaths(city=missing))
    assert str(missing) in str(err.value)
    assert "city" in str(err.value)


def test_garbage_database_at_startup_raises(tmp_path: Path, full_paths: GeoIpPaths) -> None:
    garbage = tmp_path / "GeoLite2-ASN.mmdb"
    garbage.write_bytes(b"not a maxmind database" * 100)
    with pytest.raises(GeoIpError, match="asn") as err:
        MaxMindGeoIp(dataclasses.replace(full_paths, asn=garbage))
    assert str(garbage) in str(err.value)


def test_lookups_stay_consistent_while_another_thread_reloads(live, tmp_path: Path) -> None:
    g, path = live
    versions = [_new_asn_file(tmp_path, f"w{i}", 10 + i) for i in range(20)]
    stop = threading.Event()
    seen: set[int | None] = set()
    failures: list[BaseException] = []

    def look() -> None:
        try:
            while not stop.is_set():
                info = g.lookup(V4_ADDR)
                assert not info.degraded
                seen.add(info.asn)
        except BaseException as exc:
            failures.append(exc)

    worker = threading.Thread(target=look)
    worker.start()
    try:
        for version in versions:
            os.replace(version, path)
            assert g.maybe_reload() == ["asn"]
    finally:
        stop.set()
        worker.join()
    assert failures == []
    assert seen <= {1, *range(10, 30)}
    assert g.lookup(V4_ADDR).asn == 29


# --- geodata -------------------------------------------------------------------------------


def test_written_files_carry_maxmind_names_types_and_only_relevant_networks(
    full_paths: GeoIpPaths,
) -> None:
    expected_types = {
        "asn": "GeoLite2-ASN", "country": "GeoIP2-Country", "city": "GeoIP2-City",
        "anonymous_ip": "GeoIP2-Anonymous-IP", "isp": "GeoIP2-ISP",
        "connection_type": "GeoIP2-Connection-Type",
    }
    for kind, database_type in expected_types.items():
        path = getattr(full_paths, kind)
        assert path.name == f"{database_type}.mmdb"
        with maxminddb.open_database(path) as reader:
            assert reader.metadata().database_type == database_type
            assert reader.metadata().ip_version == 6
    with maxminddb.open_database(full_paths.anonymous_ip) as reader:
        networks = {str(n) for n, _ in reader}
    # The flag networks plus V4 (hosting) and V6 (Tor); nothing without a flag.
    assert len(networks) == len(FLAG_RECORDS) + 2
    assert not [p for p in full_paths.asn.parent.iterdir() if p.suffix == ".tmp"]


def test_more_specific_network_wins_whatever_the_input_order(tmp_path: Path) -> None:
    paths = write_geo_databases(
        [NetworkRecord("10.1.0.0/16", asn=2), NetworkRecord("10.0.0.0/8", asn=1)],
        tmp_path, kinds=["asn"],
    )
    g = MaxMindGeoIp(paths)
    try:
        assert g.lookup(ipaddress.ip_address("10.1.2.3")).asn == 2
        assert g.lookup(ipaddress.ip_address("10.2.0.1")).asn == 1
    finally:
        g.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cidr": "not-a-network"}, "cidr"),
        ({"cidr": "10.0.0.0/8", "asn": -1}, "asn"),
        ({"cidr": "10.0.0.0/8", "connection_type": "Fibre"}, "connection_type"),
    ],
)
def test_invalid_network_record_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"NetworkRecord.{field}"):
        NetworkRecord(**kwargs)


def test_unknown_kind_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kinds"):
        write_geo_databases([V4], tmp_path, kinds=["asn", "weather"])


def test_written_databases_are_readable_by_other_users(tmp_path):
    paths = write_geo_databases([NetworkRecord(cidr="192.0.2.0/24", asn=64500)], tmp_path,
                                kinds=("asn",))
    assert paths.asn.stat().st_mode & 0o777 == 0o644
