"""Semantic-version precedence for the `min_runtime_version` filter (semver.org §11)."""

from __future__ import annotations

import re

__all__ = ["VersionKey", "parse_version"]

_SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)(?:\.(?P<patch>0|[1-9]\d*))?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)

# A comparable key: (major, minor, patch, prerelease). A release sorts after every
# prerelease of the same version; numeric identifiers sort before alphanumeric ones.
VersionKey = tuple[int, int, int, tuple[tuple[int, int, str], ...]]

_RELEASE: tuple[tuple[int, int, str], ...] = ((2, 0, ""),)


def parse_version(text: str) -> VersionKey:
    """Parse "1.2.3", "v1.2", "1.2.3-rc.1+build" into a comparable key.

    Raises ValueError with the offending text when it is not a semantic version.
    """
    match = _SEMVER.match(text.strip())
    if match is None:
        raise ValueError(f"not a semantic version: {text!r} (expected MAJOR.MINOR[.PATCH][-PRERELEASE])")
    pre = match.group("pre")
    if pre is None:
        pre_key = _RELEASE
    else:
        pre_key = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split("."))
    return (int(match.group("major")), int(match.group("minor")), int(match.group("patch") or 0), pre_key)
