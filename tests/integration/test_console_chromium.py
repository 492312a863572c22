"""The web console in real Chromium: sign in, watch a replay arrive, approve, verify proofs, catch tampering."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "api"))
from apisite import SCANNER, Site, make_site, serving, shared_model, token_for  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TRUSTMESH = Path(sys.executable).with_name("trustmesh")


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven by chromedriver, with a fresh profile."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is missing (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1500,950",
                f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def _wait(driver: Any, what: Callable[[Any], Any], timeout: float = 60, message: str = "") -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(what, message)


def _css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return list(driver.find_elements(By.CSS_SELECTOR, selector))


def _tamper_entry(ledger_dir: Path, leaf: int) -> None:
    """Change one digit of the stored entry's score inside its entry bundle (the hash tiles stay)."""
    db = sqlite3.connect(ledger_dir / "ledger.sqlite")
    try:
        (data,) = db.execute("SELECT data FROM bundles WHERE idx=?", (leaf >> 8,)).fetchone()
        raw = bytearray(data)
        off = 0
        for _ in range(leaf & 0xFF):  # walk the uint16 length prefixes to the entry
            off += 2 + ((raw[off] << 8) | raw[off + 1])
        length = (raw[off] << 8) | raw[off + 1]
        entry = bytes(raw[off + 2:off + 2 + length])
        pos = entry.find(b'"score":0.')
        assert pos >= 0, entry[:200]
        digit = off + 2 + pos + len(b'"score":0.')
        raw[digit] = ord("1") if raw[digit] != ord("1") else ord("2")
        db.execute("UPDATE bundles SET data=? WHERE idx=?", (bytes(raw), leaf >> 8))
        db.commit()
    finally:
        db.close()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.needs_data
def test_console_live_replay_approval_proof_and_tamper(browser: Any, data_dir: Path, tmp_path: Path,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    from selenium.webdriver.common.by import By

    # Arrange: an empty deployment, served before anything ran
    model = shared_model(data_dir, tmp_path_factory.getbasetemp())
    site: Site = make_site(tmp_path / "site", model, data_dir)
    token = token_for(site, "responder", "rita")
    with serving(site) as srv:
        driver = browser
        driver.get(srv.url + "/")
        # sign in: a wrong token is refused, the right one opens the console
        box = _wait(driver, lambda d: _css(d, "#token-input") or False)[0]
        box.send_keys("tm_" + "x" * 43)
        driver.find_element(By.ID, "signin-button").click()
        _wait(driver, lambda d: "not accepted" in d.find_element(By.ID, "signin-error").text)
        box = driver.find_element(By.ID, "token-input")
        box.clear()
        box.send_keys(token)
        driver.find_element(By.ID, "signin-button").click()
        _wait(driver, lambda d: "rita" in d.find_element(By.ID, "whoami").text)
        _wait(driver, lambda d: _css(d, "#alerts-body tr.empty"), message="the empty alert stream")

        # Act 1: replay a real capture into the served state while the page is open
        env = {**os.environ, "TRUSTMESH_DATA": str(data_dir)}
        run = subprocess.run([str(TRUSTMESH), "run", "--config", str(site.config), "--json"], env=env,
                             capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stderr[-2000:]
        # Assert: the live stream shows the scanner's alerts without a reload
        rows = _wait(driver, lambda d: _css(d, "#alerts-body tr[data-leaf]") or False, message="alerts to arrive")
        _wait(driver, lambda d: len(_css(d, "#alerts-body tr.fresh")) > 0 or len(_css(d, "#alerts-body tr[data-leaf]")) > 50)
        assert rows and SCANNER in driver.find_element(By.ID, "alerts-body").text
        assert int(driver.find_element(By.ID, "alert-count").text) > 100

        # Act 2: approve the queued block from the browser
        driver.find_element(By.CSS_SELECTOR, 'a[href="#/approvals"]').click()
        button = _wait(driver, lambda d: _css(d, ".approve-btn") or False, message="a pending approval")[0]
        approval_id = button.get_attribute("data-approval")
        driver.find_element(By.CSS_SELECTOR, f'tr[data-approval="{approval_id}"] input.note').send_keys("confirmed scan")
        button.click()
        receipt = _wait(driver, lambda d: _css(d, "#decision-receipt") or False, message="the ledger receipt")[0]
        leaves = [int(a.text.lstrip("#")) for a in receipt.find_elements(By.CSS_SELECTOR, "a.leaf")]
        assert len(leaves) >= 2  # the operator.decision entry and the decision (+ its dry-run result)
        driver.save_screenshot(str(tmp_path / "approvals.png"))

        # Assert: it is on the ledger now; the browser verifies its proof and walks the chain to the model
        result_leaf = leaves[-1]
        driver.get(f"{srv.url}/#/ledger/{result_leaf}")
        verdict = _wait(driver, lambda d: _css(d, "#verify-result") or False, message="a verdict")[0]
        assert verdict.get_attribute("data-status") == "verified", verdict.text
        steps = driver.find_element(By.ID, "verify-steps").text
        assert "Ed25519 signature" in steps and "lead to the signed root" in steps
        assert "dry_run" in driver.find_element(By.CSS_SELECTOR, "pre.json").text
        driver.find_element(By.ID, "chain-button").click()
        chain = _wait(driver, lambda d: _css(d, "#chain-result") or False, timeout=90, message="the chain walk")[0]
        kinds = chain.get_attribute("data-kinds").split(",")
        assert chain.get_attribute("data-status") == "verified", chain.text
        assert kinds[:4] == ["action_result", "decision", "incident", "alert"] and kinds[-1] == "model", kinds
        assert "rita" in driver.find_element(By.ID, "chain-slot").text
        driver.save_screenshot(str(tmp_path / "ledger-verified.png"))

        # Act 3: tamper with a stored alert entry; the page must show that it no longer verifies
        alert_leaf = int(driver.find_element(By.CSS_SELECTOR, "#chain-slot li:nth-child(4) a.leaf").text.lstrip("#"))
        _tamper_entry(site.ledger_dir, alert_leaf)
        driver.get(f"{srv.url}/#/ledger/{alert_leaf}")
        driver.refresh()
        bad = _wait(driver, lambda d: _css(d, "#verify-result") or False, message="a verdict on the tampered entry")[0]
        assert bad.get_attribute("data-status") == "failed", bad.text
        assert "altered" in bad.text
        driver.save_screenshot(str(tmp_path / "ledger-tampered.png"))
        # the untouched decision still verifies
        driver.get(f"{srv.url}/#/ledger/{leaves[1]}")
        driver.refresh()
        ok = _wait(driver, lambda d: _css(d, "#verify-result") or False)[0]
        assert ok.get_attribute("data-status") == "verified"
        # no script errors (the refused sign-in's 401 is the only failed request)
        errors = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert all("Failed to load resource" in m and "401" in m for m in errors), errors


VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "vectors" / "merkle" / "inclusion"

_RUN_VECTORS = """
const [cases, notes, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
import("/js/verify.js").then(async (m) => {
  const proofs = [];
  for (const c of cases) {
    try {
      await m.verifyInclusion(c.leafIdx, c.treeSize, m.b64decode(c.leafHash || ""), (c.proof || []).map(m.b64decode),
        m.b64decode(c.root || ""));
      proofs.push("ok");
    } catch (err) {
      proofs.push(`error: ${err.message}`);
    }
  }
  const sigs = [];
  for (const [note, key] of notes) {
    try {
      await m.verifyCheckpoint(note, key);
      sigs.push("ok");
    } catch (err) {
      sigs.push(`error: ${err.message}`);
    }
  }
  done({ proofs, sigs });
}).catch((err) => done({ fatal: String(err) }));
"""


@pytest.mark.integration
def test_browser_verifier_passes_the_rfc9162_vectors_and_rejects_forged_checkpoints(
        browser: Any, tmp_path: Path) -> None:
    import base64
    import json

    from trustmesh.ledger import Ledger, NoteSigner

    if not VECTORS.is_dir():
        pytest.skip(f"the transparency-dev vectors are missing at {VECTORS}")
    cases = [json.loads(p.read_text()) for p in sorted(VECTORS.rglob("*.json"))]
    assert len(cases) == 98
    # a real checkpoint of a real ledger, and forgeries of it
    site = make_site(tmp_path / "site", tmp_path / "unused.model", tmp_path)
    with Ledger.create(site.ledger_dir, "test.trustmesh/api") as led:
        led.append_one("alert", {"n": 1})
        note = led.checkpoint().to_bytes().decode()
        key = led.verifier_key
    body, sigs = note.split("\n\n")
    lines = body.split("\n")
    other_root = base64.b64encode(bytes(32)).decode()
    sig_name, sig_b64 = sigs.strip("\n").split(" ")[1:]
    flipped = bytearray(base64.b64decode(sig_b64))
    flipped[-1] ^= 1
    notes = [
        [note, key],                                                                          # genuine
        ["\n".join([lines[0], lines[1], other_root]) + "\n\n" + sigs, key],                   # root replaced
        ["\n".join([lines[0], "7", lines[2]]) + "\n\n" + sigs, key],                          # size replaced
        [body + "\n\n" + f"\u2014 {sig_name} {base64.b64encode(flipped).decode()}\n", key],  # signature bit
        [note, NoteSigner.generate("test.trustmesh/api").verifier.to_vkey()],                 # another key
    ]
    with serving(site) as srv:
        browser.get(srv.url + "/")
        browser.set_script_timeout(60)
        out = browser.execute_async_script(_RUN_VECTORS, cases, notes)
    assert "fatal" not in out, out
    for case, got in zip(cases, out["proofs"], strict=True):
        if case["wantErr"]:
            assert got != "ok", case["desc"]
        else:
            assert got == "ok", (case["desc"], got)
    assert out["sigs"][0] == "ok"
    assert all(s.startswith("error:") for s in out["sigs"][1:]), out["sigs"]
    assert "signature does not verify" in out["sigs"][1] and "signature does not verify" in out["sigs"][3]
