"""What the controller's and the probe's config loaders share: reading the config file
and one setting from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


def read_file(path: Path) -> dict[str, object]:
    """The settings of a TOML (or, by its suffix, JSON) config file: a table of names.

    ValueError naming the file when it is not one; OSError when it cannot be read."""
    raw = path.read_bytes()
    try:
        data = msgspec.json.decode(raw) if path.suffix == ".json" else msgspec.toml.decode(raw)
    except msgspec.DecodeError as e:
        raise ValueError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a table of settings, not {type(data).__name__}")
    return data


def env_setting(name: str) -> str | None:
    """PROBEFLEET_<NAME>, else the stripped contents of the file named by
    PROBEFLEET_<NAME>_FILE, else None.

    An empty variable counts as unset, as it does for click's `envvar=` options, so an
    empty PROBEFLEET_X never hides PROBEFLEET_X_FILE. OSError naming the variable when
    the file cannot be read.
    """
    value = os.environ.get(f"PROBEFLEET_{name}")
    if value:
        return value
    path = os.environ.get(f"PROBEFLEET_{name}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise OSError(f"PROBEFLEET_{name}_FILE={path}: {reason}") from None
