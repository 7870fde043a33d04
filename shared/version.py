"""The one place the running version (and the commit it was built from) is read from."""

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path

try:
    VERSION = metadata.version("probefleet")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0+src"


@functools.cache
def commit() -> str:
    """The build's commit: PROBEFLEET_BUILD_COMMIT (set by an image build), else the git
    checkout this package runs from, else "unknown"."""
    if given := os.environ.get("PROBEFLEET_BUILD_COMMIT", "").strip():
        return given[:40]
    source = Path(__file__).resolve().parents[1]
    if not (source / ".git").exists():
        return "unknown"
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"
