"""trustmesh.identity (being written)."""

__all__: list[str] = []
