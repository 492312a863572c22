"""trustmesh: AI threat detection joined with a tamper-evident, blockchain-anchored ledger."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("trustmesh")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
