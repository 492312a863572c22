"""Certified output bounds of a ReLU network over an input box: CROWN, written in torch.

CROWN (H. Zhang, T.-W. Weng, P.-Y. Chen, C.-J. Hsieh, L. Daniel, "Efficient Neural Network Robustness
Certification with General Activation Functions", NeurIPS 2018) propagates linear bounds backwards
through the network. Each ReLU whose pre-activation interval ``[l, u]`` straddles 0 is relaxed by an
upper line through ``(l, 0)`` and ``(u, 0)``..``(u, u)`` (slope ``u / (u - l)``) and a lower line of
slope 1 when ``u > -l``, else 0 (the adaptive choice); stable neurons are exact. Intermediate
pre-activation bounds are themselves computed by CROWN, layer by layer, so the final bound is the
full (not IBP-seeded) CROWN bound. Everything runs in float64 so rounding cannot make a bound unsound
by more than ~1e-12; :func:`crown_bounds` is checked against sampled points in the tests.

auto_LiRPA (PyPI ``auto-lirpa`` 0.3, 2022) could not be used: it pins old torch releases and does not
run with the project's torch 2.13.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "crown_bounds",
    "ibp_bounds",
    "linear_layers",
]


def linear_layers(net: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return ``[(W, b), ...]`` of a ``Sequential`` of ``Linear`` layers with ``ReLU`` between them."""
    import torch

    layers: list[tuple[np.ndarray, np.ndarray]] = []
    expect_linear = True
    for mod in net:
        if isinstance(mod, torch.nn.Linear):
            if not expect_linear:
                raise ValueError("two Linear layers in a row: not a ReLU network of alternating layers")
            layers.append((mod.weight.detach().double().numpy(), mod.bias.detach().double().numpy()))
            expect_linear = False
        elif isinstance(mod, torch.nn.ReLU):
            if expect_linear:
                raise ValueError("ReLU without a Linear layer before it")
            expect_linear = True
        else:
            raise ValueError(f"unsupported layer {type(mod).__name__}: only Linear and ReLU")
    if expect_linear:
        raise ValueError("the network must end with a Linear layer")
    return layers


def ibp_bounds(layers: list[tuple[np.ndarray, np.ndarray]], lo: np.ndarray, hi: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
    """Return interval-bound-propagation bounds of the output over the boxes ``[lo, hi]`` (rows)."""
    low, up = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    for k, (W, b) in enumerate(layers):
        mid, rad = (low + up) / 2, (up - low) / 2
        c, r = mid @ W.T + b, rad @ np.abs(W).T
        low, up = c - r, c + r
        if k < len(layers) - 1:
            low, up = np.maximum(low, 0.0), np.maximum(up, 0.0)
    return low, up


def _backward(layers: list[tuple[np.ndarray, np.ndarray]], pre: list[tuple[np.ndarray, np.ndarray]],
              k: int, spec: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Return lower bounds of ``spec @ z_k`` (z_k: pre-activation after layer ``k``) over each box.

    ``spec`` has shape (rows, m, n_k); ``pre[j]`` holds the bounds of the pre-activation after layer j.
    """
    lam = spec
    const = np.zeros(spec.shape[:2])
    for j in range(k, -1, -1):
        W, b = layers[j]
        const = const + lam @ b
        lam = lam @ W  # now in terms of the input of layer j (the activation after layer j - 1, or x)
        if j == 0:
            break
        low, up = pre[j - 1]
        active = low >= 0
        unstable = (low < 0) & (up > 0)
        denom = np.where(unstable, up - low, 1.0)
        s = np.where(unstable, up / denom, 0.0)
        d_up = np.where(active, 1.0, s)
        b_up = np.where(unstable, -s * low, 0.0)
        d_lo = np.where(active, 1.0, np.where(unstable & (up > -low), 1.0, 0.0))
        pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
        const = const + np.einsum("rmn,rn->rm", neg, b_up)
        lam = pos * d_lo[:, None, :] + neg * d_up[:, None, :]
    pos, neg = np.maximum(lam, 0.0), np.minimum(lam, 0.0)
    return np.asarray(const + np.einsum("rmn,rn->rm", pos, lo) + np.einsum("rmn,rn->rm", neg, hi))


def crown_bounds(layers: list[tuple[np.ndarray, np.ndarray]], lo: np.ndarray, hi: np.ndarray,
                 spec: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return CROWN lower and upper bounds of ``spec @ f(x)`` for every ``x`` in the boxes ``[lo, hi]``.

    ``lo``/``hi`` have shape (rows, n_in); ``spec`` (m, n_out) defaults to the identity, giving bounds
    of each output. Sound: for every row and every ``x`` with ``lo <= x <= hi``,
    ``lower <= spec @ f(x) <= upper``.
    """
    lo = np.asarray(lo, np.float64)
    hi = np.asarray(hi, np.float64)
    if lo.shape != hi.shape or lo.ndim != 2:
        raise ValueError(f"lo and hi must be matrices of the same shape, got {lo.shape} and {hi.shape}")
    if np.any(lo > hi):
        raise ValueError("every lo must be <= hi")
    rows = lo.shape[0]
    pre: list[tuple[np.ndarray, np.ndarray]] = []
    for k in range(len(layers) - 1):
        n = layers[k][0].shape[0]
        eye = np.broadcast_to(np.eye(n), (rows, n, n))
        low = _backward(layers, pre, k, eye, lo, hi)
        up = -_backward(layers, pre, k, -eye, lo, hi)
        pre.append((low, up))
    n_out = layers[-1][0].shape[0]
    S = np.eye(n_out) if spec is None else np.asarray(spec, np.float64)
    Sb = np.broadcast_to(S, (rows, *S.shape))
    lower = _backward(layers, pre, len(layers) - 1, Sb, lo, hi)
    upper = -_backward(layers, pre, len(layers) - 1, -Sb, lo, hi)
    # a tiny outward margin absorbs float64 rounding in the matrix products
    return lower - 1e-9 * (1 + np.abs(lower)), upper + 1e-9 * (1 + np.abs(upper))
