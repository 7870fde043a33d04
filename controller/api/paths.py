"""The API's path prefixes: /api/v1/ is canonical, and every /api/v1/ route answers under
the alias prefixes too (docs/api.md, compatibility with the reference services)."""

from __future__ import annotations

from collections.abc import Collection

CANONICAL = "/api/v1/"
ALIAS_PREFIXES = ("/api/", "/v1/")


def canonical_of(path: str) -> str | None:
    """The /api/v1/ path an alias path stands for; None for a path under no alias prefix."""
    if path.startswith(CANONICAL):
        return None
    for prefix in ALIAS_PREFIXES:
        if path.startswith(prefix):
            return CANONICAL + path.removeprefix(prefix)
    return None


def is_alias(path: str, served: Collection[str]) -> bool:
    """Whether `path` is the alias of a served /api/v1/ path."""
    canonical = canonical_of(path)
    return canonical is not None and canonical in served
