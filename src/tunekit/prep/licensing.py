"""Licence policy stage: keep only tracks whose licence the chosen policy admits.

Policies (`license_policy`): `open` (default) admits CC0/public domain, BY, BY-SA, BY-NC and
BY-NC-SA and excludes NoDerivatives; `commercial` admits CC0/public domain, BY and BY-SA (the
summary notes ShareAlike obligations); `any` admits every track that states a licence. Tracks
without a licence are rejected unless `allow_unknown_license=true`. The policy itself lives in
tunekit.corpus.license.license_allowed.

When a track's sidecar and metadata.csv name different licences (`license_conflict`),
`license_prefer` decides: `strict` (default) keeps the sidecar's licence but rejects the track
(`license_conflict`) when the policy does not admit either of the two; `sidecar` or `csv` uses that
source's licence alone. The conflict stays recorded on the track in every case.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tunekit.prep.rows import Rejection, StageContext, TrackRow, diff

SOURCE_NAMES = {"sidecar": "the sidecar JSON", "csv": "metadata.csv"}


def preferred(row: TrackRow, prefer: str) -> TrackRow:
    """The row with the licence of the source `license_prefer` names, when its metadata disagree."""
    from tunekit.corpus.license import normalize_license
    from tunekit.prep.ingest import license_fields

    raw = row.license_candidates.get(prefer) if row.license_conflict else None
    if raw is None or row.license_source == prefer:
        return row
    return dataclasses.replace(row, license_source=prefer, **license_fields(normalize_license(raw)))


def _conflict_rejection(row: TrackRow, policy: str, allow_unknown: bool) -> Rejection | None:
    """`license_conflict` when the policy refuses either licence of a conflict (license_prefer=strict)."""
    from tunekit.corpus.license import license_allowed, normalize_license

    refused = []
    for source, raw in sorted(row.license_candidates.items()):
        info = normalize_license(raw)
        if not license_allowed(info, policy, allow_unknown)[0]:
            refused.append(f"{SOURCE_NAMES.get(source, source)} says {info.id}")
    if not refused:
        return None
    return Rejection(
        "license_conflict",
        f"the licences disagree ({row.license_conflict}) and license_policy={policy} does not admit "
        f"what {' and '.join(refused)}; correct the metadata, or set license_prefer=sidecar or "
        "license_prefer=csv to trust one source",
    )


def check_license(row: TrackRow, section: dict[str, Any], ctx: StageContext) -> TrackRow | Rejection:
    """Reject the row if `license_policy` does not admit its licence (stage function)."""
    from tunekit.corpus.license import LicenseInfo, license_allowed

    policy, allow_unknown = section["license_policy"], section["allow_unknown_license"]
    prefer = section.get("license_prefer", "strict")
    judged = row
    if row.license_conflict:
        if prefer == "strict":
            conflict = _conflict_rejection(row, policy, allow_unknown)
            if conflict is not None:
                return conflict
        else:
            judged = preferred(row, prefer)
    info = LicenseInfo(spdx=judged.license, raw=judged.license_raw, family=judged.license_family or "unknown")
    allowed, reason = license_allowed(info, policy, allow_unknown)
    if allowed:
        return judged
    label = judged.license or judged.license_raw or "no licence"
    if reason == "license_unknown":
        detail = "no licence found (sidecar, metadata.csv or embedded tag); set allow_unknown_license=true to keep it"
    else:
        detail = f"{label} is not admitted by license_policy={policy}"
        if judged is not row:
            detail += f" ({SOURCE_NAMES[prefer]}'s licence, license_prefer={prefer})"
    return Rejection(reason or "license_not_allowed", detail, update=diff(row, judged) or None)
