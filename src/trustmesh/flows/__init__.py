"""trustmesh.flows (being written)."""

__all__: list[str] = []
