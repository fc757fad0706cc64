"""Licence normalisation: SPDX ids, Creative Commons URLs and licence titles -> one typed record.

Corpora describe licences in many ways (FMA: "Attribution-NonCommercial-ShareAlike 3.0
International"; Jamendo and Freesound: deed URLs; users: "CC BY 4.0"). `normalize_license` maps
them all to a `LicenseInfo`, `license_allowed` applies a named policy, and `attribution_text`
writes the credit line a licence asks for.

`LicenseInfo.id` is the one name a licence has in every output (tracks.parquet, windows.parquet,
summary.json, attribution.csv, model cards): the SPDX id when there is one ("CC-BY-SA-4.0"), else the
same spelling without what is unknown ("CC-BY-SA" for an unversioned ShareAlike title), and
"LicenseRef-<text>" for a licence tunekit does not recognise. Normalising an id gives the same id back.
`combined_license` and `hf_license_id` name the licence a model trained on several works carries.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from tunekit.errors import ConfigError

FAMILIES = ("cc0", "pd", "by", "by-sa", "by-nc", "by-nc-sa", "by-nd", "by-nc-nd", "other", "unknown")

# Versions of the CC licences for which SPDX has an id of the unported/international text.
_SPDX_CC_VERSIONS = frozenset({"1.0", "2.0", "2.5", "3.0", "4.0"})
_CC_VERSIONS = _SPDX_CC_VERSIONS | {"2.1"}  # 2.1 exists only as jurisdiction ports (jp, es, au…)

# Jurisdiction ports of the CC 2.x/3.0 licences: title words -> URL code.
_JURISDICTIONS = {
    "united states": "us", "usa": "us", "germany": "de", "deutschland": "de", "france": "fr",
    "netherlands": "nl", "spain": "es", "italy": "it", "austria": "at", "australia": "au",
    "belgium": "be", "brazil": "br", "canada": "ca", "switzerland": "ch", "chile": "cl",
    "china mainland": "cn", "china": "cn", "colombia": "co", "czech republic": "cz", "denmark": "dk",
    "ecuador": "ec", "estonia": "ee", "finland": "fi", "greece": "gr", "guatemala": "gt",
    "hong kong": "hk", "croatia": "hr", "hungary": "hu", "ireland": "ie", "israel": "il",
    "india": "in", "japan": "jp", "south korea": "kr", "korea": "kr", "luxembourg": "lu",
    "malta": "mt", "mexico": "mx", "malaysia": "my", "norway": "no", "new zealand": "nz",
    "peru": "pe", "philippines": "ph", "poland": "pl", "puerto rico": "pr", "portugal": "pt",
    "romania": "ro", "serbia": "rs", "sweden": "se", "singapore": "sg", "slovenia": "si",
    "scotland": "scotland", "taiwan": "tw", "uganda": "ug", "england and wales": "uk",
    "england & wales": "uk", "united kingdom": "uk", "vietnam": "vn", "south africa": "za",
    "argentina": "ar", "bulgaria": "bg", "igo": "igo",
}
_JURISDICTION_CODES = frozenset(_JURISDICTIONS.values())
_JURISDICTION_RE = re.compile(
    r"\b(" + "|".join(re.escape(k) for k in sorted(_JURISDICTIONS, key=len, reverse=True)) + r")\b"
)

# Phrases rewritten to short tokens before a title is tokenised.
_PHRASES = (
    (re.compile(r"\(?\s*aka\s+music\s+sharing\s*\)?"), " "),
    (re.compile(r"creative[\s_-]*commons"), " cc "),
    (re.compile(r"public[\s_-]*domain[\s_-]*mark"), " pdm "),
    (re.compile(r"public[\s_-]*domain[\s_-]*dedication"), " cc0 "),
    (re.compile(r"\bpublicdomain\b"), " public domain "),
    (re.compile(r"\bcc[\s_-]*zero\b"), " cc0 "),
    (re.compile(r"sampling[\s_-]*(?:plus|\+)"), " sampling "),
    (re.compile(r"non[\s_-]*commercial"), " nc "),
    (re.compile(r"share[\s_-]*alike"), " sa "),
    (re.compile(r"no[\s_-]*deriv(?:ative)?s?(?:[\s_-]*works?)?"), " nd "),
    (re.compile(r"\battribution\b"), " by "),
)
# Words that may surround the licence elements in a title without changing its meaning.
_FILLER = frozenset({
    "cc", "license", "licence", "licensed", "under", "the", "international", "unported", "generic",
    "universal", "deed", "legalcode", "public", "domain", "version", "v", "ported",
})
_ELEMENTS = frozenset({"by", "nc", "nd", "sa"})
_UNKNOWN_WORDS = frozenset({"", "unknown", "none", "null", "nan", "n/a", "na", "-", "?"})

_CC_URL_RE = re.compile(
    r"^(?:https?://)?(?:www\.)?creativecommons\.org/"
    r"(?:(?P<pd>publicdomain)/(?P<pdkind>zero|mark)/(?P<pdver>\d\.\d)"
    r"|licenses/(?P<old>publicdomain)"
    r"|licenses/(?P<code>[a-z+-]+)/(?P<version>\d\.\d)(?:/(?P<port>[a-z]{2,}(?:-[a-z]+)?))?)"
    r"(?:/(?:legalcode|deed|rdf)(?:\.[a-z_-]+)?)?/?(?:[?#].*)?$"
)
_PORT_SUFFIXES = frozenset({"legalcode", "deed", "rdf"})
LICENSE_REF = "LicenseRef-"  # SPDX prefix of licences without an SPDX id; tunekit's ids of unrecognised licences


@dataclass(frozen=True)
class LicenseInfo:
    """A normalised licence. `family` is one of FAMILIES; the flags describe the licence's terms.

    `spdx` is the SPDX id of the licence text (the unported/international one for CC ports,
    whose port is kept in `jurisdiction` and `url`); None when it cannot be known (no version,
    a licence SPDX does not list). `raw` is the string the corpus gave, unchanged. For "other"
    and "unknown" only `requires_attribution` is set: crediting is always safe.
    """

    spdx: str | None
    raw: str | None
    family: str
    version: str | None = None
    requires_attribution: bool = True
    share_alike: bool = False
    non_commercial: bool = False
    no_derivatives: bool = False
    url: str | None = None
    jurisdiction: str | None = None

    @property
    def id(self) -> str | None:
        """The canonical name of this licence in every output; None only when it is unknown.

        SPDX id when there is one ("CC-BY-NC-SA-3.0": ports keep the unported text's id), else
        "CC-BY-SA" (no version), "CC-BY-SA-2.1" (a version SPDX lacks), "Public-Domain", or
        "LicenseRef-<raw text>" for an unrecognised licence.
        """
        if self.spdx:
            return self.spdx
        if self.family == "unknown":
            return None
        if self.family == "other":
            text = (self.raw or "").strip()
            if text.lower().startswith(LICENSE_REF.lower()):
                text = text[len(LICENSE_REF):]
            slug = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.")[:64].strip("-.")
            return f"{LICENSE_REF}{slug or 'other'}"
        if self.family == "pd":
            return "Public-Domain"
        return f"CC-{self.family.upper()}" + (f"-{self.version}" if self.version else "")

    @property
    def label(self) -> str:
        """A short human name: "CC BY-NC-SA 3.0 US", "CC0 1.0", "Public Domain Mark 1.0", or the raw text."""
        if self.family == "cc0":
            return f"CC0 {self.version or '1.0'}"
        if self.family == "pd":
            if self.spdx == "CC-PDM-1.0":
                return "Public Domain Mark 1.0"
            return self.spdx or "Public Domain"
        if self.family in ("other", "unknown"):
            return (self.raw or "").strip() or "unknown licence"
        parts = [f"CC {self.family.upper()}"]
        if self.version:
            parts.append(self.version)
        if self.jurisdiction:
            parts.append(self.jurisdiction.upper())
        return " ".join(parts)


def _unknown(raw: str | None) -> LicenseInfo:
    return LicenseInfo(spdx=None, raw=raw, family="unknown")


def _other(raw: str | None) -> LicenseInfo:
    return LicenseInfo(spdx=None, raw=raw, family="other")


def _cc0(raw: str | None, version: str = "1.0") -> LicenseInfo:
    return LicenseInfo(
        spdx=f"CC0-{version}", raw=raw, family="cc0", version=version, requires_attribution=False,
        url=f"https://creativecommons.org/publicdomain/zero/{version}/",
    )


def _pd(raw: str | None, spdx: str | None, url: str | None = None, version: str | None = None) -> LicenseInfo:
    return LicenseInfo(spdx=spdx, raw=raw, family="pd", version=version, requires_attribution=False, url=url)


def _cc(raw: str | None, elements: set[str], version: str | None, port: str | None,
        url_code: str | None = None) -> LicenseInfo:
    """A BY licence from its elements {"by", "nc", "nd", "sa"}; invalid combinations are "other"."""
    if "by" not in elements or ("nd" in elements and "sa" in elements):
        return _other(raw)
    if version is not None and version not in _CC_VERSIONS:
        return _other(raw)
    family = "-".join(e for e in ("by", "nc", "nd", "sa") if e in elements)
    spdx = f"CC-{family.upper()}-{version}" if version in _SPDX_CC_VERSIONS else None
    url = None
    if version is not None:
        code = url_code or family
        url = f"https://creativecommons.org/licenses/{code}/{version}/" + (f"{port}/" if port else "")
    return LicenseInfo(
        spdx=spdx, raw=raw, family=family, version=version, requires_attribution=True,
        share_alike="sa" in elements, non_commercial="nc" in elements, no_derivatives="nd" in elements,
        url=url, jurisdiction=port,
    )


def _from_url(raw: str, text: str) -> LicenseInfo | None:
    m = _CC_URL_RE.match(text)
    if m is None:
        return None
    if m.group("pd"):
        if m.group("pdkind") == "zero":
            return _cc0(raw, m.group("pdver"))
        return _pd(raw, "CC-PDM-1.0", "https://creativecommons.org/publicdomain/mark/1.0/", m.group("pdver"))
    if m.group("old"):
        return _pd(raw, "CC-PDDC", "https://creativecommons.org/licenses/publicdomain/")
    code, version, port = m.group("code"), m.group("version"), m.group("port")
    if port in _PORT_SUFFIXES:
        port = None
    # CC 1.0 spelled NonCommercial-NoDerivs as "by-nd-nc".
    elements = set(code.split("-"))
    if not elements <= _ELEMENTS:
        return _other(raw)
    return _cc(raw, elements, version, port, url_code=code)


def _from_text(raw: str, text: str) -> LicenseInfo:
    version_match = re.search(r"(?<![\d.])(\d\.\d)(?![\d.])", text)
    version = version_match.group(1) if version_match else None
    port = None
    jm = _JURISDICTION_RE.search(text)
    if jm:
        port = _JURISDICTIONS[jm.group(1)]
        text = text[: jm.start()] + " " + text[jm.end():]
    for pattern, repl in _PHRASES:
        text = pattern.sub(repl, text)
    if version:
        text = text.replace(version, " ")
    tokens = [t for t in re.split(r"[^a-z0-9+]+", text) if t]
    # SPDX-style ported ids end in a jurisdiction code: CC-BY-3.0-DE.
    if port is None and tokens and version and tokens[-1] in _JURISDICTION_CODES and len(tokens) > 1:
        port = tokens.pop()
    words = set(tokens)
    if "sampling" in words:
        return _other(raw)
    if "cc0" in words:
        return _cc0(raw) if words <= _FILLER | {"cc0"} and version in (None, "1.0") else _other(raw)
    if "pdm" in words and words <= _FILLER | {"pdm", "1"}:
        return _pd(raw, "CC-PDM-1.0", "https://creativecommons.org/publicdomain/mark/1.0/", version or "1.0")
    if words == {"cc", "pddc"}:
        return _pd(raw, "CC-PDDC", "https://creativecommons.org/licenses/publicdomain/")
    if words == {"pddl"}:
        return _pd(raw, "PDDL-1.0" if version in (None, "1.0") else None,
                   "https://opendatacommons.org/licenses/pddl/1-0/", version or "1.0")
    if words and words <= {"public", "domain", "the", "in"}:
        return _pd(raw, None)
    elements = words & _ELEMENTS
    if elements and words <= _FILLER | _ELEMENTS:
        return _cc(raw, elements, version, port)
    return _other(raw)


def normalize_license(raw: str | None) -> LicenseInfo:
    """Normalise an SPDX id, a Creative Commons URL or a licence title to a `LicenseInfo`.

    Empty or missing -> family "unknown"; anything not recognised -> family "other" (spdx None,
    raw kept), which only the `any` policy accepts.
    """
    if raw is None:
        return _unknown(None)
    text = str(raw).strip().lower()
    if text in _UNKNOWN_WORDS:
        return _unknown(raw)
    text = text.replace("\u2010", "-").replace("\u2013", "-").replace("\u2014", "-")
    if "creativecommons.org" in text:
        info = _from_url(raw, text)
        return info if info is not None else _other(raw)
    if re.match(r"^(?:https?://)?(?:www\.)?opendatacommons\.org/licenses/pddl/", text):
        return _pd(raw, "PDDL-1.0", "https://opendatacommons.org/licenses/pddl/1-0/", "1.0")
    if re.match(r"^[a-z]+://", text) or text.startswith(LICENSE_REF.lower()):
        return _other(raw)
    return _from_text(raw, text)


def license_name(value: str | None) -> str:
    """The name outputs count a licence under, from any spelling of it (an id, a URL, a title): its id,
    or "unknown". Normalising is idempotent on ids, so tables and cards written from ids agree."""
    return normalize_license(value).id or "unknown"


# Policy name -> (families it admits, one-line description).
POLICIES: dict[str, tuple[frozenset[str], str]] = {
    "open": (
        frozenset({"cc0", "pd", "by", "by-sa", "by-nc", "by-nc-sa"}),
        "CC0, public domain and CC licences that allow derivatives (BY, BY-SA, BY-NC, BY-NC-SA); "
        "no NoDerivatives licence",
    ),
    "commercial": (
        frozenset({"cc0", "pd", "by", "by-sa"}),
        "licences that allow commercial use and derivatives: CC0, public domain, BY, BY-SA",
    ),
    "any": (
        frozenset(f for f in FAMILIES if f != "unknown"),
        "every track that states a licence, recognised or not",
    ),
}


def license_allowed(info: LicenseInfo, policy: str = "open", allow_unknown: bool = False) -> tuple[bool, str | None]:
    """Whether `policy` admits the licence. Returns (allowed, rejection reason or None).

    Tracks with no licence information are rejected under every policy (`license_unknown`)
    unless `allow_unknown`; others are rejected as `license_not_allowed:<family>`.
    """
    if policy not in POLICIES:
        raise ConfigError(
            f"license_policy={policy!r} is not a known licence policy; use one of: {', '.join(POLICIES)}",
            key="license_policy",
        )
    if info.family == "unknown":
        return (True, None) if allow_unknown else (False, "license_unknown")
    if info.family in POLICIES[policy][0]:
        return True, None
    return False, f"license_not_allowed:{info.family}"


def attribution_text(
    info: LicenseInfo,
    artist: str | None = None,
    title: str | None = None,
    url: str | None = None,
    attribution: str | None = None,
) -> str:
    """A TASL credit line: '“Title” by Artist (url), licensed under CC BY 4.0 (licence url)'.

    `attribution` is the credit the licensor asked for; when given it replaces title and artist.
    """
    artist = (artist or "").strip() or None
    title = (title or "").strip() or None
    url = (url or "").strip() or None
    if attribution and attribution.strip():
        work = attribution.strip()
    else:
        work = f"\u201c{title}\u201d" if title else "Untitled work"
        if artist:
            work += f" by {artist}"
    if url:
        work += f" ({url})"
    if info.family == "cc0":
        terms = f"dedicated to the public domain under {info.label}"
    elif info.family == "pd":
        terms = f"marked as public domain ({info.label})" if info.spdx else "in the public domain"
    elif info.family == "unknown":
        terms = "licence unknown"
    else:
        terms = f"licensed under {info.label}"
    if info.url and info.family != "unknown":
        terms += f" ({info.url})"
    return f"{work}, {terms}"


# Licence ids the Hugging Face Hub accepts in a card's `license` field for CC and public-domain works
# (hub-docs "Licenses"); any other licence is `license: other` with a `license_name`.
HF_LICENSES = frozenset({
    "cc0-1.0", "pddl", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
})


def hf_license_id(info: LicenseInfo | None) -> str:
    """The Hugging Face Hub `license` value of a licence ("cc-by-sa-4.0", "cc0-1.0", "pddl"), or "other"."""
    if info is None:
        return "other"
    if info.family == "cc0":
        return "cc0-1.0"
    if info.spdx == "PDDL-1.0":
        return "pddl"
    hub = f"cc-{info.family}-{info.version}"
    return hub if info.family.startswith("by") and hub in HF_LICENSES else "other"


def combined_license(infos: Iterable[LicenseInfo]) -> LicenseInfo | None:
    """The one licence whose terms include every licence's terms in `infos` (the most restrictive wins),
    for a work made from all of them, such as a model trained on them.

    Public-domain works add no terms; CC terms add up (BY + BY-NC = BY-NC). None when no single licence
    fits: an unknown or unrecognised licence, ShareAlike with NoDerivatives, or ShareAlike licences with
    different terms (each asks for adaptations under itself). The version is the works' own when they
    agree (those of the ShareAlike works, if any), 4.0 when they differ (ShareAlike licences from 2.0 on
    allow a later version), and none when no work states one.
    """
    infos = list(infos)
    if not infos or any(i.family in ("other", "unknown") for i in infos):
        return None
    terms = [i for i in infos if i.family not in ("cc0", "pd")]
    if not terms:
        return _cc0(None)
    elements = set().union(*(i.family.split("-") for i in terms))
    family = "-".join(e for e in ("by", "nc", "nd", "sa") if e in elements)
    share_alike = [i for i in terms if i.share_alike]
    if any(i.family != family for i in share_alike):
        return None
    versions = {i.version for i in (share_alike or terms) if i.version}
    version = (versions.pop() if len(versions) == 1 else "4.0") if versions else None
    combined = _cc(None, elements, version, None)
    return None if combined.family == "other" else combined
