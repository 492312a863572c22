"""Default pcap model (being written)."""

from __future__ import annotations

from typing import Any

__all__ = ["default_pcap_model", "host_summary"]


def default_pcap_model(data_dir: Any = None) -> Any:
    """Not yet implemented."""
    raise NotImplementedError


def host_summary(*args: Any) -> Any:
    """Not yet implemented."""
    raise NotImplementedError
