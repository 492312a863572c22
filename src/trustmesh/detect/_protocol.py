"""The ``Detector`` plug-in protocol every model implements."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np
import pandas as pd

__all__ = ["BENIGN", "Detector"]

#: Class name of benign rows (LabelledTable.labels uses it).
BENIGN = "benign"


@runtime_checkable
class Detector(Protocol):
    """Score flows in [0, 1] (higher = more malicious) with a calibrated threshold.

    Randomness comes from the ``seed`` given at construction, so the same seed and data give the
    same scores. ``X`` is always a feature DataFrame; extra columns are ignored, column order does
    not matter, and missing columns raise :class:`trustmesh.errors.InputError`.
    """

    threshold: float

    @property
    def name(self) -> str:
        """The detector kind (``gbdt``, ``autoencoder``, ...); a class attribute in implementations."""
        ...

    @property
    def classes_(self) -> tuple[str, ...]:
        """Class names the detector predicts (``("benign", "attack")`` for binary models)."""
        ...

    def fit(self, X: pd.DataFrame, y: np.ndarray | pd.Series | None = None) -> Self:
        """Fit on features ``X`` and labels ``y`` (class names or booleans; None = all benign)."""
        ...

    def score(self, X: pd.DataFrame, *, fill_missing: bool = False) -> np.ndarray:
        """Return float64 scores in [0, 1], higher = more likely an attack.

        ``fill_missing=True`` scores sources that lack some training features (they become NaN).
        """
        ...

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Return ``score(X) >= threshold`` as booleans."""
        ...

    def predict_class(self, X: pd.DataFrame) -> np.ndarray:
        """Return the predicted class name of every row."""
        ...

    def calibrate(self, X_val: pd.DataFrame, y_val_is_attack: np.ndarray, target_fpr: float = 0.01) -> float:
        """Set and return the threshold giving at most ``target_fpr`` on the benign validation rows."""
        ...

    def save(self, path: Path | str) -> None:
        """Write the fitted detector to one file (no pickle)."""
        ...

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read a file written by :meth:`save`, checking its structure."""
        ...
