"""The one place that wires flows -> detect -> respond -> ledger (being written)."""

__all__: list[str] = []
