"""pytest-lxdsnap: snapshot real LXD containers before each test and restore them after."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pytest-lxdsnap")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
