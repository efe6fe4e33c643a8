"""The simulator's address plan: synthetic ISPs, carriers, companies, clouds and VPNs, the
addresses each population draws from, and the matching NetworkRecords for the .mmdb set.

Every range is carved from space that belongs to nobody (10.0.0.0/8 for broadband and company
NATs, 100.64.0.0/10 for carrier CGNAT, 198.18.0.0/15 for clouds and VPNs, 2001:db8::/32 for
IPv6) and every AS number is from the private-use range, so no real network is implied. The
addresses are only ever looked up in the written databases, never contacted.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass

from ringfence.service.evaluation.catalog import COUNTRIES
from ringfence.service.geodata import NetworkRecord

_TEN = int(ipaddress.IPv4Address("10.0.0.0"))
_BUSINESS = int(ipaddress.IPv4Address("10.192.0.0"))
_CGNAT = int(ipaddress.IPv4Address("100.64.0.0"))
_CLOUD = int(ipaddress.IPv4Address("198.18.0.0"))
_VPN = int(ipaddress.IPv4Address("198.19.0.0"))
_V6_DOC = int(ipaddress.IPv6Address("2001:db8::"))

ISPS_PER_COUNTRY = 3
CARRIERS_PER_COUNTRY = 2
ISP_PREFIXES = 1024  # /24s per broadband ISP (a /14)
CARRIER_PREFIXES = 512  # /24s per carrier (a /15)
BUSINESS_PREFIXES = 1024  # company /24s per country (a /14)
CLOUDS = (("Synthetic Cloud A", "US"), ("Synthetic Cloud B", "DE"),
          ("Synthetic Cloud C", "SG"), ("Synthetic Cloud D", "US"))
CLOUD_PREFIXES = 64  # /24s per cloud (a /18)
VPN_PROVIDERS = ("Synthetic VPN One", "Synthetic VPN Two")
VPN_EXIT_COUNTRIES = ("US", "GB", "DE", "NL", "SG", "JP", "CA", "FR")
# Residential-proxy exits (subscribers running proxyware) live in /24s 128..255 of each
# broadband ISP (one eighth of its subscribers); the Anonymous-IP database knows the first
# half of that range (real proxy coverage is partial). Ranges, not scattered /24s, keep the
# .mmdb set small and quick to write.
EXIT_FIRST = 128
EXIT_PREFIXES = 128
FLAGGED_PREFIXES = 64  # /24s 128..191: a /18

_ASN_ISP = 64512
_ASN_CARRIER = 64700
_ASN_BUSINESS = 64800
_ASN_CLOUD = 64900
_ASN_VPN = 64950


def v4(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def v6(value: int) -> str:
    return str(ipaddress.IPv6Address(value))


@dataclass(frozen=True, slots=True)
class Carrier:
    """A mobile carrier: CGNAT pool of ``pool`` /24s and an IPv6 /48 (a /64 per phone)."""

    index: int
    country: str
    pool: int

    @property
    def v4_base(self) -> int:
        return _CGNAT + self.index * CARRIER_PREFIXES * 256

    @property
    def v6_base(self) -> int:
        return _V6_DOC | ((0x100 + self.index) << 80)


class AddressPlan:
    """Where every population's addresses come from. ``mobile_users`` sizes each carrier's
    CGNAT pool so the accounts per /24 per day stay near a realistic few dozen at any scale."""

    def __init__(self, mobile_users: float) -> None:
        self.country_index = {c.code: i for i, c in enumerate(COUNTRIES)}
        self.carriers: list[Carrier] = []
        for i, country in enumerate(COUNTRIES):
            for j in range(CARRIERS_PER_COUNTRY):
                users = mobile_users * country.share / CARRIERS_PER_COUNTRY
                # ~3 sessions a day, each on a fresh CGNAT address: aim at ~25 accounts per
                # /24 per day.
                pool = max(2, min(CARRIER_PREFIXES, round(users * 3 / 25)))
                self.carriers.append(Carrier(i * CARRIERS_PER_COUNTRY + j, country.code, pool))
        self._companies = [0] * len(COUNTRIES)

    # Broadband -------------------------------------------------------------------------
    def _isp_base(self, country: str, isp: int) -> int:
        return _TEN + (self.country_index[country] * ISPS_PER_COUNTRY + isp) * ISP_PREFIXES * 256

    def home_prefix(self, rng: random.Random, country: str) -> int:
        """A household's /24 (as the integer of its first address) at a random ISP."""
        base = self._isp_base(country, rng.randrange(ISPS_PER_COUNTRY))
        return base + rng.randrange(ISP_PREFIXES) * 256

    def home_v6(self, rng: random.Random, country: str) -> int:
        """A household's /64 (as an integer) at a random ISP of the country."""
        isp = self.country_index[country] * ISPS_PER_COUNTRY + rng.randrange(ISPS_PER_COUNTRY)
        return _V6_DOC | ((0x200 + isp) << 80) | (rng.getrandbits(16) << 64)

    def exit_ip(self, rng: random.Random, country: str) -> str:
        """A residential-proxy exit: a subscriber address in an exit /24 of the country."""
        base = self._isp_base(country, rng.randrange(ISPS_PER_COUNTRY))
        prefix = EXIT_FIRST + rng.randrange(EXIT_PREFIXES)
        return v4(base + prefix * 256 + rng.randrange(1, 255))

    # Mobile ---------------------------------------------------------------------------
    def carrier(self, rng: random.Random, country: str) -> Carrier:
        return self.carriers[self.country_index[country] * CARRIERS_PER_COUNTRY
                             + rng.randrange(CARRIERS_PER_COUNTRY)]

    @staticmethod
    def cgnat_ip(rng: random.Random, carrier: Carrier) -> str:
        return v4(carrier.v4_base + rng.randrange(carrier.pool) * 256 + rng.randrange(1, 255))

    @staticmethod
    def phone_v6(rng: random.Random, carrier: Carrier) -> int:
        return carrier.v6_base | (rng.getrandbits(16) << 64)

    # Companies, clouds, VPNs ------------------------------------------------------------
    def company_prefix(self, country: str) -> int:
        """The next free company /24 in the country's business block."""
        i = self.country_index[country]
        n = self._companies[i] % BUSINESS_PREFIXES
        self._companies[i] += 1
        return _BUSINESS + (i * BUSINESS_PREFIXES + n) * 256

    @staticmethod
    def cloud_prefix(rng: random.Random, cloud: int | None = None) -> int:
        c = rng.randrange(len(CLOUDS)) if cloud is None else cloud
        return _CLOUD + (c * CLOUD_PREFIXES + rng.randrange(CLOUD_PREFIXES)) * 256

    @staticmethod
    def vpn_exit(rng: random.Random, provider: int, country: str) -> str:
        k = VPN_EXIT_COUNTRIES.index(country)
        # Each provider has 16 /24s per exit country and few servers in each.
        prefix = (provider * 128 + k * 16 + rng.randrange(16)) * 256
        return v4(_VPN + prefix + rng.randrange(1, 9))

    # The .mmdb contents ---------------------------------------------------------------
    def records(self) -> list[NetworkRecord]:
        out: list[NetworkRecord] = []
        for i, country in enumerate(COUNTRIES):
            for j in range(ISPS_PER_COUNTRY):
                isp = i * ISPS_PER_COUNTRY + j
                name = f"Synthetic Broadband {country.code}-{j + 1}"
                base = self._isp_base(country.code, j)
                common = {"asn": _ASN_ISP + isp, "as_org": name, "isp": name,
                          "country": country.code, "connection_type": "Cable/DSL"}
                out.append(NetworkRecord(f"{v4(base)}/14", **common))
                out.append(NetworkRecord(f"{v6(_V6_DOC | ((0x200 + isp) << 80))}/48", **common))
                flagged_len = 24 - (FLAGGED_PREFIXES.bit_length() - 1)
                out.append(NetworkRecord(f"{v4(base + EXIT_FIRST * 256)}/{flagged_len}",
                                         **common, is_residential_proxy=True))
            name = f"Synthetic Business Fiber {country.code}"
            out.append(NetworkRecord(
                f"{v4(_BUSINESS + i * BUSINESS_PREFIXES * 256)}/14", asn=_ASN_BUSINESS + i,
                as_org=name, isp=name, country=country.code, connection_type="Corporate"))
        for carrier in self.carriers:
            name = f"Synthetic Mobile {carrier.country}-{carrier.index % CARRIERS_PER_COUNTRY + 1}"
            common = {"asn": _ASN_CARRIER + carrier.index, "as_org": name, "isp": name,
                      "country": carrier.country, "connection_type": "Cellular"}
            out.append(NetworkRecord(f"{v4(carrier.v4_base)}/15", **common))
            out.append(NetworkRecord(f"{v6(carrier.v6_base)}/48", **common))
        for c, (name, country) in enumerate(CLOUDS):
            out.append(NetworkRecord(
                f"{v4(_CLOUD + c * CLOUD_PREFIXES * 256)}/18", asn=_ASN_CLOUD + c, as_org=name,
                isp=name, country=country, is_hosting=True))
        for p, name in enumerate(VPN_PROVIDERS):
            for k, country in enumerate(VPN_EXIT_COUNTRIES):
                out.append(NetworkRecord(
                    f"{v4(_VPN + (p * 128 + k * 16) * 256)}/20", asn=_ASN_VPN + p, as_org=name,
                    isp=name, country=country, is_hosting=True, is_vpn=True))
        return out
