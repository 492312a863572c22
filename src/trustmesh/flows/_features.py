"""Encode a mixed-type flow table into a dense float32 matrix, reproducibly and without pickle.

The encoder is the contract between a training table and every later scoring call: it remembers the
column order, turns numeric columns into float32 (with ``±inf`` mapped to NaN so tree models and
imputers see one kind of missing value), and maps text/categorical columns to integer codes through a
vocabulary learned at fit time. Unknown categories map to a reserved code (``0``); missing values of a
categorical column map to NaN. The whole state is plain JSON (``to_json``/``from_json``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from trustmesh.errors import InputError, ModelError

__all__ = ["FeatureEncoder", "UNKNOWN_CODE"]

#: Code given to a category not seen at fit time. Known categories are numbered from 1.
UNKNOWN_CODE = 0
_FORMAT = "trustmesh.feature-encoder/1"
# Categorical vocabularies above this size are capped (most frequent kept) so a free-text column
# (e.g. URIs, user agents) cannot blow up the model or the JSON state.
_MAX_VOCAB = 4096


def _is_numeric(series: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(series.dtype))


@dataclass(frozen=True, slots=True)
class FeatureEncoder:
    """Map a DataFrame to ``float32`` features with a vocabulary fixed at fit time.

    Build one with :meth:`fit`; an encoder that exists is fitted. ``columns`` is the feature order,
    ``vocab`` maps each categorical column to its known categories (code = position + 1).
    """

    columns: tuple[str, ...]
    vocab: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    max_vocab: int = _MAX_VOCAB

    def __post_init__(self) -> None:
        if not self.columns:
            raise ModelError("a feature encoder needs at least one column")
        if len(set(self.columns)) != len(self.columns):
            raise ModelError("feature encoder columns must be unique")
        unknown = set(self.vocab) - set(self.columns)
        if unknown:
            raise ModelError(f"vocabulary for columns not in the encoder: {sorted(unknown)}")

    # -- fitting -----------------------------------------------------------------------------------
    @classmethod
    def fit(cls, frame: pd.DataFrame, *, max_vocab: int = _MAX_VOCAB) -> FeatureEncoder:
        """Learn the column order and categorical vocabularies of ``frame``."""
        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"features must be a pandas DataFrame, got {type(frame).__name__}")
        if frame.shape[1] == 0:
            raise InputError("feature table has no columns")
        if max_vocab < 1:
            raise ValueError(f"max_vocab must be >= 1, got {max_vocab}")
        columns = tuple(str(c) for c in frame.columns)
        vocab: dict[str, tuple[str, ...]] = {}
        for name, col in zip(columns, frame.columns, strict=True):
            series = frame[col]
            if _is_numeric(series):
                continue
            values = series.dropna().astype(str)
            counts = values.value_counts(sort=False)
            # Most frequent first, ties by value: deterministic whatever the row order.
            order = sorted(counts.items(), key=lambda kv: (-int(kv[1]), kv[0]))[:max_vocab]
            vocab[name] = tuple(sorted(k for k, _ in order))
        return cls(columns=columns, vocab=vocab, max_vocab=max_vocab)

    # -- encoding ----------------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        """Number of output columns."""
        return len(self.columns)

    @property
    def categorical(self) -> tuple[str, ...]:
        """Columns encoded through a vocabulary, in feature order."""
        return tuple(c for c in self.columns if c in self.vocab)

    def missing(self, frame: pd.DataFrame) -> list[str]:
        """Return the encoder columns absent from ``frame``."""
        present = {str(c) for c in frame.columns}
        return [c for c in self.columns if c not in present]

    def transform(self, frame: pd.DataFrame, *, fill_missing: bool = False) -> np.ndarray:
        """Encode ``frame`` into a C-contiguous ``(n_rows, n_features)`` float32 array.

        Extra columns are ignored and column order does not matter. Missing columns raise
        :class:`InputError` naming them, unless ``fill_missing`` is set (then they are NaN), which is
        meant for scoring flows from a source that lacks some training features.
        """
        if not isinstance(frame, pd.DataFrame):
            raise InputError(f"features must be a pandas DataFrame, got {type(frame).__name__}")
        absent = self.missing(frame)
        if absent and not fill_missing:
            shown = ", ".join(absent[:10]) + (f" (+{len(absent) - 10} more)" if len(absent) > 10 else "")
            raise InputError(f"input lacks {len(absent)} feature column(s) the model needs: {shown}")
        by_name = {str(c): c for c in frame.columns}
        out = np.empty((len(frame), len(self.columns)), dtype=np.float32)
        for j, name in enumerate(self.columns):
            if name not in by_name:
                out[:, j] = np.nan
                continue
            series = frame[by_name[name]]
            if name in self.vocab:
                out[:, j] = self._codes(name, series)
            else:
                out[:, j] = self._numeric(name, series)
        return out

    def _numeric(self, name: str, series: pd.Series) -> np.ndarray:
        if _is_numeric(series):
            values: np.ndarray = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            # A column numeric at fit time arrived as text (e.g. Zeek's "-"): coerce, bad -> NaN.
            values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        with np.errstate(over="ignore", invalid="ignore"):
            values32 = values.astype(np.float32)
        values32[~np.isfinite(values32)] = np.nan
        return values32

    def _codes(self, name: str, series: pd.Series) -> np.ndarray:
        categories = pd.Index(self.vocab[name])
        if len(categories) == 0:
            codes = np.full(len(series), UNKNOWN_CODE, dtype=np.float32)
            codes[series.isna().to_numpy()] = np.nan
            return codes
        # Vectorised: factorise the column once, map the (few) uniques through the vocabulary.
        uniques_codes, uniques = pd.factorize(series, use_na_sentinel=True)
        lookup = categories.get_indexer(pd.Index(uniques).astype(str))
        mapped = np.where(lookup >= 0, lookup + 1, UNKNOWN_CODE).astype(np.float32)
        result = np.full(len(series), np.nan, dtype=np.float32)
        valid = uniques_codes >= 0
        result[valid] = mapped[uniques_codes[valid]]
        return result

    # -- persistence -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready state."""
        return {
            "format": _FORMAT,
            "columns": list(self.columns),
            "vocab": {k: list(v) for k, v in self.vocab.items()},
            "max_vocab": self.max_vocab,
        }

    def to_json(self) -> str:
        """Serialise to a JSON string (sorted keys, so equal encoders give equal text)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> FeatureEncoder:
        """Rebuild an encoder from :meth:`to_dict` output, checking every field."""
        if not isinstance(doc, Mapping) or doc.get("format") != _FORMAT:
            raise ModelError(f"feature encoder state is not {_FORMAT!r}")
        columns = doc.get("columns")
        vocab = doc.get("vocab", {})
        max_vocab = doc.get("max_vocab", _MAX_VOCAB)
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ModelError("feature encoder 'columns' must be a list of strings")
        if not isinstance(vocab, Mapping) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in vocab.items()
        ):
            raise ModelError("feature encoder 'vocab' must map column names to lists of strings")
        if not isinstance(max_vocab, int) or max_vocab < 1:
            raise ModelError("feature encoder 'max_vocab' must be a positive integer")
        return cls(columns=tuple(columns), vocab={k: tuple(v) for k, v in vocab.items()}, max_vocab=max_vocab)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureEncoder:
        """Parse :meth:`to_json` output."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ModelError(f"feature encoder state is not valid JSON: {exc}") from exc
        return cls.from_dict(doc)

    def select(self, columns: Iterable[str]) -> Sequence[str]:
        """Return the given columns in encoder order (helper for feature subsets)."""
        wanted = set(columns)
        return [c for c in self.columns if c in wanted]
