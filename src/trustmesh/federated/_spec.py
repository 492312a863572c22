"""Build an :class:`FLConfig` from CLI-style option strings (shared by the CLI and deployed apps)."""

from __future__ import annotations

import dataclasses
from typing import Any

from trustmesh.errors import ConfigError
from trustmesh.federated._attacks import AttackSpec
from trustmesh.federated._partition import PartitionSpec
from trustmesh.federated._run import FLConfig
from trustmesh.federated._site import (
    TrainConfig,
    default_head_weights,
    default_hidden,
    default_server_opt,
    default_training,
    default_weight_counts,
)
from trustmesh.privacy import DPConfig, DPSGDConfig, SecAggConfig, noise_multiplier_for_epsilon

__all__ = ["config_from_options"]


def config_from_options(
    *, sites: int, rounds: int, partition: str = "iid", aggregator: str = "fedavg", secagg: bool = False,
    secagg_shares: int | None = None, secagg_threshold: int | None = None, dp: str | None = None,
    he: str | None = None, attack: str | None = None, seed: int = 0, local_epochs: int | None = None,
    dp_sgd: str | None = None, lr: float | None = None, batch_size: int | None = None,
    batches_per_epoch: int | None = None, class_weight: str | None = None,
    model: str = "mlp", target_fpr: float = 0.01, defence: str | None = None, assumed_malicious: int | None = None,
    zk_bound: int | None = None, zk_clip: float = 1.0, server_opt: str | None = None, lr_decay: float | None = None,
    weight_counts: str | None = None, hidden: str | tuple[int, ...] | None = None, fedrs: float = 1.0,
    head_weights: str | None = None, **_: Any,
) -> FLConfig:
    """Parse option strings (``--partition dirichlet:0.5``, ``--dp epsilon=3,clip=1``, ...) into a config.

    ``--dp`` takes ``noise=Z,clip=C,delta=D[,budget=E][,method=pld]`` or ``epsilon=E,clip=C,delta=D``;
    the latter calibrates the noise so all ``rounds`` together spend at most ``E`` (and sets the budget).
    ``--dp-sgd`` takes ``noise=Z,clip=C[,delta=D][,budget=E][,method=pld]`` or ``epsilon=E,clip=C[,delta=D]``
    (record-level; each site calibrates its noise to its own sample rate, see :class:`DPSGDConfig`).
    ``--defence`` (normbound | centered-clip | bulyan) wraps the aggregator and needs updates in the clear.
    ``--head-weights`` defaults to ``classes`` where that is sound and ``rows`` elsewhere
    (:func:`~trustmesh.federated._site.default_head_weights`).
    """
    try:
        sa = None
        if secagg:
            sa = SecAggConfig.for_sites(sites)
            if secagg_shares or secagg_threshold:
                sa = SecAggConfig(num_shares=secagg_shares or sa.num_shares,
                                  reconstruction_threshold=secagg_threshold or sa.reconstruction_threshold)
            if zk_bound is not None:
                sa = dataclasses.replace(sa, zk_bound=zk_bound, zk_clip=zk_clip)
        elif zk_bound is not None:
            raise ConfigError("--zk-bound proves bounds inside secure aggregation; add --secagg")
        sgd = DPSGDConfig.parse(dp_sgd, rounds=rounds) if dp_sgd else None
        if batch_size is not None and batches_per_epoch is not None:
            raise ConfigError("give one of --batch-size and --batches-per-epoch, not both")
        if batch_size is None and batches_per_epoch is None:
            batch_size = _default(None, "batch_size", sgd is not None, model)
            batches_per_epoch = _default(None, "batches_per_epoch", sgd is not None, model)
        dp_cfg = None
        if dp:
            parts = dict(kv.strip().split("=", 1) for kv in dp.split(",") if "=" in kv)
            if "epsilon" in parts:
                eps = float(parts.pop("epsilon"))
                parts["noise"] = repr(noise_multiplier_for_epsilon(eps, float(parts.get("delta", 1e-5)), rounds))
                parts.setdefault("budget", repr(eps))
            dp_cfg = DPConfig.parse(",".join(f"{k}={v}" for k, v in parts.items()))
        return FLConfig(
            n_sites=sites, rounds=rounds, partition=PartitionSpec.parse(partition), aggregator=aggregator,
            secagg=sa, dp=dp_cfg, he=he or None, attack=AttackSpec.parse(attack) if attack else None, seed=seed,
            model=model, target_fpr=target_fpr, defence=defence or None, assumed_malicious=assumed_malicious,
            server_opt=server_opt or default_server_opt(dp_sgd=sgd is not None, model=model, he=he or None),
            train=TrainConfig(
                hidden=_hidden(hidden) or default_hidden(dp_sgd=sgd is not None, model=model),
                weight_counts=weight_counts or default_weight_counts(dp_sgd=sgd is not None, model=model),
                absent_logit_scale=fedrs,
                head_weights=head_weights or default_head_weights(
                    dp_sgd=sgd is not None, model=model, dp=dp_cfg is not None, aggregator=aggregator,
                    defence=defence or None),
                local_epochs=_default(local_epochs, "local_epochs", sgd is not None, model), dp_sgd=sgd,
                lr=_default(lr, "lr", sgd is not None, model),
                lr_decay=_default(lr_decay, "lr_decay", sgd is not None, model),
                **({} if batch_size is None else {"batch_size": batch_size}), batches_per_epoch=batches_per_epoch,
                class_weight=_default(class_weight, "class_weight", sgd is not None, model)),
        )
    except (ValueError, KeyError) as exc:
        raise ConfigError(str(exc)) from exc


def _hidden(text: str | tuple[int, ...] | None) -> tuple[int, ...] | None:
    """``--hidden 128,64`` as widths (None when not given)."""
    if text is None or isinstance(text, tuple):
        return text
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise ConfigError(f"--hidden must be comma-separated integers, got {text!r}") from None
    if not widths or min(widths) < 1:
        raise ConfigError(f"--hidden widths must be >= 1, got {text!r}")
    return widths


def _default(value: Any, name: str, dp_sgd: bool, model: str) -> Any:
    """``value``, or the local-training default for this kind of run when it was not given."""
    return default_training(name, dp_sgd=dp_sgd, model=model) if value is None else value
