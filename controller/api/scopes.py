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
