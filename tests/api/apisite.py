"""Helpers for the operator API tests: a site made by a real pipeline run, and a real server on it."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

SYNSCAN = "pcaps/practical-packet-analysis/synscan.pcapng"
SCANNER = "172.16.0.8"

# a port scan waits for a person before the scanner is blocked (the shipped playbooks block at once)
APPROVAL_PLAYBOOK = """\
version: 1
playbooks:
  - name: block-scanner-after-approval
    description: Drop a scanning host once an operator approves.
    match:
      technique: [T1046]
    actions:
      - type: nftables
        params: {target: source, verdict: drop}
        ttl_s: 900
        approval: true
  - name: log-everything-else
    actions:
      - type: notify
        params: {message: "incident {incident_id}"}
"""


@dataclass(frozen=True)
class Site:
    """A deployment folder: config, ledger, state, playbook."""

    root: Path
    config: Path
    ledger_dir: Path
    state_dir: Path


def train_model(data_dir: Path, out: Path) -> Path:
    """A small multi-class GBDT trained on real TON_IoT flows mapped to the canonical schema."""
    from trustmesh.detect import GBDTDetector, save_model
    from trustmesh.flows import CANONICAL_FEATURES, ton_iot_to_canonical

    raw = pd.read_csv(data_dir / "ton-iot/network/train_test_network.csv.gz", encoding="utf-8-sig",
                      low_memory=False).sample(8000, random_state=1)
    flows = ton_iot_to_canonical(raw)
    detector = GBDTDetector(seed=0, multiclass=True).fit(flows[list(CANONICAL_FEATURES)],
                                                         flows["attack_type"].to_numpy())
    path = out / "gbdt.model"
    save_model(detector, path)
    return path


def shared_model(data_dir: Path, basetemp: Path) -> Path:
    """Train the test model once per pytest session (the API and the browser tests share it)."""
    out = basetemp / "api-model-shared"
    path = out / "gbdt.model"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        train_model(data_dir, out)
    return path


def make_site(root: Path, model: Path, data_dir: Path, *, extra_api: str = "") -> Site:
    """Write a pipeline TOML (with an [api] table) whose playbook needs approval for scans."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "playbooks.yaml").write_text(APPROVAL_PLAYBOOK, encoding="utf-8")
    config = root / "trustmesh.toml"
    config.write_text(
        f'[pipeline]\norigin = "test.trustmesh/api"\nledger_dir = "ledger"\nstate_dir = "state"\n'
        f'model = "{model}"\nsources = ["{data_dir / SYNSCAN}"]\nbatch_size = 512\n\n'
        f'[response]\nplaybooks = ["playbooks.yaml"]\n{extra_api}', encoding="utf-8")
    return Site(root, config, root / "ledger", root / "state")


def run_pipeline(site: Site) -> None:
    """Replay the configured capture through the real pipeline into the site's ledger and state."""
    from trustmesh.pipeline import Pipeline, PipelineConfig, open_sources

    cfg = PipelineConfig.load(site.config)
    pipeline = Pipeline.from_config(cfg)
    try:
        pipeline.run(open_sources(cfg.sources, cfg))
    finally:
        pipeline.close()


@dataclass(frozen=True)
class Served:
    """A running operator server."""

    url: str
    site: Site


@contextmanager
def serving(site: Site, **overrides: object) -> Iterator[Served]:
    """Run ``trustmesh serve``'s app for ``site`` in a thread on a free loopback port (real HTTP)."""
    import uvicorn

    from trustmesh.api import ServeConfig, create_app

    cfg = ServeConfig.load(site.config, port=1, **overrides)  # the socket below picks the real port
    app = create_app(cfg)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield Served(f"http://127.0.0.1:{port}", site)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
        app.state.context.close()


def token_for(site: Site, role: str, name: str) -> str:
    """Create a token in the site's token file."""
    from trustmesh.api import ServeConfig, TokenStore

    return TokenStore(ServeConfig.load(site.config).token_path).create(name, role)[0]
