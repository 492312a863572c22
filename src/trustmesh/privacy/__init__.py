"""trustmesh.privacy (being written)."""

__all__: list[str] = []
