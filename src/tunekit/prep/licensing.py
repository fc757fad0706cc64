"""Licence policy stage: keep only tracks whose licence the chosen policy admits.

Policies (`license_policy`): `open` (default) admits CC0/public domain, BY, BY-SA, BY-NC and
BY-NC-SA and excludes NoDerivatives; `commercial` admits CC0/public domain, BY and BY-SA (the
summary notes ShareAlike obligations); `any` admits every track that states a licence. Tracks
without a licence are rejected unless `allow_unknown_license=true`. The policy itself lives in
tunekit.corpus.license.license_allowed.
"""

from __future__ import annotations

from typing import Any

from tunekit.prep.rows import Rejection, StageContext, TrackRow


def check_license(row: TrackRow, section: dict[str, Any], ctx: StageContext) -> TrackRow | Rejection:
    """Reject the row if `license_policy` does not admit its licence (stage function)."""
    from tunekit.corpus.license import LicenseInfo, license_allowed

    info = LicenseInfo(spdx=row.license, raw=row.license_raw, family=row.license_family or "unknown")
    allowed, reason = license_allowed(info, section["license_policy"], section["allow_unknown_license"])
    if allowed:
        return row
    label = row.license or row.license_raw or "no licence"
    if reason == "license_unknown":
        detail = "no licence found (sidecar, metadata.csv or embedded tag); set allow_unknown_license=true to keep it"
    else:
        detail = f"{label} is not admitted by license_policy={section['license_policy']}"
    return Rejection(reason or "license_not_allowed", detail)
