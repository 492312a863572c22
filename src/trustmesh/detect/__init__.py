"""trustmesh.detect (being written)."""

__all__: list[str] = []
