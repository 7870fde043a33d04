"""API key scopes (no imports: the CLI reads them in images without the database driver)."""

SCOPES: tuple[str, ...] = (
    "monitors:read",
    "monitors:write",
    "incidents:read",
    "incidents:write",
    "status_pages:read",
    "status_pages:write",
    "notifications:read",
    "notifications:write",
    "keys:admin",
    # Regions, enrollment tokens, probe credentials and their revocation.
    "fleet:admin",
    "admin",
)

# What each console role may do, as API scopes (a user's session carries these).
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "admin": ("admin",),
    "editor": (
        "monitors:read",
        "monitors:write",
        "incidents:read",
        "incidents:write",
        "status_pages:read",
        "status_pages:write",
        "notifications:read",
        "notifications:write",
    ),
    "viewer": ("monitors:read", "incidents:read", "status_pages:read", "notifications:read"),
}
ROLES: tuple[str, ...] = tuple(ROLE_SCOPES)
