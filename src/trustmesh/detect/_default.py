"""The default pcap model: works on any canonical flow source without a training step by the user.

Design (docs/detectors.md, "Default pcap model"): TON_IoT's network records are Zeek flows, so they map
onto the canonical schema (``ton_iot_to_canonical``). Byte units were checked, not assumed: TON_IoT's
``src_bytes``/``dst_bytes`` are Zeek payload bytes (``src_ip_bytes - src_bytes`` is exactly 28 bytes per
packet for UDP, 40-60 for TCP) and nfstream with ``accounting_mode=3`` reports payload bytes too (a
75-byte DNS query datagram counts 47), so both sides already speak payload bytes. What does not
transfer is the *traffic*: TON_IoT's benign flows are mostly one-sided (67 % of its benign DNS is S0,
unanswered) and its ports are that testbed's, so a model of "TON_IoT benign" flags most of any other
site (measured: 27-30 % of benign lab flows, every answered DNS query). Version 2 therefore

* is one multi-class LightGBM (``GBDTDetector(multiclass=True)``, early-stopped) over TON_IoT's
  classes on the shape features only (``DEFAULT_FEATURES``: no ``dst_port`` — a testbed's port plan is a
  shortcut — and no anomaly component, which by construction flags whatever a new site does
  differently). Its score is 1 - P(benign), spread over [0, 1]; its classes (scanning, ddos, dos,
  password, ...) map to ATT&CK techniques in the correlator;
* calibrates the threshold to 1 % false positives on a stratified 20 % validation split of TON_IoT;
* ships the alert policy ``{"mode": "corroborated"}`` in its manifest: off-site, a model alert is only
  raised for flows of a host the behaviour detectors (``detect/_behaviour.py``) already convicted
  (``pipeline.ml_alert_mask``). Without a site baseline the behaviour engine is the source of
  verdicts; ``trustmesh baseline`` builds a site model whose own threshold holds on the site.

Built lazily on first use, verified and cached under ``Settings().cache_dir / "models"`` keyed by the
TON_IoT file's sha256 and ``DEFAULT_MODEL_VERSION``.

Per-host aggregation (:func:`host_summary`) turns flow scores into a per-source-host table; a host
is flagged when at least ``min_alerts`` of its flows score at or above the threshold.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from trustmesh.detect._artifact import Manifest, load_model, save_model
from trustmesh.detect._base import BaseDetector
from trustmesh.errors import ArtifactDigestError, DatasetError, InputError, ModelError

__all__ = ["DEFAULT_ALERT_POLICY", "DEFAULT_FEATURES", "DEFAULT_MODEL_VERSION", "default_pcap_model", "host_summary"]

log = logging.getLogger(__name__)

#: Bump when the recipe below changes: cached models with another version are rebuilt.
DEFAULT_MODEL_VERSION = "3"
#: Canonical shape features TON_IoT provides and pcap/Zeek/Suricata sources also fill (no ports).
DEFAULT_FEATURES = (
    "proto", "service", "duration", "src_bytes", "dst_bytes", "src_pkts", "dst_pkts", "conn_state",
)  # fmt: skip
#: Model alerts need a behaviour verdict on the same source host (see the module docstring).
DEFAULT_ALERT_POLICY = {"mode": "corroborated", "standalone": None}
_DATASET = "ton-iot-network"
_SEED = 0
_N_ESTIMATORS = 48


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _train(csv: Path, digest: str, out: Path, *, max_rows: int | None = None) -> tuple[BaseDetector, Manifest]:
    """Fit, calibrate and save the default model (``max_rows``: a stratified subsample, for tests)."""
    from sklearn.model_selection import train_test_split

    from trustmesh.detect._gbdt import GBDTDetector
    from trustmesh.detect._metrics import binary_metrics
    from trustmesh.flows import ton_iot_to_canonical

    raw = pd.read_csv(csv, encoding="utf-8-sig", low_memory=False)
    flows = ton_iot_to_canonical(raw, source=str(csv))
    if max_rows is not None and max_rows < len(flows):
        keep, _ = train_test_split(np.arange(len(flows)), train_size=max_rows, random_state=_SEED,
                                   stratify=flows["attack_type"].astype(str))
        flows = flows.iloc[np.sort(keep)].reset_index(drop=True)
    X = flows[list(DEFAULT_FEATURES)]
    labels = flows["attack_type"].astype(str).to_numpy()
    is_attack = labels != "benign"
    idx = np.arange(len(X))
    fit_idx, val_idx = train_test_split(idx, test_size=0.2, stratify=labels, random_state=_SEED)
    # Fixed size: auto mode's size search costs minutes on 170k rows x 10 classes, and this model
    # only corroborates behaviour verdicts (DEFAULT_ALERT_POLICY), so its size is not worth a search.
    det = GBDTDetector(seed=_SEED, multiclass=True, n_estimators=_N_ESTIMATORS)
    det.fit(X.iloc[fit_idx], labels[fit_idx])
    det.calibrate(X.iloc[val_idx], is_attack[val_idx], target_fpr=0.01)
    val_scores = det.score(X.iloc[val_idx])
    metrics = binary_metrics(is_attack[val_idx], val_scores, det.threshold)
    metrics["benign_score_quantiles"] = {
        str(q): float(np.quantile(val_scores[~is_attack[val_idx]], q)) for q in (0.5, 0.9, 0.99)}
    manifest = save_model(
        det,
        out,
        data_digest=digest,
        metrics={"validation": metrics},
        training={
            "dataset": _DATASET,
            "file": csv.name,
            "recipe": f"default-pcap-model/{DEFAULT_MODEL_VERSION}",
            "split": {"kind": "stratified", "validation_size": 0.2, "seed": _SEED},
            "n_rows": int(len(X)),
            "target_fpr": 0.01,
            "alert_policy": dict(DEFAULT_ALERT_POLICY),
            "units": {"bytes": "payload (Zeek orig_bytes/resp_bytes; nfstream accounting_mode=3)",
                      "duration": "seconds", "packets": "all packets of the direction"},
        },
    )
    return det, manifest


def default_pcap_model(data_dir: Path | str | None = None) -> tuple[BaseDetector, Manifest]:
    """Return the default flow model (built and cached on first use) and its manifest.

    Raises :class:`DatasetError` when the TON_IoT network file is not available to build it.
    """
    from trustmesh.config import find_data_dir, load_settings
    from trustmesh.flows import dataset_path, verify_dataset

    settings = load_settings()
    root = find_data_dir(data_dir, settings)
    if root is None:
        raise DatasetError(f"the default pcap model is trained on {_DATASET}, which was not found; "
                           "set TRUSTMESH_DATA or pass --data-dir")  # fmt: skip
    verify_dataset(_DATASET, root)
    csv = Path(dataset_path(_DATASET, root))
    digest = _sha256(csv)
    cache = settings.cache_dir / "models"
    path = cache / f"default-pcap-v{DEFAULT_MODEL_VERSION}-{digest[:16]}.tm"
    if path.exists():
        try:
            return load_model(path)
        except (ArtifactDigestError, ModelError, InputError) as exc:
            log.warning("cached default model %s is unusable (%s); rebuilding", path, exc)
    cache.mkdir(parents=True, exist_ok=True)
    log.info("building the default pcap model from %s (cached at %s)", csv, path)
    _train(csv, digest, path)
    return load_model(path)


def host_summary(flows: pd.DataFrame, scores: np.ndarray, threshold: float, *, min_alerts: int = 1) -> pd.DataFrame:
    """Aggregate flow scores per source host.

    Columns: ``host, flows, alerts, max_score, mean_score, dst_hosts, dst_ports, flagged``; sorted with
    flagged hosts and the most alerts first.
    """
    if min_alerts < 1:
        raise ValueError(f"min_alerts must be >= 1, got {min_alerts}")
    s = np.asarray(scores, dtype=np.float64)
    if len(flows) != s.size:
        raise InputError(f"flows ({len(flows)}) and scores ({s.size}) differ in length")
    if "src_ip" not in flows.columns:
        raise InputError("flows have no src_ip column to aggregate by")
    frame = pd.DataFrame({
        "host": flows["src_ip"].astype(str).to_numpy(),
        "dst": flows["dst_ip"].astype(str).to_numpy() if "dst_ip" in flows.columns else "",
        "port": flows["dst_port"].to_numpy() if "dst_port" in flows.columns else 0,
        "score": s,
        "alert": s >= threshold,
    })  # fmt: skip
    grouped = frame.groupby("host", sort=True)
    out = pd.DataFrame({
        "flows": grouped.size(),
        "alerts": grouped["alert"].sum().astype(int),
        "max_score": grouped["score"].max(),
        "mean_score": grouped["score"].mean(),
        "dst_hosts": grouped["dst"].nunique(),
        "dst_ports": grouped["port"].nunique(),
    }).reset_index()  # fmt: skip
    out["flagged"] = out["alerts"] >= min_alerts
    return out.sort_values(["flagged", "alerts", "max_score"], ascending=[False, False, False]).reset_index(drop=True)
