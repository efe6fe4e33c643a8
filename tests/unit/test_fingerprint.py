from ringfence.service.core.fingerprint import (
    FP_BROWSER_UA_SCRIPT_TLS,
    FP_BROWSER_UA_WITH_SDK,
    FP_HEADERS_CONTRADICT_UA,
    FP_MISSING_BROWSER_HEADERS,
    FP_NO_USER_AGENT,
    FingerprintAnalyzer,
)
from ringfence.service.core.identity import Hasher
from ringfence.service.core.model import ClientKind, Fingerprint

CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/{v} Safari/537.36")
FIREFOX_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
CHROME_JA4 = "t13d1516h2_8daaf6152771_02713d6af862"
REQUESTS_JA4 = "t13d181000_85036bcba153_d41ae481755e"
CHROME_HEADERS = ("sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform", "user-agent", "accept",
                  "accept-encoding", "accept-language")
FIREFOX_HEADERS = ("user-agent", "accept", "accept-language", "accept-encoding")

analyzer = FingerprintAnalyzer(Hasher(bytes(32)))


def test_consistent_chrome_has_no_findings_and_a_stable_key():
    fp = Fingerprint(ja4=CHROME_JA4, user_agent=CHROME_UA.format(v="120.0.6099.109"),
                     header_names=CHROME_HEADERS)
    a = analyzer.analyze(fp)
    assert a.client_kind is ClientKind.BROWSER
    assert a.inconsistencies == ()
    assert (a.ua_family, a.ua_major, a.os_family) == ("Chrome", "120", "Windows")
    # a patch release of the same browser is the same device
    b = analyzer.analyze(Fingerprint(ja4=CHROME_JA4, user_agent=CHROME_UA.format(v="120.0.1.2"),
                                     header_names=CHROME_HEADERS))
    assert a.device_key == b.device_key
    assert not a.has_device_id and a.device_key == a.stack_key


def test_device_id_defines_the_device_but_not_the_stack():
    base = Fingerprint(ja4=CHROME_JA4, user_agent=CHROME_UA.format(v="120.0.0.0"))
    one = analyzer.analyze(Fingerprint(**{**_fields(base), "device_id": "dev-1"}))
    two = analyzer.analyze(Fingerprint(**{**_fields(base), "device_id": "dev-2"}))
    assert one.has_device_id
    assert one.device_key != two.device_key
    assert one.stack_key == two.stack_key
    assert "dev-1" not in one.device_key


def test_keys_depend_on_the_secret():
    fp = Fingerprint(device_id="dev-1")
    other = FingerprintAnalyzer(Hasher(bytes(range(1, 33))))
    assert analyzer.analyze(fp).device_key != other.analyze(fp).device_key


def test_browser_ua_on_script_tls_stack():
    a = analyzer.analyze(Fingerprint(ja4=REQUESTS_JA4, user_agent=CHROME_UA.format(v="120.0"),
                                     header_names=CHROME_HEADERS))
    assert FP_BROWSER_UA_SCRIPT_TLS in a.inconsistencies


def test_browser_ua_with_sdk_and_missing_headers():
    a = analyzer.analyze(Fingerprint(user_agent=FIREFOX_UA, sdk_name="openai-python",
                                     header_names=("user-agent", "content-type")))
    assert a.client_kind is ClientKind.SDK
    assert FP_BROWSER_UA_WITH_SDK in a.inconsistencies
    assert FP_MISSING_BROWSER_HEADERS in a.inconsistencies


def test_client_hints_must_match_the_claimed_browser():
    chrome_without_hints = analyzer.analyze(Fingerprint(
        user_agent=CHROME_UA.format(v="120.0"), header_names=FIREFOX_HEADERS))
    firefox_with_hints = analyzer.analyze(Fingerprint(
        user_agent=FIREFOX_UA, header_names=CHROME_HEADERS))
    firefox_ok = analyzer.analyze(Fingerprint(user_agent=FIREFOX_UA,
                                              header_names=FIREFOX_HEADERS))
    assert FP_HEADERS_CONTRADICT_UA in chrome_without_hints.inconsistencies
    assert FP_HEADERS_CONTRADICT_UA in firefox_with_hints.inconsistencies
    assert firefox_ok.inconsistencies == ()


def test_scripts_are_not_held_to_browser_rules():
    a = analyzer.analyze(Fingerprint(ja4=REQUESTS_JA4, user_agent="python-requests/2.32.3",
                                     header_names=("user-agent", "accept")))
    assert a.client_kind is ClientKind.SCRIPT
    assert a.inconsistencies == ()
    assert FP_NO_USER_AGENT in analyzer.analyze(Fingerprint(ja4=REQUESTS_JA4)).inconsistencies


def _fields(fp: Fingerprint) -> dict:
    return {name: getattr(fp, name) for name in fp.__dataclass_fields__}
