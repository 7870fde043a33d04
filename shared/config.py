"""What the controller's and the probe's config loaders share: reading one setting from
the environment."""

from __future__ import annotations

import os
from pathlib import Path


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
