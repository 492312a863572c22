"""Load a labelled dataset as the float matrices federated training needs.

Files are sha256-verified through the flows registry (``trustmesh.flows.verify_dataset``), then read
here with pandas. (``flows.load_dataset`` arrived while this was written; it orders and cleans columns
differently, so switching means re-running the published federated numbers - a follow-up.) Features: numeric columns as signed log1p then z-score with training statistics; categorical
columns one-hot over their most frequent values. IPs and ports are dropped (TON_IoT shortcut features).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from trustmesh.errors import DatasetError

__all__ = ["DATASETS", "FederatedData", "load_federated_data"]

_log = logging.getLogger(__name__)

DATASETS = ("nsl-kdd", "ton-iot-network", "ton-iot-telemetry")
_NSL_COLUMNS = (
    "duration protocol_type service flag src_bytes dst_bytes land wrong_fragment urgent hot num_failed_logins "
    "logged_in num_compromised root_shell su_attempted num_root num_file_creations num_shells num_access_files "
    "num_outbound_cmds is_host_login is_guest_login count srv_count serror_rate srv_serror_rate rerror_rate "
    "srv_rerror_rate same_srv_rate diff_srv_rate srv_diff_host_rate dst_host_count dst_host_srv_count "
    "dst_host_same_srv_rate dst_host_diff_srv_rate dst_host_same_src_port_rate dst_host_srv_diff_host_rate "
    "dst_host_serror_rate dst_host_srv_serror_rate dst_host_rerror_rate dst_host_srv_rerror_rate label difficulty"
).split()
# NSL-KDD attack names -> the usual four categories (Tavallaee et al. 2009)
_NSL_FAMILY = {
    **dict.fromkeys("back land neptune pod smurf teardrop apache2 mailbomb processtable udpstorm".split(), "dos"),
    **dict.fromkeys("ipsweep nmap portsweep satan mscan saint".split(), "probe"),
    **dict.fromkeys(("ftp_write guess_passwd imap multihop phf spy warezclient warezmaster named sendmail "
                     "snmpgetattack snmpguess worm xlock xsnoop httptunnel").split(), "r2l"),
    **dict.fromkeys("buffer_overflow loadmodule perl rootkit ps sqlattack xterm".split(), "u2r"),
}
_DROP = {"src_ip", "dst_ip", "src_port", "dst_port", "date", "time", "ts", "label", "type", "difficulty"}


@dataclass(frozen=True)
class FederatedData:
    """Encoded train/test matrices, integer labels (``classes[0] == "benign"``) and optional row groups."""

    name: str
    X_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    X_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]
    classes: tuple[str, ...]
    feature_names: tuple[str, ...]
    groups_train: npt.NDArray[np.str_] | None
    digest: str

    @property
    def n_features(self) -> int:
        """Number of encoded features."""
        return int(self.X_train.shape[1])


def _read_csv(path: Path, **kw: Any) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found (see ../shared/datasets/README.md)")
    return pd.read_csv(path, encoding="utf-8-sig", low_memory=False, **kw)


def _raw(name: str, data_dir: Path, seed: int) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series,
                                                        pd.Series | None]:
    if name == "nsl-kdd":
        tr = _read_csv(data_dir / "nsl-kdd" / "KDDTrain+.txt.gz", header=None, names=_NSL_COLUMNS)
        te = _read_csv(data_dir / "nsl-kdd" / "KDDTest+.txt.gz", header=None, names=_NSL_COLUMNS)

        def lab(df: pd.DataFrame) -> pd.Series:
            return df["label"].map(lambda v: "benign" if v == "normal" else _NSL_FAMILY.get(v, "other"))

        return tr, lab(tr), te, lab(te), None
    if name == "ton-iot-network":
        df = _read_csv(data_dir / "ton-iot" / "network" / "train_test_network.csv.gz")
        labels = df["type"].astype(str).str.strip().replace({"normal": "benign"})
        groups = None
    elif name == "ton-iot-telemetry":
        frames = []
        for path in sorted((data_dir / "ton-iot" / "iot-telemetry").glob("Train_Test_IoT_*.csv.gz")):
            part = _read_csv(path)
            part.columns = [c.strip() for c in part.columns]
            part["__device"] = path.name.removeprefix("Train_Test_IoT_").removesuffix(".csv.gz")
            frames.append(part)
        if not frames:
            raise DatasetError(f"{data_dir / 'ton-iot' / 'iot-telemetry'}: no Train_Test_IoT_*.csv.gz files")
        df = pd.concat(frames, ignore_index=True)
        labels = df["type"].astype(str).str.strip().replace({"normal": "benign"})
        groups = df.pop("__device")
    else:
        raise DatasetError(f"unknown dataset {name!r}; federated learning supports {', '.join(DATASETS)}")
    # no official split: stratified 80/20 with the seed
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(df), dtype=bool)
    for cls in labels.unique():
        idx = np.flatnonzero(labels.to_numpy() == cls)
        test_mask[rng.choice(idx, size=max(1, int(round(0.2 * len(idx)))), replace=False)] = True
    g_train = None if groups is None else groups[~test_mask].reset_index(drop=True)
    return (df[~test_mask].reset_index(drop=True), labels[~test_mask].reset_index(drop=True),
            df[test_mask].reset_index(drop=True), labels[test_mask].reset_index(drop=True), g_train)


def _encode(train: pd.DataFrame, test: pd.DataFrame, max_vocab: int = 16) -> tuple[
        npt.NDArray[np.float32], npt.NDArray[np.float32], tuple[str, ...]]:
    cols = [c for c in train.columns if c not in _DROP and not c.startswith("__")]
    num_tr, num_te, names = [], [], []
    for c in cols:
        s_tr = pd.to_numeric(train[c].replace("-", np.nan), errors="coerce")
        if s_tr.notna().mean() > 0.95 or train[c].dtype.kind in "fiub":
            s_te = pd.to_numeric(test[c].replace("-", np.nan), errors="coerce")
            a_tr = s_tr.fillna(0).to_numpy(np.float64)
            a_te = s_te.fillna(0).to_numpy(np.float64)
            a_tr, a_te = np.sign(a_tr) * np.log1p(np.abs(a_tr)), np.sign(a_te) * np.log1p(np.abs(a_te))
            mu, sd = a_tr.mean(), a_tr.std() or 1.0
            num_tr.append((a_tr - mu) / sd)
            num_te.append((a_te - mu) / sd)
            names.append(c)
        else:
            s_tr = train[c].astype(str).str.strip()
            s_te = test[c].astype(str).str.strip()
            for v in s_tr.value_counts().index[:max_vocab]:
                num_tr.append((s_tr == v).to_numpy(np.float64))
                num_te.append((s_te == v).to_numpy(np.float64))
                names.append(f"{c}={v}")
    X_tr = np.clip(np.stack(num_tr, axis=1), -10, 10).astype(np.float32)
    X_te = np.clip(np.stack(num_te, axis=1), -10, 10).astype(np.float32)
    return X_tr, X_te, tuple(names)


def load_federated_data(
    name: str, data_dir: Path | str | None = None, *, max_train: int | None = None, max_test: int | None = None,
    seed: int = 0,
) -> FederatedData:
    """Load ``name`` (nsl-kdd | ton-iot-network | ton-iot-telemetry), optionally subsampled (stratified-ish
    uniform sample with ``seed``), encoded to float32 with training-set statistics."""
    from trustmesh.config import DATA_HINT, find_data_dir

    root = find_data_dir(data_dir)
    if root is None or not root.is_dir():
        raise DatasetError(f"no dataset folder found: {DATA_HINT}")
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; federated learning supports {', '.join(DATASETS)}")
    from trustmesh.flows import verify_dataset

    # integrity first: the flows registry checks every file's sha256 (DatasetError names bad files)
    for split in ("train", "test") if name == "nsl-kdd" else (None,):
        verify_dataset(name, root, split=split)
    tr, ytr, te, yte, groups = _raw(name, root, seed)
    rng = np.random.default_rng(seed + 1)
    if max_train is not None and len(tr) > max_train:
        keep = np.sort(rng.choice(len(tr), size=max_train, replace=False))
        tr, ytr = tr.iloc[keep].reset_index(drop=True), ytr.iloc[keep].reset_index(drop=True)
        groups = None if groups is None else groups.iloc[keep].reset_index(drop=True)
    if max_test is not None and len(te) > max_test:
        keep = np.sort(rng.choice(len(te), size=max_test, replace=False))
        te, yte = te.iloc[keep].reset_index(drop=True), yte.iloc[keep].reset_index(drop=True)
    classes = ("benign", *sorted(set(ytr.unique()) - {"benign"}))
    index = {c: i for i, c in enumerate(classes)}
    known = yte.isin(classes)
    if not known.all():
        _log.info("%s: dropping %d test rows of classes unseen in training", name, int((~known).sum()))
        te, yte = te[known.to_numpy()].reset_index(drop=True), yte[known.to_numpy()].reset_index(drop=True)
    X_tr, X_te, names = _encode(tr, te)
    y_tr = ytr.map(index).to_numpy(np.int64)
    y_te = yte.map(index).to_numpy(np.int64)
    digest = hashlib.sha256(X_tr.tobytes() + y_tr.tobytes() + X_te.tobytes() + y_te.tobytes()).hexdigest()
    return FederatedData(name, X_tr, y_tr, X_te, y_te, classes, names,
                         None if groups is None else groups.to_numpy(dtype=str), digest)
