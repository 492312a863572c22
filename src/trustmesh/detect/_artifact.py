"""Model artifacts: one detector file plus ``<file>.manifest.json`` beside it.

The manifest records what the model is and where it came from (kind, features and encoder, the
training data digest, hyper-parameters, seed, library versions, validation metrics, threshold,
classes) and the sha256 of the artifact. The same manifest body (minus that sha256) is sealed inside
the artifact as ``manifest.json`` in RFC 8785 canonical JSON, so :func:`load_model` detects a
changed artifact (digest mismatch) and an edited manifest (differs from the sealed copy) alike and
raises :class:`~trustmesh.errors.ArtifactDigestError`. This protects against corruption and
accidental edits; against an adversary who rewrites both files, log the model id and digest in the
ledger (that is what it is for).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NewType, cast

import rfc8785

from trustmesh._jsonable import json_ready
from trustmesh.detect._base import BaseDetector, read_container, write_container
from trustmesh.errors import ArtifactDigestError, InputError, ModelError

__all__ = ["MANIFEST_SUFFIX", "Manifest", "ModelDigest", "load_model", "manifest_path", "save_model"]

MANIFEST_SUFFIX = ".manifest.json"
_FORMAT = "trustmesh.model-manifest/1"
_SEALED = "manifest.json"

ModelDigest = NewType("ModelDigest", str)


def manifest_path(path: Path | str) -> Path:
    """Return the manifest path that belongs to a model file."""
    p = Path(path)
    return p.with_name(p.name + MANIFEST_SUFFIX)


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a model's numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("trustmesh", "numpy", "pandas", "scikit-learn", "lightgbm", "torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "absent"
    return out


@dataclass(frozen=True, slots=True)
class Manifest:
    """Provenance and integrity record of a saved model (see module docstring)."""

    model_id: str
    kind: str
    features: tuple[str, ...]
    classes: tuple[str, ...]
    threshold: float
    seed: int
    params: dict[str, Any]
    encoder: dict[str, Any]
    data_digest: str | None
    artifact_sha256: ModelDigest
    created: str
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """Everything except the artifact digest (what is sealed inside the artifact)."""
        return cast(dict[str, Any], json_ready({
            "format": _FORMAT,
            "model_id": self.model_id,
            "kind": self.kind,
            "features": list(self.features),
            "classes": list(self.classes),
            "threshold": self.threshold,
            "seed": self.seed,
            "params": self.params,
            "encoder": self.encoder,
            "data_digest": self.data_digest,
            "created": self.created,
            "versions": self.versions,
            "metrics": self.metrics,
            "training": self.training,
            "calibration": self.calibration,
        }))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready manifest."""
        return {**self.body(), "artifact_sha256": self.artifact_sha256}

    def to_json(self) -> str:
        """Serialise for humans (indented, sorted keys)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, doc: Any, where: str = "manifest") -> Manifest:
        """Build from a parsed manifest, checking every field's type."""
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ArtifactDigestError(f"{where}: not a {_FORMAT} manifest")
        try:
            features = doc["features"]
            classes = doc["classes"]
            if not (isinstance(features, list) and all(isinstance(f, str) for f in features)):
                raise TypeError("features must be a list of strings")
            if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
                raise TypeError("classes must be a list of >= 2 strings")
            threshold = float(doc["threshold"])
            if not 0.0 <= threshold <= 1.0:
                raise ValueError("threshold must be in [0, 1]")
            sha = str(doc["artifact_sha256"])
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise ValueError("artifact_sha256 must be 64 lowercase hex digits")
            for key in ("params", "encoder"):
                if not isinstance(doc[key], dict):
                    raise TypeError(f"{key} must be an object")
            return cls(
                model_id=str(doc["model_id"]),
                kind=str(doc["kind"]),
                features=tuple(features),
                classes=tuple(classes),
                threshold=threshold,
                seed=int(doc["seed"]),
                params=dict(doc["params"]),
                encoder=dict(doc["encoder"]),
                data_digest=None if doc.get("data_digest") is None else str(doc["data_digest"]),
                artifact_sha256=ModelDigest(sha),
                created=str(doc.get("created", "")),
                versions=dict(doc.get("versions") or {}),
                metrics=dict(doc.get("metrics") or {}),
                training=dict(doc.get("training") or {}),
                calibration=dict(doc.get("calibration") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactDigestError(f"{where}: malformed manifest ({exc})") from None

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "manifest") -> Manifest:
        """Parse manifest JSON text."""
        try:
            doc = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ArtifactDigestError(f"{where}: manifest is not valid JSON ({exc})") from None
        return cls.from_dict(doc, where)


def _model_id(body: Mapping[str, Any]) -> str:
    ident = {k: body[k] for k in ("kind", "features", "classes", "seed", "params", "data_digest", "created")}
    return "tm-" + hashlib.sha256(rfc8785.dumps(json_ready(ident))).hexdigest()[:20]


def save_model(
    detector: BaseDetector,
    path: Path | str,
    *,
    data_digest: str | None = None,
    metrics: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    created: str | None = None,
) -> Manifest:
    """Write ``path`` (the artifact) and ``path.manifest.json``; return the manifest.

    ``data_digest`` is the training table's digest (``LabelledTable.digest``); ``metrics`` the
    validation metrics; ``training`` free-form provenance (dataset name, split, held-out rows hash).
    """
    target = Path(path)
    if target.is_dir():
        raise InputError(f"{target}: is a directory; give a model file path")
    meta, blobs = detector.container()
    stamp = created or _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    draft = Manifest(
        model_id="",
        kind=detector.name,
        features=tuple(detector.feature_names),
        classes=tuple(detector.classes_),
        threshold=float(detector.threshold),
        seed=int(detector.seed),
        params=json_ready(detector.get_params()),
        encoder=meta["encoder"],
        data_digest=data_digest,
        artifact_sha256=ModelDigest("0" * 64),
        created=stamp,
        versions=library_versions(),
        metrics=json_ready(dict(metrics or {})),
        training=json_ready(dict(training or {})),
        calibration=json_ready(detector.calibration),
    )
    body = draft.body()
    body["model_id"] = _model_id(body)
    blobs = {**blobs, _SEALED: rfc8785.dumps(body)}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    write_container(tmp, meta, blobs)
    digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
    os.replace(tmp, target)
    manifest = Manifest.from_dict({**body, "artifact_sha256": digest})
    manifest_path(target).write_text(manifest.to_json(), encoding="utf-8")
    return manifest


def read_manifest(path: Path | str) -> Manifest:
    """Read the manifest beside a model file (no integrity check of the artifact)."""
    mpath = manifest_path(path)
    try:
        text = mpath.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{mpath}: model manifest not found (a model is MODEL plus MODEL{MANIFEST_SUFFIX})") from None
    return Manifest.from_json(text, str(mpath))


def load_model(path: Path | str) -> tuple[BaseDetector, Manifest]:
    """Load a model, verifying the artifact digest and the sealed manifest; raise on any mismatch."""
    target = Path(path)
    if not target.exists():
        raise InputError(f"{target}: model file not found")
    manifest = read_manifest(target)
    raw = target.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest.artifact_sha256:
        raise ArtifactDigestError(
            f"{target}: sha256 {digest[:16]}... does not match the manifest ({manifest.artifact_sha256[:16]}...)"
        )
    try:
        meta, blobs = read_container(target)
    except ModelError as exc:
        raise ArtifactDigestError(str(exc)) from None
    sealed = blobs.pop(_SEALED, None)
    if sealed is None:
        raise ArtifactDigestError(f"{target}: artifact carries no sealed manifest")
    if sealed != rfc8785.dumps(manifest.body()):
        raise ArtifactDigestError(f"{manifest_path(target)}: manifest differs from the copy sealed in the artifact")
    if meta.get("kind") != manifest.kind or float(meta.get("threshold", -1)) != manifest.threshold:
        raise ArtifactDigestError(f"{target}: artifact kind/threshold disagree with the manifest")
    detector = BaseDetector._from_parts(meta, blobs, str(target))
    if tuple(detector.feature_names) != manifest.features or tuple(detector.classes_) != manifest.classes:
        raise ArtifactDigestError(f"{target}: artifact features/classes disagree with the manifest")
    return detector, manifest
