"""The one place the running version is read from."""

from importlib import metadata

try:
    VERSION = metadata.version("probefleet")
except metadata.PackageNotFoundError:  # running from a source tree
    VERSION = "0.0.0+src"
