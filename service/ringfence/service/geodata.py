"""Writes MaxMind-format .mmdb databases from a list of networks, for tests and the traffic
simulator: same file names, record layouts and database types as MaxMind's own."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netaddr
from mmdb_writer import MmdbU32, MMDBWriter

from ringfence.service.adapters.geoip import DATABASE_KINDS, GeoIpPaths

__all__ = ["ALL_KINDS", "CONNECTION_TYPES", "NetworkRecord", "write_geo_databases"]

ALL_KINDS: tuple[str, ...] = DATABASE_KINDS
"""Every kind write_geo_databases can write, named as the GeoIpPaths fields."""

CONNECTION_TYPES = frozenset({"Cable/DSL", "Cellular", "Corporate", "Satellite", "Dialup"})
"""The values MaxMind's Connection-Type database uses."""

_DATABASE_TYPES: dict[str, str] = {
    "asn": "GeoLite2-ASN",
    "country": "GeoIP2-Country",
    "city": "GeoIP2-City",
    "anonymous_ip": "GeoIP2-Anonymous-IP",
    "isp": "GeoIP2-ISP",
    "connection_type": "GeoIP2-Connection-Type",
}

_UINT32_MAX = 2**32 - 1


@dataclass(frozen=True)
class NetworkRecord:
    """What every database says about one network; empty fields are left out of the files."""

    cidr: str
    """The network, IPv4 or IPv6 ("203.0.113.0/24", "2001:db8::/48"); host bits are ignored."""
    asn: int | None = None
    as_org: str = ""
    country: str = ""
    """ISO 3166-1 alpha-2 code."""
    city: str = ""
    """English city name."""
    isp: str = ""
    connection_type: str = ""
    """One of CONNECTION_TYPES, or empty."""
    is_hosting: bool = False
    is_vpn: bool = False
    is_public_proxy: bool = False
    is_residential_proxy: bool = False
    is_tor: bool = False

    def __post_init__(self) -> None:
        try:
            network = ipaddress.ip_network(self.cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"NetworkRecord.cidr: {self.cidr!r} is not an IP network") from exc
        if network.version == 6 and network.prefixlen == 0:
            # mmdb_writer cannot insert the whole address space as one network.
            raise ValueError("NetworkRecord.cidr: ::/0 is not supported; split it")
        if self.asn is not None and not 0 <= self.asn <= _UINT32_MAX:
            raise ValueError(f"NetworkRecord.asn: {self.asn} is not a 32-bit AS number")
        if self.connection_type and self.connection_type not in CONNECTION_TYPES:
            raise ValueError(
                f"NetworkRecord.connection_type: {self.connection_type!r} is not one of "
                f"{sorted(CONNECTION_TYPES)}"
            )

    @property
    def is_anonymous(self) -> bool:
        """MaxMind's is_anonymous: any of the anonymity flags."""
        return (self.is_hosting or self.is_vpn or self.is_public_proxy
                or self.is_residential_proxy or self.is_tor)

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network(self.cidr, strict=False)


_Data = dict[str, Any]


def _asn_data(record: NetworkRecord) -> _Data:
    data: _Data = {}
    if record.asn is not None:
        # Typed explicitly: mmdb_writer would store small numbers as uint16, MaxMind uses uint32.
        data["autonomous_system_number"] = MmdbU32(record.asn)
        if record.as_org:
            data["autonomous_system_organization"] = record.as_org
    return data


def _country_data(record: NetworkRecord) -> _Data:
    return {"country": {"iso_code": record.country}} if record.country else {}


def _city_data(record: NetworkRecord) -> _Data:
    data = _country_data(record)
    if record.city:
        data["city"] = {"names": {"en": record.city}}
    return data


def _anonymous_ip_data(record: NetworkRecord) -> _Data:
    if not record.is_anonymous:
        return {}
    flags = {
        "is_anonymous": True,
        "is_anonymous_vpn": record.is_vpn,
        "is_hosting_provider": record.is_hosting,
        "is_public_proxy": record.is_public_proxy,
        "is_residential_proxy": record.is_residential_proxy,
        "is_tor_exit_node": record.is_tor,
    }
    # MaxMind stores only the flags that are true.
    return {key: True for key, value in flags.items() if value}


def _isp_data(record: NetworkRecord) -> _Data:
    data = _asn_data(record)
    if record.isp:
        data["isp"] = record.isp
        data["organization"] = record.isp
    return data


def _connection_type_data(record: NetworkRecord) -> _Data:
    return {"connection_type": record.connection_type} if record.connection_type else {}


_BUILDERS: dict[str, Callable[[NetworkRecord], _Data]] = {
    "asn": _asn_data,
    "country": _country_data,
    "city": _city_data,
    "anonymous_ip": _anonymous_ip_data,
    "isp": _isp_data,
    "connection_type": _connection_type_data,
}


def _tree_prefixlen(item: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Any]) -> int:
    network = item[0]
    # IPv4 networks sit under ::/96 in the IPv6 tree.
    return network.prefixlen + (96 if network.version == 4 else 0)


def write_geo_databases(
    records: Iterable[NetworkRecord],
    directory: Path,
    *,
    kinds: Collection[str] = ALL_KINDS,
) -> GeoIpPaths:
    """Writes one database per kind into ``directory`` (each replaced atomically) and returns
    their paths. A kind's database holds only the networks that have data for it; for
    overlapping networks the more specific one wins, as in MaxMind's databases."""
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        raise ValueError(f"kinds: unknown database kinds {unknown}; known: {list(ALL_KINDS)}")
    # mmdb_writer overwrites any subnet already inserted under a network, so insert the
    # widest networks first. sorted() is stable: among equal networks the last record wins.
    ordered = sorted(((record.network, record) for record in records), key=_tree_prefixlen)
    networks = [(netaddr.IPSet([str(network)]), record) for network, record in ordered]

    directory.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for kind in ALL_KINDS:
        if kind not in kinds:
            continue
        database_type = _DATABASE_TYPES[kind]
        writer = MMDBWriter(
            ip_version=6,
            ipv4_compatible=True,
            database_type=database_type,
            languages=["en"],
            description=f"ringfence synthetic {database_type} database",
        )
        build = _BUILDERS[kind]
        for network, record in networks:
            data = build(record)
            if data:
                writer.insert_network(network, data)
        path = directory / f"{database_type}.mmdb"
        _write_atomically(writer, path)
        written[kind] = path
    return GeoIpPaths(**written)


def _write_atomically(writer: MMDBWriter, path: Path) -> None:
    # A reader polling the directory must see the old file or the whole new one, never half.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer.to_db_file(tmp_name)
        os.chmod(tmp_name, 0o644)  # mkstemp makes 0600; a server may run as another user
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
