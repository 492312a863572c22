"""CLI commands: ``trustmesh lab list``, ``lab validate``, ``lab plan`` and ``lab run``."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import Any

import typer

from trustmesh.cli._common import console, err_console, guarded, print_json
from trustmesh.cli._root import app

__all__ = ["lab_app"]

lab_app = typer.Typer(
    help="The labelled traffic lab: real services, benign traffic and real attack tools in network namespaces, "
         "captured with ground truth.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")

_JSON = typer.Option(False, "--json", help="Print one JSON document.")
_SEED = typer.Option(1, "--seed", min=0, help="Seed: addresses, counts, ports, timing and tool options (>= 100 are "
                                              "held out for reporting).")


@lab_app.command("list")
@guarded
def list_cmd(as_json: bool = _JSON) -> None:
    """List the shipped scenarios: duration, host groups, benign generators and attacks."""
    from trustmesh.lab import list_scenarios

    rows: list[dict[str, Any]] = []
    for name, s in list_scenarios().items():
        rows.append({"name": name, "description": s.description, "duration": s.duration,
                     "hosts": [h.name for h in s.hosts], "benign": sorted({b.kind for b in s.benign}),
                     "attacks": [f"{a.kind}({'|'.join(a.variants)})" for a in s.attacks]})
    if as_json:
        print_json({"scenarios": rows})
        return
    from rich.table import Table

    table = Table(title="lab scenarios")
    for col in ("name", "duration s", "attacks", "description"):
        table.add_column(col)
    for r in rows:
        span = r["duration"]
        table.add_row(str(r["name"]), f"{span[0]:g}-{span[1]:g}" if isinstance(span, tuple) else f"{span:g}",
                      ", ".join(r["attacks"]) or "-", str(r["description"]))
    console.print(table)


@lab_app.command("validate")
@guarded
def validate_cmd(path: Path = typer.Argument(..., help="Scenario YAML file."), as_json: bool = _JSON) -> None:
    """Check a scenario file; errors name the file, line and field."""
    from trustmesh.lab import load_scenario

    s = load_scenario(path)
    if as_json:
        print_json({"ok": True, "name": s.name, "hosts": len(s.hosts), "benign": len(s.benign),
                    "attacks": len(s.attacks)})
        return
    console.print(f"ok: {s.name} ({len(s.hosts)} host groups, {len(s.benign)} benign generators, "
                  f"{len(s.attacks)} attacks)", highlight=False)


@lab_app.command("plan")
@guarded
def plan_cmd(scenario: str = typer.Argument(..., help="Shipped scenario name or YAML file."), seed: int = _SEED,
             duration: float | None = typer.Option(None, "--duration", min=5, max=300,
                                                   help="Override the drawn run length (s)."),
             ) -> None:
    """Print what a seed makes of a scenario (addresses, ports, commands) as JSON; needs no root."""
    from trustmesh.lab import load_scenario, plan_scenario

    print_json(plan_scenario(load_scenario(scenario), seed, duration=duration).to_dict())


class _StopOnce:
    """Turn the first SIGINT/SIGTERM into KeyboardInterrupt; ignore the rest so cleanup is never cut short."""

    def __init__(self) -> None:
        self.fired = False

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if not self.fired:
            self.fired = True
            raise KeyboardInterrupt


@lab_app.command("run")
@guarded
def run_cmd(scenario: str = typer.Argument(..., help="Shipped scenario name or YAML file."),
            out: Path = typer.Option(..., "--out", help="Folder for capture.pcap, truth.json, flows.parquet, "
                                                        "labels.csv."),
            seed: int = _SEED,
            duration: float | None = typer.Option(None, "--duration", min=5, max=300,
                                                  help="Override the drawn run length (s)."),
            force: bool = typer.Option(False, "--force", help="Replace a run already in --out."),
            quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress lines."),
            as_json: bool = _JSON) -> None:
    """Run a scenario in network namespaces (root), capture it and write exact ground truth."""
    from trustmesh.lab import load_scenario, plan_scenario, run_plan

    plan = plan_scenario(load_scenario(scenario), seed, duration=duration)
    # clean up namespaces on kill too, not only Ctrl-C; a second signal (a process group killed at once,
    # Ctrl-C pressed twice) must not interrupt that cleanup
    stop = _StopOnce()
    old = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        def say(line: str) -> None:
            if not quiet and not as_json:
                err_console.print(line, highlight=False)

        say(f"lab: {plan.scenario} seed {plan.seed}: {len(plan.hosts)} hosts, LAN {plan.lan}, "
            f"{plan.duration:.0f} s, {len(plan.attacks)} attacks"
            + (" (held-out seed: report results on it, never tune)" if seed >= 100 else ""))
        result = run_plan(plan, out, force=force, progress=say)
    except BaseException:
        for sig in old:  # on the way out: a late second signal must not kill the process before it reports
            signal.signal(sig, signal.SIG_IGN)
        raise
    for sig, handler in old.items():
        signal.signal(sig, handler)
    s = result.truth.summary
    doc: dict[str, Any] = {"out": str(result.out), "scenario": plan.scenario, "seed": plan.seed,
                           "wall_s": result.wall_s, "flows": s["flows"], "attack_flows": s["attack_flows"],
                           "benign_flows": s["benign_flows"], "flows_by_attack": s["flows_by_attack"],
                           "packets": result.truth.capture.get("captured")}
    if as_json:
        print_json(doc)
        return
    console.print(f"wrote {result.out}/capture.pcap, truth.json, flows.parquet, labels.csv: {s['flows']} flows "
                  f"({s['attack_flows']} attack, {s['benign_flows']} benign) in {result.wall_s:.0f} s",
                  highlight=False)


@lab_app.command("label")
@guarded
def label_cmd(source: Path = typer.Argument(..., help="Flows of a lab run: its capture (pcap), a Zeek conn.log, "
                                                      "Suricata EVE or a canonical flow table."),
              truth_path: Path = typer.Option(..., "--truth", help="The run's truth.json (or its folder)."),
              out: Path = typer.Option(..., "--out", help="Labelled flows: .parquet or .csv."),
              as_json: bool = _JSON) -> None:
    """Label any flow source of a lab run from its truth (label, attack_type, technique_id, attack_id)."""
    from trustmesh.errors import InputError
    from trustmesh.flows import read_flows
    from trustmesh.lab import label_flows, load_truth, match_attacks

    if out.suffix not in (".parquet", ".csv"):
        raise InputError(f"{out}: --out must end in .parquet or .csv")
    truth = load_truth(truth_path)
    flows = read_flows(source)
    labelled = label_flows(flows, truth)
    labelled["attack_id"] = match_attacks(flows, truth).to_numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        labelled.to_parquet(out, index=False)
    else:
        labelled.to_csv(out, index=False)
    counts = {str(k): int(v) for k, v in labelled["attack_type"].value_counts().items()}
    if as_json:
        print_json({"out": str(out), "flows": len(labelled), "by_type": counts})
        return
    console.print(f"wrote {out}: {len(labelled)} flows, " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())),
                  highlight=False)
