"""Licence normalisation, policies and credit lines."""

from __future__ import annotations

import pytest

from tunekit.corpus.license import (
    FAMILIES,
    HF_LICENSES,
    POLICIES,
    attribution_text,
    combined_license,
    hf_license_id,
    license_allowed,
    license_name,
    normalize_license,
)
from tunekit.errors import ConfigError

# raw string -> (family, spdx, version, jurisdiction, canonical deed URL)
CASES = [
    # SPDX ids, any case
    ("CC-BY-4.0", "by", "CC-BY-4.0", "4.0", None, "https://creativecommons.org/licenses/by/4.0/"),
    ("cc-by-sa-3.0", "by-sa", "CC-BY-SA-3.0", "3.0", None, "https://creativecommons.org/licenses/by-sa/3.0/"),
    ("CC0-1.0", "cc0", "CC0-1.0", "1.0", None, "https://creativecommons.org/publicdomain/zero/1.0/"),
    ("CC-BY-NC-SA-3.0-DE", "by-nc-sa", "CC-BY-NC-SA-3.0", "3.0", "de",
     "https://creativecommons.org/licenses/by-nc-sa/3.0/de/"),
    ("CC-PDM-1.0", "pd", "CC-PDM-1.0", "1.0", None, "https://creativecommons.org/publicdomain/mark/1.0/"),
    # Creative Commons URLs
    ("http://creativecommons.org/licenses/by-nc/3.0/us/", "by-nc", "CC-BY-NC-3.0", "3.0", "us",
     "https://creativecommons.org/licenses/by-nc/3.0/us/"),
    ("https://www.creativecommons.org/licenses/by/4.0/legalcode", "by", "CC-BY-4.0", "4.0", None,
     "https://creativecommons.org/licenses/by/4.0/"),
    ("creativecommons.org/licenses/by-nc-nd/4.0/legalcode.de", "by-nc-nd", "CC-BY-NC-ND-4.0", "4.0", None,
     "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
    ("https://creativecommons.org/licenses/by-sa/4.0/deed.en", "by-sa", "CC-BY-SA-4.0", "4.0", None,
     "https://creativecommons.org/licenses/by-sa/4.0/"),
    ("http://creativecommons.org/licenses/by-nd/2.5", "by-nd", "CC-BY-ND-2.5", "2.5", None,
     "https://creativecommons.org/licenses/by-nd/2.5/"),
    ("https://creativecommons.org/publicdomain/zero/1.0/", "cc0", "CC0-1.0", "1.0", None,
     "https://creativecommons.org/publicdomain/zero/1.0/"),
    ("http://creativecommons.org/publicdomain/mark/1.0/", "pd", "CC-PDM-1.0", "1.0", None,
     "https://creativecommons.org/publicdomain/mark/1.0/"),
    ("http://creativecommons.org/licenses/by-nd-nc/1.0/", "by-nc-nd", "CC-BY-NC-ND-1.0", "1.0", None,
     "https://creativecommons.org/licenses/by-nd-nc/1.0/"),
    # FMA licence titles
    ("Attribution-NonCommercial-ShareAlike 3.0 International", "by-nc-sa", "CC-BY-NC-SA-3.0", "3.0", None,
     "https://creativecommons.org/licenses/by-nc-sa/3.0/"),
    ("Attribution 4.0 International", "by", "CC-BY-4.0", "4.0", None, "https://creativecommons.org/licenses/by/4.0/"),
    ("Attribution-NoDerivatives 4.0 International", "by-nd", "CC-BY-ND-4.0", "4.0", None,
     "https://creativecommons.org/licenses/by-nd/4.0/"),
    ("Creative Commons Attribution-NonCommercial-NoDerivatives 4.0", "by-nc-nd", "CC-BY-NC-ND-4.0", "4.0", None,
     "https://creativecommons.org/licenses/by-nc-nd/4.0/"),
    ("Attribution-NonCommercial-NoDerivatives (aka Music Sharing) 3.0 International", "by-nc-nd",
     "CC-BY-NC-ND-3.0", "3.0", None, "https://creativecommons.org/licenses/by-nc-nd/3.0/"),
    ("Attribution-Noncommercial-Share Alike 3.0 United States", "by-nc-sa", "CC-BY-NC-SA-3.0", "3.0", "us",
     "https://creativecommons.org/licenses/by-nc-sa/3.0/us/"),
    ("Attribution-Noncommercial-No Derivative Works 3.0 United States", "by-nc-nd", "CC-BY-NC-ND-3.0", "3.0", "us",
     "https://creativecommons.org/licenses/by-nc-nd/3.0/us/"),
    ("Attribution-Share Alike 3.0 United States", "by-sa", "CC-BY-SA-3.0", "3.0", "us",
     "https://creativecommons.org/licenses/by-sa/3.0/us/"),
    ("Attribution-NoDerivs 2.5", "by-nd", "CC-BY-ND-2.5", "2.5", None, "https://creativecommons.org/licenses/by-nd/2.5/"),
    ("Attribution-ShareAlike 2.1 Japan", "by-sa", None, "2.1", "jp", "https://creativecommons.org/licenses/by-sa/2.1/jp/"),
    ("CC0 1.0 Universal", "cc0", "CC0-1.0", "1.0", None, "https://creativecommons.org/publicdomain/zero/1.0/"),
    ("Public Domain Mark 1.0", "pd", "CC-PDM-1.0", "1.0", None, "https://creativecommons.org/publicdomain/mark/1.0/"),
    # short forms
    ("CC BY-NC 4.0", "by-nc", "CC-BY-NC-4.0", "4.0", None, "https://creativecommons.org/licenses/by-nc/4.0/"),
    ("by-nc-sa", "by-nc-sa", None, None, None, None),
    ("CC BY-SA", "by-sa", None, None, None, None),
    ("Public Domain", "pd", None, None, None, None),
    ("PDDL-1.0", "pd", "PDDL-1.0", "1.0", None, "https://opendatacommons.org/licenses/pddl/1-0/"),
]


@pytest.mark.parametrize("raw,family,spdx,version,jurisdiction,url", CASES)
def test_normalize_known_licences(raw: str, family: str, spdx: str | None, version: str | None,
                                  jurisdiction: str | None, url: str | None) -> None:
    info = normalize_license(raw)
    assert (info.family, info.spdx, info.version, info.jurisdiction, info.url) == (
        family, spdx, version, jurisdiction, url)
    assert info.raw == raw


@pytest.mark.parametrize("raw", [None, "", "   ", "unknown", "N/A"])
def test_missing_licence_is_unknown(raw: str | None) -> None:
    info = normalize_license(raw)
    assert info.family == "unknown" and info.spdx is None and info.raw == raw


@pytest.mark.parametrize("raw", [
    "FMA-Limited: Download Only",
    "Sound Recording Common Law Protection",
    "Free Art License 1.3",
    "NonCommercial-Sampling Plus 1.0",
    "http://creativecommons.org/licenses/sampling+/1.0/",
    "All rights reserved by the artist",  # contains "by" but is no CC licence
    "CC BY 5.0",  # no such version
    "Attribution-NoDerivs-ShareAlike 1.0",  # ND and SA exclude each other
    "https://example.com/my-licence",
])
def test_unrecognised_licence_is_other_and_keeps_raw(raw: str) -> None:
    info = normalize_license(raw)
    assert info.family == "other" and info.spdx is None and info.raw == raw
    assert info.requires_attribution  # crediting an unknown licence is the safe default


def test_terms_flags() -> None:
    nc_sa = normalize_license("CC BY-NC-SA 4.0")
    assert (nc_sa.requires_attribution, nc_sa.share_alike, nc_sa.non_commercial, nc_sa.no_derivatives) == (
        True, True, True, False)
    nd = normalize_license("CC-BY-ND-4.0")
    assert nd.no_derivatives and not nd.share_alike and not nd.non_commercial
    for pd in ("CC0-1.0", "Public Domain Mark 1.0"):
        assert not normalize_license(pd).requires_attribution
    assert all(normalize_license(raw).family in FAMILIES for raw, *_ in CASES)


POLICY_TABLE = {
    # family: (open, commercial, any)
    "cc0": (True, True, True),
    "pd": (True, True, True),
    "by": (True, True, True),
    "by-sa": (True, True, True),
    "by-nc": (True, False, True),
    "by-nc-sa": (True, False, True),
    "by-nd": (False, False, True),
    "by-nc-nd": (False, False, True),
    "other": (False, False, True),
}
REPRESENTATIVE = {
    "cc0": "CC0-1.0", "pd": "Public Domain Mark 1.0", "by": "CC-BY-4.0", "by-sa": "CC-BY-SA-4.0",
    "by-nc": "CC-BY-NC-4.0", "by-nc-sa": "Attribution-NonCommercial-ShareAlike 3.0 International",
    "by-nd": "Attribution-NoDerivatives 4.0 International", "by-nc-nd": "CC BY-NC-ND 4.0",
    "other": "FMA-Limited: Download Only",
}


@pytest.mark.parametrize("family", sorted(POLICY_TABLE))
def test_policies(family: str) -> None:
    info = normalize_license(REPRESENTATIVE[family])
    assert info.family == family
    for policy, expected in zip(("open", "commercial", "any"), POLICY_TABLE[family]):
        allowed, reason = license_allowed(info, policy, allow_unknown=False)
        assert allowed == expected, (family, policy)
        assert reason == (None if expected else f"license_not_allowed:{family}")


def test_unknown_licence_needs_allow_unknown_under_every_policy() -> None:
    info = normalize_license(None)
    for policy in POLICIES:
        assert license_allowed(info, policy, allow_unknown=False) == (False, "license_unknown")
        assert license_allowed(info, policy, allow_unknown=True) == (True, None)


def test_unknown_policy_is_config_error() -> None:
    with pytest.raises(ConfigError) as e:
        license_allowed(normalize_license("CC-BY-4.0"), "permissive", allow_unknown=False)
    assert e.value.key == "license_policy"
    for name in ("open", "commercial", "any", "permissive"):
        assert name in str(e.value)


def test_attribution_text() -> None:
    by = normalize_license("CC-BY-4.0")
    assert attribution_text(by, "Jane Doe", "Night Drive", "https://example.org/t/1") == (
        "\u201cNight Drive\u201d by Jane Doe (https://example.org/t/1), licensed under CC BY 4.0 "
        "(https://creativecommons.org/licenses/by/4.0/)")
    port = normalize_license("http://creativecommons.org/licenses/by-nc-sa/3.0/us/")
    assert attribution_text(port, "A", "B", None) == (
        "\u201cB\u201d by A, licensed under CC BY-NC-SA 3.0 US (https://creativecommons.org/licenses/by-nc-sa/3.0/us/)")
    # The licensor's own credit replaces title and artist.
    assert attribution_text(by, "A", "B", None, attribution="Music by A (a.example)").startswith(
        "Music by A (a.example), licensed under CC BY 4.0")
    assert attribution_text(normalize_license("CC0-1.0"), "A", None, None) == (
        "Untitled work by A, dedicated to the public domain under CC0 1.0 "
        "(https://creativecommons.org/publicdomain/zero/1.0/)")
    assert attribution_text(normalize_license("Free Art License 1.3"), "A", "B", None) == (
        "\u201cB\u201d by A, licensed under Free Art License 1.3")


# -- one name per licence, and the licence of a work made from several ---------------------------------

@pytest.mark.parametrize("raw", [raw for raw, *_ in CASES] + [
    "Attribution-ShareAlike", "Attribution-ShareAlike 2.1 Japan", "FMA-Limited: Download Only", "CC BY 5.0",
    "https://example.com/my-licence", "Public Domain", "!!!",
])
def test_a_licence_id_normalises_back_to_itself(raw: str) -> None:
    info = normalize_license(raw)
    again = normalize_license(info.id)
    assert again.id == info.id, (raw, info.id, again.id)
    assert (again.family, again.version) == (info.family, info.version), raw
    assert license_name(raw) == license_name(info.id) == info.id


@pytest.mark.parametrize("raw,expected", [
    ("Attribution-ShareAlike", "CC-BY-SA"),  # no version: still one name, not "unknown" or "other"
    ("CC BY-NC-SA", "CC-BY-NC-SA"),
    ("https://creativecommons.org/licenses/by-sa/4.0/", "CC-BY-SA-4.0"),
    ("Attribution-ShareAlike 4.0 International", "CC-BY-SA-4.0"),
    ("Attribution-ShareAlike 2.1 Japan", "CC-BY-SA-2.1"),  # a version SPDX does not list
    ("Attribution-Noncommercial-Share Alike 3.0 United States", "CC-BY-NC-SA-3.0"),
    ("Public Domain", "Public-Domain"),
    ("FMA-Limited: Download Only", "LicenseRef-FMA-Limited-Download-Only"),
    (None, None),
    ("n/a", None),
])
def test_licence_ids(raw: str | None, expected: str | None) -> None:
    assert normalize_license(raw).id == expected
    assert license_name(raw) == (expected or "unknown")


@pytest.mark.parametrize("licences,expected", [
    (["CC-BY-4.0", "CC0-1.0"], "CC-BY-4.0"),
    (["CC0-1.0", "Public Domain Mark 1.0"], "CC0-1.0"),
    (["CC-BY-SA-3.0", "CC-BY-4.0"], "CC-BY-SA-3.0"),  # BY works may be adapted under BY-SA
    (["CC-BY-NC-SA-4.0", "CC-BY-NC-4.0", "CC-BY-4.0"], "CC-BY-NC-SA-4.0"),
    (["CC-BY-NC-4.0", "CC-BY-4.0"], "CC-BY-NC-4.0"),
    (["CC-BY-NC-3.0", "CC-BY-4.0"], "CC-BY-NC-4.0"),  # versions differ: 4.0
    (["CC-BY-SA-3.0", "CC-BY-SA-4.0"], "CC-BY-SA-4.0"),
    (["Attribution-ShareAlike", "CC-BY-4.0"], "CC-BY-SA"),  # the ShareAlike work sets the version: unknown
    (["Attribution-ShareAlike"], "CC-BY-SA"),
    (["CC-BY-ND-4.0", "CC-BY-NC-4.0"], "CC-BY-NC-ND-4.0"),
    (["CC-BY-SA-4.0", "CC-BY-NC-4.0"], None),  # BY-SA asks for BY-SA, BY-NC forbids what BY-SA allows
    (["CC-BY-SA-4.0", "CC-BY-NC-SA-4.0"], None),
    (["CC-BY-ND-4.0", "CC-BY-SA-4.0"], None),
    (["CC-BY-4.0", "Free Art License 1.3"], None),
    (["CC-BY-4.0", None], None),
    ([], None),
])
def test_combined_licence_takes_the_most_restrictive_terms(licences: list, expected: str | None) -> None:
    combined = combined_license(normalize_license(x) for x in licences)
    assert (combined.id if combined else None) == expected, licences


@pytest.mark.parametrize("raw,hub", [
    ("CC-BY-4.0", "cc-by-4.0"), ("CC-BY-NC-SA-3.0", "cc-by-nc-sa-3.0"), ("CC0-1.0", "cc0-1.0"),
    ("PDDL-1.0", "pddl"), ("CC-BY-SA-2.0", "other"), ("Attribution-ShareAlike", "other"),
    ("FMA-Limited: Download Only", "other"), ("Public Domain Mark 1.0", "other"), (None, "other"),
])
def test_hugging_face_licence_ids(raw: str | None, hub: str) -> None:
    assert hf_license_id(normalize_license(raw)) == hub
    assert hub in HF_LICENSES or hub == "other"
