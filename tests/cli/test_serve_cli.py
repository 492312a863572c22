"""``trustmesh token ...``, ``trustmesh serve`` over TLS, and the demo's one-time console token."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from apisite import Site, make_site, run_pipeline, shared_model  # noqa: E402

from trustmesh.cli import app  # noqa: E402

TRUSTMESH = Path(sys.executable).with_name("trustmesh")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trustmesh-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def _wait_up(check: object, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read() if proc.stderr else ''}")
        try:
            check()  # type: ignore[operator]
            return
        except (httpx.TransportError, OSError):
            time.sleep(0.2)
    raise AssertionError("server did not come up")


@pytest.fixture(scope="module")
def cli_site(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = make_site(tmp_path_factory.mktemp("cli-site"), shared_model(data_dir, tmp_path_factory.getbasetemp()), data_dir)
    run_pipeline(site)
    return site


def test_token_create_prints_once_stores_only_a_hash_list_revoke(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text('[pipeline]\nstate_dir = "state"\n')
    runner = CliRunner()
    made = runner.invoke(app, ["token", "create", "--role", "responder", "--name", "rita", "--config", str(cfg), "--json"])
    assert made.exit_code == 0, made.output
    doc = json.loads(made.stdout)
    token = doc["token"]
    assert token.startswith("tm_") and len(token) >= 40 and doc["role"] == "responder"
    path = tmp_path / "state" / "api-tokens.json"
    assert path.stat().st_mode & 0o777 == 0o600
    text = path.read_text()
    assert token not in text and doc["token_id"] in text
    listed = runner.invoke(app, ["token", "list", "--config", str(cfg), "--json"])
    assert listed.exit_code == 0 and token not in listed.stdout and "sha256" not in listed.stdout
    assert json.loads(listed.stdout)[0]["name"] == "rita"
    gone = runner.invoke(app, ["token", "revoke", doc["token_id"], "--config", str(cfg)])
    assert gone.exit_code == 0 and "revoked" in gone.stdout
    assert json.loads(runner.invoke(app, ["token", "list", "--config", str(cfg), "--json"]).stdout)[0]["revoked"]
    bad = runner.invoke(app, ["token", "create", "--role", "root", "--name", "x", "--config", str(cfg)])
    assert bad.exit_code == 2 and "role must be one of viewer, responder, admin" in bad.output
    path.chmod(0o644)
    loose = runner.invoke(app, ["token", "list", "--config", str(cfg)])
    assert loose.exit_code == 2 and "readable by others" in loose.output and "Traceback" not in loose.output


def test_serve_over_tls(cli_site: Site, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    made = CliRunner().invoke(app, ["token", "create", "--role", "viewer", "--name", "vic", "--config", str(cli_site.config), "--json"])
    token = json.loads(made.stdout)["token"]
    port = _free_port()
    with subprocess.Popen([str(TRUSTMESH), "serve", "--config", str(cli_site.config), "--port", str(port),
                           "--tls-cert", str(cert), "--tls-key", str(key)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        _check_tls(proc, port, cert, token)


def _check_tls(proc: subprocess.Popen[str], port: int, cert: Path, token: str) -> None:
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        url = f"https://127.0.0.1:{port}"
        _wait_up(lambda: httpx.get(f"{url}/healthz", verify=trust).raise_for_status(), proc)
        who = httpx.get(f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, verify=trust)
        assert who.status_code == 200 and who.json()["name"] == "vic"
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is refused by a verifying client
            httpx.get(f"{url}/healthz")
        with pytest.raises(httpx.TransportError):  # and plain HTTP gets no answer from the TLS port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_demo_serve_prints_a_one_time_admin_token_revoked_at_exit(cli_site: Site, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    shutil.copytree(cli_site.ledger_dir, out / "ledger")
    shutil.copytree(cli_site.state_dir, out / "state")
    port = _free_port()
    code = f"from pathlib import Path; from trustmesh.cli.serve import serve_demo; serve_demo(Path({str(out)!r}), port={port})"
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "COLUMNS": "400"}) as proc:
        _check_demo(proc)
    stored = json.loads((out / "state" / "api-tokens.json").read_text())["tokens"]
    assert [t["revoked"] is not None for t in stored if t["name"] == "demo-admin"] == [True]


def _check_demo(proc: subprocess.Popen[str]) -> None:
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)#token=(tm_[A-Za-z0-9_-]+)", line)
        assert m, line
        url, token = m.groups()
        _wait_up(lambda: httpx.get(f"{url}healthz").raise_for_status(), proc)
        who = httpx.get(f"{url}api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).json()
        assert who["role"] == "admin" and who["name"] == "demo-admin"
        assert httpx.get(f"{url}api/v1/summary", headers={"Authorization": f"Bearer {token}"}).json()["alerts"] > 0
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def test_bench_api_reports_index_and_latency(cli_site: Site) -> None:
    out = CliRunner().invoke(app, ["bench", "api", "--config", str(cli_site.config), "--requests", "3", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["alerts"] > 100 and doc["ledger_entries"] > doc["alerts"]
    assert doc["index_entries_per_s"] > 0 and doc["index_bytes_per_alert"] > 0
    assert set(doc["latency"]) == {"alerts?limit=100", "incidents", "ledger/entries (proof)", "summary"}
    assert all(v["median_ms"] > 0 for v in doc["latency"].values())


def test_incidents_approve_with_config_records_the_decision_at_once_by_name(cli_site: Site) -> None:
    from trustmesh.ledger import Ledger
    from trustmesh.respond import ApprovalQueue

    queue = ApprovalQueue(cli_site.state_dir)
    pending = queue.approvals("pending")
    queue.close()
    assert pending, "the fixture's scan must leave an approval waiting"
    runner = CliRunner()
    out = runner.invoke(app, ["incidents", "approve", pending[0].approval_id, "--config", str(cli_site.config),
                              "--operator", "olga", "--note", "seen on the span port", "--json"])
    assert out.exit_code == 0, out.output
    receipt = json.loads(out.stdout)
    with Ledger.open(cli_site.ledger_dir, read_only=True) as led:
        op = led.entry(receipt["operator_entry"])
        assert op.kind == "operator.decision" and op.payload["operator"] == "olga" and op.payload["role"] == "local"
        decision = next(led.entry(r["leaf"]) for r in receipt["records"] if r["record_type"] == "decision")
        assert "olga" in decision.payload["reason"] and led.latest_checkpoint().size == receipt["tree_size"]  # type: ignore[union-attr]
    again = runner.invoke(app, ["incidents", "approve", pending[0].approval_id, "--config", str(cli_site.config)])
    assert again.exit_code == 2 and "already approved" in again.output and "Traceback" not in again.output
