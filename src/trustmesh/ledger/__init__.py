"""trustmesh.ledger (being written)."""

__all__: list[str] = []
