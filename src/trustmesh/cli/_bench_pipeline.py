"""``trustmesh bench pipeline --workers 1,2``: workers sharing a Redis stream and one served ledger."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from trustmesh.cli._bench_serve import _free_port, _wait_up
from trustmesh.errors import EnvironmentProblem, InputError, TrustmeshError

__all__ = ["bench_in_process", "bench_workers", "scaled_copy"]

EVE = "logs/suricata/test6-malicious.suricata.json.gz"
ORIGIN = "bench.trustmesh/workers"


def _eve_lines(data_dir: Path, records: int) -> list[str]:
    """``records`` EVE lines from the dataset, repeated with fresh flow ids so every flow is distinct."""
    path = data_dir / EVE
    if not path.is_file():
        raise InputError(f"{path}: EVE dataset not found (trustmesh datasets fetch)")
    base = [json.loads(ln) for ln in gzip.open(path, "rt", encoding="utf-8").read().splitlines() if ln.strip()]
    out: list[str] = []
    rnd = 0
    while len(out) < records:
        for rec in base:
            if len(out) >= records:
                break
            doc = dict(rec)
            if "flow_id" in doc:
                doc["flow_id"] = int(doc["flow_id"]) + rnd * 10_000_000_000
            out.append(json.dumps(doc, separators=(",", ":")))
        rnd += 1
    return out


def bench_workers(workers: int, records: int, model: Path | None, data_dir: Path) -> dict[str, Any]:
    """Run one scale-out measurement with ``workers`` worker processes (see the command's help)."""
    import redis

    from trustmesh.ledger import Ledger, NoteSigner

    exe_redis = shutil.which("redis-server")
    if exe_redis is None:
        raise EnvironmentProblem("redis-server not found (Debian package redis-server)", path="redis-server")
    lines = _eve_lines(data_dir, records)
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    procs: list[subprocess.Popen[bytes]] = []
    exe = str(Path(sys.executable).with_name("trustmesh"))
    env = {**os.environ, "TRUSTMESH_LEDGER_TOKENS": ""}
    try:
        rport, lport = _free_port(), _free_port()
        procs.append(subprocess.Popen([exe_redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "",
                                       "--appendonly", "no", "--dir", str(root)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        Ledger.create(root / "shared", ORIGIN).close()
        key = NoteSigner.generate("bench.worker/w")
        key.save(root / "worker.key")
        (root / "clients.vkeys").write_text(key.verifier.to_vkey() + "\n", encoding="utf-8")
        server = subprocess.Popen([exe, "ledger", "serve", str(root / "shared"), "--port", str(lport),
                                   "--client-keys", str(root / "clients.vkeys")], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(server)
        _wait_up(lport, server)
        client = redis.Redis(port=rport)
        for w in range(workers):
            cfg = root / f"w{w}.toml"
            text = (f'[pipeline]\norigin = "{ORIGIN}"\nledger_url = "http://127.0.0.1:{lport}"\n'
                    f'ledger_key = "{root / "worker.key"}"\nstate_dir = "{root / f"state{w}"}"\nbatch_size = 2048\n')
            if model is not None:
                text += f'model = "{model.resolve()}"\n'
            if data_dir is not None:
                text += f'data_dir = "{data_dir.resolve()}"\n'
            cfg.write_text(text, encoding="utf-8")
            src = f"redis://127.0.0.1:{rport}/eve?group=bench&consumer=w{w}"
            with (root / f"w{w}.err").open("wb") as err:
                procs.append(subprocess.Popen([exe, "run", "--config", str(cfg), "--source", src, "--json"],
                                              env=env, stdout=subprocess.DEVNULL, stderr=err))
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # every worker has loaded its model and joined the group
            try:
                joined = len(client.xinfo_consumers("eve", "bench"))
            except redis.ResponseError:
                joined = 0
            if joined == workers:
                break
            if any(p.poll() is not None for p in procs):
                raise TrustmeshError("a worker or server exited before the run started")
            time.sleep(0.2)
        else:
            raise TrustmeshError("the workers did not join the consumer group within 300 s")
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        pipe = client.pipeline(transaction=False)
        for ln in lines:
            pipe.xadd("eve", {"eve": ln})
        pipe.execute()
        while True:
            g = client.xinfo_groups("eve")[0]
            if g["pending"] == 0 and g.get("lag") == 0:
                break
            if time.perf_counter() - t0 > 1800 or any(p.poll() is not None for p in procs):
                tails = [(root / f"w{w}.err").read_text(encoding="utf-8", errors="replace")[-300:]
                         for w in range(workers)]
                raise TrustmeshError(f"the workers did not consume the stream ({g}); worker stderr: {tails}")
            time.sleep(0.05)
        seconds = time.perf_counter() - t0
        client.close()
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stderr is not None:
                p.stderr.close()
    with Ledger.open(root / "shared", read_only=True) as led:
        alerts = sum(1 for i in range(led.size) if led.entry(i).kind == "alert")
        size = led.size
    flows = sum(1 for ln in lines if '"event_type":"flow"' in ln)
    tmp.cleanup()
    return {"workers": workers, "records": len(lines), "flows": flows, "seconds": round(seconds, 3),
            "records_per_s": len(lines) / seconds, "alert_entries": alerts, "ledger_entries": size,
            "load_average": load_before}


def scaled_copy(source: str, records: int, out_dir: Path) -> str:
    """Write ``records`` records of a Zeek conn log or Suricata EVE file, repeated with fresh flow ids.

    Each repetition gets new ids (EVE ``flow_id``, Zeek ``uid``) so every flow is distinct, for a
    steady-state measurement on more records than the small public logs hold. A classic pcap is
    repeated packet by packet (``records`` packets), each repetition shifted in time past nfstream's
    idle timeout so its flows are new flows. Other sources (pcapng, tables) are refused (InputError).
    """
    from trustmesh.flows._io import open_text

    path = Path(source)
    if not path.is_file():
        raise InputError(f"{source}: --scale needs a Zeek conn log, an EVE file or a pcap")
    if path.read_bytes()[:4] in _PCAP_MAGIC:
        return _scaled_pcap(path, records, out_dir)
    with open_text(path) as fh:
        lines = [ln.rstrip("\n") for ln in fh if ln.strip()]
    header = [ln for ln in lines if ln.startswith("#")]
    body = [ln for ln in lines if not ln.startswith("#")]
    fields = next((ln.split("\t")[1:] for ln in header if ln.startswith("#fields")), None)
    if not body:
        raise InputError(f"{source}: no records to scale")
    out: list[str] = []
    rnd = 0
    while len(out) < records:
        for ln in body:
            if len(out) >= records:
                break
            if fields is not None:  # Zeek TSV
                if "uid" not in fields:
                    raise InputError(f"{source}: Zeek log without a uid field")
                cols = ln.split("\t")
                k = fields.index("uid")
                if k < len(cols):
                    cols[k] = f"{cols[k]}r{rnd}" if rnd else cols[k]
                out.append("\t".join(cols))
                continue
            try:
                doc = json.loads(ln)
            except ValueError:
                raise InputError(f"{source}: --scale needs a Zeek conn log or an EVE file (a line is not JSON)") from None
            if not isinstance(doc, dict):
                raise InputError(f"{source}: --scale needs JSON objects, one a line")
            if rnd and isinstance(doc.get("flow_id"), int):
                doc["flow_id"] = doc["flow_id"] + rnd * 10_000_000_000
            if rnd and isinstance(doc.get("uid"), str):
                doc["uid"] = f"{doc['uid']}r{rnd}"
            out.append(json.dumps(doc, separators=(",", ":")))
        rnd += 1
    name = path.name.removesuffix(".gz")
    target = out_dir / f"scaled-{records}-{name}"
    target.write_text("\n".join([*[h for h in header if not h.startswith("#close")], *out]) + "\n", encoding="utf-8")
    return str(target)


_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\x4d\x3c\xb2\xa1": "<",
               b"\xa1\xb2\x3c\x4d": ">"}  # classic pcap, microsecond and nanosecond variants


def _scaled_pcap(path: Path, packets: int, out_dir: Path) -> str:
    """Repeat a classic pcap's packets until ``packets`` are written, each round shifted by span + 300 s."""
    import struct

    data = path.read_bytes()
    order = _PCAP_MAGIC[data[:4]]
    rec = struct.Struct(order + "IIII")
    items: list[tuple[int, int, bytes]] = []
    off = 24
    while off + 16 <= len(data):
        sec, sub, incl, orig = rec.unpack_from(data, off)
        body = data[off + 16: off + 16 + incl]
        if len(body) < incl:
            break  # a truncated last packet is left out
        items.append((sec, sub, rec.pack(0, sub, incl, orig)[8:] + body))
        off += 16 + incl
    if not items:
        raise InputError(f"{path}: no packets to scale")
    span = max(sec for sec, _, _ in items) - min(sec for sec, _, _ in items) + 300
    out = [data[:24]]
    written = rnd = 0
    while written < packets:
        for sec, sub, rest in items:
            if written >= packets:
                break
            out.append(struct.pack(order + "II", sec + rnd * span, sub) + rest)
            written += 1
        rnd += 1
    target = out_dir / f"scaled-{packets}-{path.name}"
    target.write_bytes(b"".join(out))
    return str(target)


def nfstream_alone(pcap: str) -> dict[str, Any]:
    """Time nfstream by itself over a capture, metered as trustmesh meters it (flows/_pcap.py's options)."""
    import nfstream

    load = os.getloadavg()
    t, c = time.perf_counter(), time.process_time()
    streamer = nfstream.NFStreamer(source=pcap, statistical_analysis=True, n_meters=1, accounting_mode=3)
    flows = sum(1 for _ in streamer)
    return {"flows": flows, "seconds": round(time.perf_counter() - t, 3),
            "cpu_seconds_parent": round(time.process_time() - c, 3), "load_average": load}


def bench_in_process(sources: list[str], model: Path | None, data_dir: Path | None,
                     batch_size: int = 4096, scale: int | None = None, vs_nfstream: bool = False) -> dict[str, Any]:
    """Run the pipeline over ``sources`` in this process with a fresh ledger; time it end to end.

    ``scale``: each source is first rewritten to that many records (:func:`scaled_copy`). Besides the
    whole run, the steady state is reported: everything after the first batch, whose time includes
    the one-off imports and warm-up of a fresh process. ``vs_nfstream``: the sources are captures;
    nfstream alone is timed over them first (:func:`nfstream_alone`) and the ratio reported.
    """
    from trustmesh.pipeline import Pipeline, PipelineConfig, open_sources

    with tempfile.TemporaryDirectory() as tmp:
        if scale is not None:
            sources = [scaled_copy(s, scale, Path(tmp)) for s in sources]
        alone = [nfstream_alone(s) for s in sources] if vs_nfstream else []
        cfg = PipelineConfig(ledger_dir=Path(tmp) / "ledger", state_dir=Path(tmp) / "state", model=model,
                             data_dir=data_dir, batch_size=batch_size)
        pipe = Pipeline.from_config(cfg)
        load = os.getloadavg()
        first: list[float] = []  # wall, cpu and alerts at the end of the first batch

        def on_batch(_name: str, outcome: Any) -> None:
            if not first:
                first.extend([time.perf_counter(), time.process_time(), float(pipe.summary.alerts)])

        t, c = time.perf_counter(), time.process_time()
        try:
            pipe.run(open_sources(sources, cfg), on_batch=on_batch)
        finally:
            summary = pipe.close()
        end_wall, end_cpu = time.perf_counter(), time.process_time()
        wall, cpu = end_wall - t, end_cpu - c
    steady: dict[str, Any] = {}
    if first and summary.alerts > first[2]:
        s_wall, s_cpu, s_alerts = end_wall - first[0], end_cpu - first[1], summary.alerts - first[2]
        steady = {"alerts": int(s_alerts), "seconds": round(s_wall, 3), "alerts_per_s": s_alerts / s_wall,
                  "cpu_us_per_alert": s_cpu / s_alerts * 1e6}
    return {"sources": [Path(s).name for s in sources], "batch_size": batch_size, "flows": summary.flows,
            "alerts": summary.alerts, "incidents": summary.incidents,
            "ledger_entries": summary.last_index + 1, "seconds": round(wall, 3), "cpu_seconds": round(cpu, 3),
            "alerts_per_s": summary.alerts / wall, "flows_per_s": summary.flows / wall,
            "cpu_us_per_alert": cpu / max(summary.alerts, 1) * 1e6, "after_first_batch": steady,
            "errors": summary.errors[:5], "load_average": load,
            **({"nfstream_alone": alone, "ratio_to_nfstream": wall / max(sum(a["seconds"] for a in alone), 1e-9)}
               if alone else {})}
