"""Model passports: a signed, ledger-recorded statement of what a model is and what was shown about it.

A passport binds the artifact's sha256 (and the sha256 of its RFC 8785 manifest) to the model's
lineage (training-data digest, training configuration, parameters, parent models, federated rounds
with their ledger indices), its validation metrics, robustness certificates and energy figures. The
signed body is RFC 8785 canonical JSON signed with Ed25519 (a ``NoteSigner`` key file, mode 0600).

Appending a passport writes a ``model.passport`` ledger entry holding the passport's digest, the
signer's key and one digest per section, so a verifier holding the ledger can name the section
that was changed; the entry is covered by the next signed checkpoint like any other leaf (and is
therefore anchorable). :func:`verify_passport` recomputes what it can and raises
:class:`~trustmesh.errors.PassportError` naming the first field that differs; it never returns False.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time as _time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import rfc8785

from trustmesh._jsonable import json_ready
from trustmesh.errors import InputError, PassportError, SignatureError, VerificationError

__all__ = [
    "PASSPORT_ENTRY_KIND",
    "PASSPORT_SUFFIX",
    "Passport",
    "build_passport",
    "passport_path",
    "record_passport",
    "require_passport",
    "verify_passport",
]

_FORMAT = "trustmesh.model-passport/1"
PASSPORT_ENTRY_KIND = "model.passport"
_STATEMENT = b"trustmesh/model-passport/1 "
_SECTIONS = ("model", "lineage", "metrics", "robustness", "energy", "proofs")
_MAX_BYTES = 4 * 1024 * 1024


def _digest(obj: Any) -> str:
    return hashlib.sha256(rfc8785.dumps(obj)).hexdigest()


def file_sha256(path: Path | str) -> str:
    """Return the sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _lineage(manifest: Any) -> dict[str, Any]:
    training = dict(manifest.training or {})
    fed = training.get("federated") if isinstance(training.get("federated"), dict) else None
    parents = training.get("parents") or training.get("parent_models") or []
    federated = None
    if fed is not None:
        ledger = fed.get("ledger") or {}
        federated = {
            "rounds": fed.get("rounds"),
            "round_aggregates": fed.get("round_aggregates") or [],
            "weights_sha256": fed.get("weights_sha256"),
            "epsilon": fed.get("epsilon"),
            "ledger_origin": ledger.get("origin"),
            "round_indices": ledger.get("round_indices") or [],
            "model_entry": ledger.get("model_entry"),
        }
    return cast(dict[str, Any], json_ready({
        "data_digest": manifest.data_digest,
        "training": training,
        "params": manifest.params,
        "seed": manifest.seed,
        "versions": manifest.versions,
        "created": manifest.created,
        "parents": list(parents),
        "federated": federated,
    }))


@dataclass(frozen=True, slots=True)
class Passport:
    """A signed model passport (valid once constructed: format, sections and encodings checked)."""

    body: dict[str, Any]
    signature: str  # base64 Ed25519 signature over _STATEMENT + sha256(RFC 8785 body)
    ledger: dict[str, Any] | None = None  # where it was recorded: origin, index (not signed: added after)

    @property
    def digest(self) -> str:
        """Return the sha256 of the signed body's canonical JSON."""
        return _digest(self.body)

    @property
    def model_id(self) -> str:
        """Return the passport's model id."""
        return str(self.body["model"]["model_id"])

    def section_digests(self) -> dict[str, str]:
        """Return one sha256 per section (recorded on the ledger, so a verifier can name the changed one)."""
        return {name: _digest(self.body[name]) for name in _SECTIONS}

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document."""
        doc: dict[str, Any] = {**self.body, "signature": self.signature}
        if self.ledger is not None:
            doc["ledger"] = self.ledger
        return doc

    def to_json(self) -> str:
        """Serialise for humans (indented, sorted keys)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path | str) -> None:
        """Write the passport JSON to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, doc: Any, where: str = "passport") -> Passport:
        """Build from a parsed document, checking the format and every section's type."""
        if not isinstance(doc, dict):
            raise InputError(f"{where}: a passport is a JSON object")
        if doc.get("format") != _FORMAT:
            raise InputError(f"{where}: field 'format' is not {_FORMAT!r}")
        body = {k: v for k, v in doc.items() if k not in ("signature", "ledger")}
        for name in _SECTIONS:
            if name not in body:
                raise InputError(f"{where}: field {name!r} is missing")
        for name in ("model", "lineage", "metrics", "energy"):
            if not isinstance(body[name], dict):
                raise InputError(f"{where}: field {name!r} must be an object")
        for name in ("robustness", "proofs"):
            if not isinstance(body[name], list):
                raise InputError(f"{where}: field {name!r} must be a list")
        extra = set(body) - set(_SECTIONS) - {"format", "issued", "signer"}
        if extra:
            raise InputError(f"{where}: unknown field(s) {sorted(extra)}")
        model = body["model"]
        for key in ("model_id", "kind", "artifact_sha256", "manifest_sha256"):
            if not isinstance(model.get(key), str):
                raise InputError(f"{where}: field 'model.{key}' must be a string")
        signer = body.get("signer")
        if not isinstance(signer, dict) or not isinstance(signer.get("vkey"), str):
            raise InputError(f"{where}: field 'signer.vkey' must be a string")
        sig = doc.get("signature")
        if not isinstance(sig, str):
            raise InputError(f"{where}: field 'signature' must be a base64 string")
        try:
            base64.b64decode(sig, validate=True)
        except ValueError:
            raise InputError(f"{where}: field 'signature' is not base64") from None
        ledger = doc.get("ledger")
        if ledger is not None and not (isinstance(ledger, dict) and isinstance(ledger.get("index"), int)
                                       and isinstance(ledger.get("origin"), str)):
            raise InputError(f"{where}: field 'ledger' must hold an integer 'index' and an 'origin'")
        try:
            rfc8785.dumps(body)
        except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: not canonical-JSON representable ({exc})") from None
        return cls(body=body, signature=sig, ledger=ledger)

    @classmethod
    def load(cls, path: Path | str) -> Passport:
        """Read and parse a passport file (size-limited, strict JSON)."""
        from trustmesh._safeload import JsonLimits, load_json

        p = Path(path)
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{p}: passport file not found") from None
        if len(raw) > _MAX_BYTES:
            raise InputError(f"{p}: passport is larger than {_MAX_BYTES} bytes")
        return cls.from_dict(load_json(raw, str(p), limits=JsonLimits(max_bytes=_MAX_BYTES)), str(p))


def _message(body: Mapping[str, Any]) -> bytes:
    return _STATEMENT + _digest(body).encode("ascii")


def build_passport(
    model_path: Path | str,
    signer: Any,
    *,
    robustness: list[dict[str, Any]] | None = None,
    energy: Mapping[str, Any] | None = None,
    proofs: list[dict[str, Any]] | None = None,
    issued: float | None = None,
) -> Passport:
    """Load and check the model, assemble its passport and sign it with ``signer`` (a ``NoteSigner``).

    The model is loaded through :func:`trustmesh.detect.load_model`, so an artifact that does not
    match its manifest is refused before anything is signed.
    """
    from trustmesh.detect import load_model

    path = Path(model_path)
    det, manifest = load_model(path)
    body: dict[str, Any] = {
        "format": _FORMAT,
        "issued": float(_time.time() if issued is None else issued),
        "signer": {"vkey": signer.verifier.to_vkey()},
        "model": {
            "model_id": manifest.model_id,
            "kind": manifest.kind,
            "artifact_sha256": str(manifest.artifact_sha256),
            "manifest_sha256": _digest(manifest.to_dict()),
            "features": list(manifest.features),
            "classes": list(manifest.classes),
            "threshold": manifest.threshold,
        },
        "lineage": _lineage(manifest),
        "metrics": json_ready(manifest.metrics),
        "robustness": json_ready(list(robustness or [])),
        "energy": json_ready(dict(energy or {})),
        "proofs": json_ready(list(proofs or [])),
    }
    del det
    sig = base64.b64encode(signer.sign(_message(body))).decode("ascii")
    return Passport(body=body, signature=sig)


def record_passport(passport: Passport, ledger: Any, *, refs: tuple[int, ...] = ()) -> Passport:
    """Append a ``model.passport`` entry for ``passport`` and sign a checkpoint; return it with its index."""
    payload = {
        "format": _FORMAT,
        "model_id": passport.model_id,
        "artifact_sha256": passport.body["model"]["artifact_sha256"],
        "passport_sha256": passport.digest,
        "signer": passport.body["signer"]["vkey"],
        "sections": passport.section_digests(),
    }
    index = ledger.append_one(PASSPORT_ENTRY_KIND, payload, refs=list(refs))
    ledger.checkpoint()
    return Passport(body=passport.body, signature=passport.signature,
                    ledger={"origin": ledger.origin, "index": index})


def _first_difference(a: Any, b: Any, path: str) -> str:
    """Return the dotted path of the first leaf where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b or a[key] != b[key]:
                return _first_difference(a.get(key), b.get(key), f"{path}.{key}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return path


def _checked_manifest(model_path: Path) -> Any:
    """Return the model's manifest after the checks ``load_model`` makes, without building the detector.

    (Deserialising an MLP imports torch, which alone takes seconds; a passport check needs only bytes.)
    """
    from trustmesh.detect._artifact import _SEALED, read_manifest
    from trustmesh.detect._base import read_container
    from trustmesh.errors import ArtifactDigestError, ModelError

    if not model_path.is_file():
        raise InputError(f"{model_path}: model file not found")
    manifest = read_manifest(model_path)
    digest = file_sha256(model_path)
    if digest != manifest.artifact_sha256:
        raise ArtifactDigestError(f"{model_path}: sha256 {digest[:16]}... does not match the manifest "
                                  f"({manifest.artifact_sha256[:16]}...)")
    try:
        meta, blobs = read_container(model_path)
    except ModelError as exc:
        raise ArtifactDigestError(str(exc)) from None
    if blobs.get(_SEALED) != rfc8785.dumps(manifest.body()):
        raise ArtifactDigestError(f"{model_path}: manifest differs from the copy sealed in the artifact")
    if meta.get("kind") != manifest.kind:
        raise ArtifactDigestError(f"{model_path}: artifact kind disagrees with the manifest")
    return manifest


def _check_against_model(passport: Passport, model_path: Path) -> None:
    manifest = _checked_manifest(model_path)
    model = passport.body["model"]
    expected_model = {
        "model_id": manifest.model_id, "kind": manifest.kind, "artifact_sha256": str(manifest.artifact_sha256),
        "manifest_sha256": _digest(manifest.to_dict()), "features": list(manifest.features),
        "classes": list(manifest.classes), "threshold": manifest.threshold,
    }
    if model != expected_model:
        field = _first_difference(model, expected_model, "model")
        raise PassportError(f"passport field {field!r} does not match the model {model_path}")
    lineage = _lineage(manifest)
    if passport.body["lineage"] != lineage:
        field = _first_difference(passport.body["lineage"], lineage, "lineage")
        raise PassportError(f"passport field {field!r} does not match the model manifest of {model_path}")
    metrics = json_ready(manifest.metrics)
    if passport.body["metrics"] != metrics:
        field = _first_difference(passport.body["metrics"], metrics, "metrics")
        raise PassportError(f"passport field {field!r} does not match the model manifest's metrics")


def _check_ledger(passport: Passport, ledger_dir: Path) -> None:
    from trustmesh.ledger import Ledger, verify_inclusion

    if passport.ledger is None:
        raise PassportError("passport field 'ledger' is missing: it was never recorded on a ledger")
    with Ledger.open(ledger_dir, read_only=True) as led:
        if passport.ledger["origin"] != led.origin:
            raise PassportError(f"passport field 'ledger.origin' is {passport.ledger['origin']!r}, "
                                f"the ledger at {ledger_dir} is {led.origin!r}")
        index = int(passport.ledger["index"])
        cp = led.latest_checkpoint()
        if cp is None or not 0 <= index < cp.size:
            raise PassportError(f"passport field 'ledger.index' ({index}) is not covered by a signed checkpoint "
                                f"of {ledger_dir}")
        cp.verify(led.verifier)
        raw = led.entry_bytes(index)
        verify_inclusion(led.prove_inclusion(index, cp.size), cp, raw)
        entry = led.entry(index)
    if entry.kind != PASSPORT_ENTRY_KIND:
        raise PassportError(f"passport field 'ledger.index': entry {index} is a {entry.kind!r}, not a passport")
    payload = entry.payload
    if payload.get("signer") != passport.body["signer"]["vkey"]:
        raise PassportError(f"passport field 'signer.vkey' differs from the key recorded at ledger entry {index}")
    recorded = payload.get("sections") or {}
    for name, digest in passport.section_digests().items():
        if recorded.get(name) != digest:
            raise PassportError(f"passport field {name!r} differs from what ledger entry {index} recorded")
    if payload.get("passport_sha256") != passport.digest:
        top = {k: passport.body[k] for k in ("format", "issued")}
        raise PassportError(f"passport field 'issued' or 'format' differs from ledger entry {index} "
                            f"(recorded {str(payload.get('passport_sha256'))[:16]}..., now {_digest(top)[:8]}...)")


def verify_passport(
    passport: Passport,
    *,
    model_path: Path | str | None = None,
    ledger_dir: Path | str | None = None,
    signer_vkey: str | None = None,
) -> None:
    """Verify a passport; raise :class:`~trustmesh.errors.PassportError` naming the field on any mismatch.

    Checks, in order: the model file (artifact sha256, sealed manifest, every ``model``, ``lineage``
    and ``metrics`` field) when ``model_path`` is given; the ledger entry (inclusion under the latest
    signed checkpoint, the recorded signer key and section digests) when ``ledger_dir`` is given; the
    pinned signer key when ``signer_vkey`` is given; then the Ed25519 signature over the whole body.
    """
    from trustmesh.ledger import NoteVerifier

    if model_path is not None:
        _check_against_model(passport, Path(model_path))
    if ledger_dir is not None:
        _check_ledger(passport, Path(ledger_dir))
    vkey = passport.body["signer"]["vkey"]
    if signer_vkey is not None and vkey != signer_vkey:
        raise PassportError("passport field 'signer.vkey' is not the pinned signer key")
    try:
        verifier = NoteVerifier.from_vkey(vkey)
        verifier.verify(_message(passport.body), base64.b64decode(passport.signature))
    except (SignatureError, InputError) as exc:
        raise PassportError(f"passport field 'signature' does not verify over the body ({exc})") from None
    except VerificationError:
        raise


PASSPORT_SUFFIX = ".passport.json"


def passport_path(model_path: Path | str) -> Path:
    """Return the passport path that belongs to a model file (``MODEL.passport.json``)."""
    p = Path(model_path)
    return p.with_name(p.name + PASSPORT_SUFFIX)


def require_passport(model_path: Path | str | None, *, ledger_dir: Path | str | None = None) -> Passport:
    """Verify the passport beside ``model_path``; raise if it is missing or does not verify.

    This is what ``run`` (``require_passport = true``) and ``detect --require-passport`` call before
    using a model: the model file, the sealed manifest and the signature are checked, and the
    ledger entry too when ``ledger_dir`` is given.
    """
    if model_path is None:
        raise PassportError("require_passport is set but no model is configured (the built-in default "
                            "model carries no passport)")
    path = passport_path(model_path)
    if not path.is_file():
        raise PassportError(f"{path}: no passport for model {model_path} (require_passport is set; "
                            f"make one with `trustmesh model passport {model_path} --out {path}`)")
    passport = Passport.load(path)
    verify_passport(passport, model_path=model_path, ledger_dir=ledger_dir)
    return passport
