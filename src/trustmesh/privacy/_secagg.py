"""Settings of secure aggregation (Bell et al., "Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead", CCS 2020), as run by trustmesh's own Flower workflow and mod
(:mod:`trustmesh.federated._secagg_flower`: SecAgg+'s message flow, ChaCha20/HKDF masks).

Only the validated configuration lives here, so ``privacy`` stays free of network code.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SecAggConfig"]


@dataclass(frozen=True, slots=True)
class SecAggConfig:
    """SecAgg+ parameters: each site shares its secrets with ``num_shares`` neighbours, and any
    ``reconstruction_threshold`` of them can unmask a dropped site. Updates (local minus global
    weights) are clipped to ``[-clipping_range, clipping_range]`` and quantized to
    ``quantization_range`` levels. With ``zk_bound`` set, updates are instead clipped to
    ``[-zk_clip, zk_clip]`` and quantized to integers in ``[-zk_bound, zk_bound]``, and every site
    proves that bound in zero knowledge; the server drops sites whose proof fails.

    The round survives up to ``num_shares - reconstruction_threshold`` dropouts among each site's
    neighbours; fewer than ``reconstruction_threshold`` survivors abort the round.
    """

    num_shares: int = 3
    reconstruction_threshold: int = 2
    clipping_range: float = 8.0
    quantization_range: int = 1 << 22
    timeout: float | None = None
    zk_bound: int | None = None
    zk_clip: float = 1.0

    def __post_init__(self) -> None:
        if self.num_shares < 2:
            raise ValueError(f"num_shares must be >= 2, got {self.num_shares}")
        if not 1 <= self.reconstruction_threshold <= self.num_shares:
            raise ValueError(
                f"reconstruction_threshold must be in 1..num_shares ({self.num_shares}), "
                f"got {self.reconstruction_threshold}"
            )
        if not self.clipping_range > 0:
            raise ValueError(f"clipping_range must be > 0, got {self.clipping_range}")
        if self.quantization_range < 2:
            raise ValueError(f"quantization_range must be >= 2, got {self.quantization_range}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0, got {self.timeout}")
        if self.zk_bound is not None and not 1 <= self.zk_bound <= 2**20:
            raise ValueError(f"zk_bound must be in 1..2**20, got {self.zk_bound}")
        if not self.zk_clip > 0:
            raise ValueError(f"zk_clip must be > 0, got {self.zk_clip}")

    @classmethod
    def for_sites(cls, n_sites: int) -> SecAggConfig:
        """Pick shares/threshold for ``n_sites``: all sites (capped at 9, odd), threshold about 2/3."""
        if n_sites < 2:
            raise ValueError(f"n_sites must be >= 2, got {n_sites}")
        shares = min(n_sites, 9)
        if shares % 2 == 0 and shares > 2:
            shares -= 1
        return cls(num_shares=shares, reconstruction_threshold=max(2, (2 * shares + 2) // 3))
