"""trustmesh.evaluate (being written)."""

__all__: list[str] = []
