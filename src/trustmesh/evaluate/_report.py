"""Blueprint report: section results, the versioned JSON document and a self-contained HTML page.

The JSON schema (``trustmesh.blueprint-report``, version ``REPORT_VERSION``) is documented in
docs/blueprint.md. Plots are PNG files rendered with matplotlib's Agg backend; the JSON names them
(``plots/<id>.png`` beside report.json, plus their sha256) and the HTML inlines them as base64 data
URIs so the page reads offline with nothing beside it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "REPORT_SCHEMA",
    "REPORT_VERSION",
    "Plot",
    "SectionResult",
    "Table",
    "figure_png",
    "render_html",
    "write_report",
]

REPORT_SCHEMA = "trustmesh.blueprint-report"
REPORT_VERSION = 1

Status = Literal["ok", "skipped", "error"]


@dataclass(frozen=True, slots=True)
class Plot:
    """One PNG figure of a section."""

    plot_id: str
    title: str
    png: bytes

    @property
    def sha256(self) -> str:
        """Return the hex sha256 of the PNG bytes."""
        return hashlib.sha256(self.png).hexdigest()


@dataclass(frozen=True, slots=True)
class Table:
    """A small table of results (rows of JSON scalars)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"title": self.title, "columns": list(self.columns), "rows": [list(r) for r in self.rows]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Table:
        """Rebuild from ``to_dict`` output."""
        return cls(str(d["title"]), tuple(d["columns"]), tuple(tuple(r) for r in d["rows"]))


@dataclass(frozen=True, slots=True)
class SectionResult:
    """What one blueprint section produced (or why it was skipped)."""

    name: str
    title: str
    status: Status
    reason: str = ""
    headline: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: tuple[Table, ...] = ()
    plots: tuple[Plot, ...] = ()
    notes: tuple[str, ...] = ()
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @classmethod
    def skipped(cls, name: str, title: str, reason: str) -> SectionResult:
        """Return a clearly labelled skipped section."""
        return cls(name, title, "skipped", reason=reason)

    def to_dict(self, *, inline_plots: bool = False) -> dict[str, Any]:
        """Return a JSON-ready dict; plots as files (``plots/<id>.png``) or inline base64."""
        plots = []
        for p in self.plots:
            entry: dict[str, Any] = {"id": p.plot_id, "title": p.title, "sha256": p.sha256}
            if inline_plots:
                entry["png_base64"] = base64.b64encode(p.png).decode("ascii")
            else:
                entry["file"] = f"plots/{p.plot_id}.png"
            plots.append(entry)
        return {
            "name": self.name,
            "title": self.title,
            "status": self.status,
            "reason": self.reason,
            "headline": self.headline,
            "metrics": self.metrics,
            "tables": [t.to_dict() for t in self.tables],
            "plots": plots,
            "notes": list(self.notes),
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SectionResult:
        """Rebuild from ``to_dict(inline_plots=True)`` output (the cache format)."""
        return cls(
            name=str(d["name"]),
            title=str(d["title"]),
            status=d["status"],
            reason=str(d.get("reason", "")),
            headline=dict(d.get("headline", {})),
            metrics=dict(d.get("metrics", {})),
            tables=tuple(Table.from_dict(t) for t in d.get("tables", [])),
            plots=tuple(Plot(p["id"], p["title"], base64.b64decode(p["png_base64"])) for p in d.get("plots",
                                                                                                    [])),
            notes=tuple(d.get("notes", [])),
            seconds=float(d.get("seconds", 0.0)),
            cpu_seconds=float(d.get("cpu_seconds", 0.0)),
        )


def figure_png(fig: Any) -> bytes:
    """Render a matplotlib figure to PNG bytes (Agg) and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _json_safe(obj: Any) -> Any:
    """Replace NaN/inf (not valid JSON) with None, recursively; numpy scalars to Python."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_report(
    out_dir: Path, document: dict[str, Any], sections: Sequence[SectionResult]
) -> tuple[Path, Path, str]:
    """Write ``report.json``, ``plots/*.png`` and ``report.html``; return their paths and the JSON sha256."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_dir = out_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    for s in sections:
        for p in s.plots:
            (plot_dir / f"{p.plot_id}.png").write_bytes(p.png)
    doc = _json_safe({**document, "sections": [s.to_dict() for s in sections]})
    raw = (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")
    json_path = out_dir / "report.json"
    json_path.write_bytes(raw)
    digest = hashlib.sha256(raw).hexdigest()
    html_path = out_dir / "report.html"
    html_path.write_text(render_html(doc, sections, digest), encoding="utf-8")
    return json_path, html_path, digest


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return html.escape(json.dumps(v, default=str)[:200])
    return html.escape(str(v))


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1b1f24;line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:2px solid #d0d7de;padding-bottom:.2rem;margin-top:2.2rem}
table{border-collapse:collapse;margin:.6rem 0 1rem;font-size:.88rem}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} .ok{color:#1a7f37;font-weight:600} .skipped{color:#9a6700;font-weight:600}
.error{color:#cf222e;font-weight:600} figure{display:inline-block;margin:.4rem;vertical-align:top}
figure img{max-width:520px;border:1px solid #d0d7de} figcaption{font-size:.82rem;color:#57606a}
.meta{color:#57606a;font-size:.85rem} .reason{background:#fff8c5;padding:.5rem;border-radius:4px}
"""


def render_html(doc: dict[str, Any], sections: Sequence[SectionResult], json_sha256: str) -> str:
    """Return the report as one self-contained HTML page (plots inline as data URIs)."""
    e = html.escape
    env = doc.get("environment", {})
    out: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>trustmesh security evaluation blueprint</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>trustmesh security evaluation blueprint</h1>",
        f'<p class="meta">profile <b>{e(str(doc.get("profile")))}</b> · created {e(str(doc.get("created")))} · '
        f'trustmesh {e(str(env.get("trustmesh")))} · commit {e(str(env.get("commit")))} · '
        f'config {e(str(doc.get("config_sha256", ""))[:16])} · report.json sha256 {e(json_sha256[:16])}</p>',
        '<h2 id="summary">Summary</h2>',
        '<table id="summary-table"><tr><th>section</th><th>status</th><th>headline</th><th>wall s</th>'
        "<th>CPU s</th></tr>",
    ]
    for s in sections:
        head = "; ".join(f"{e(k)}: {_fmt(v)}" for k, v in s.headline.items()) or e(s.reason)
        out.append(
            f'<tr><td><a href="#sec-{e(s.name)}">{e(s.title)}</a></td><td class="{s.status}">{s.status}</td>'
            f"<td>{head}</td><td>{s.seconds:.1f}</td><td>{s.cpu_seconds:.1f}</td></tr>"
        )
    out.append("</table>")
    for s in sections:
        out.append(f'<section id="sec-{e(s.name)}" data-status="{s.status}">')
        out.append(f'<h2>{e(s.title)} <span class="{s.status}">[{s.status}]</span></h2>')
        if s.status != "ok":
            out.append(f'<p class="reason">{s.status}: {e(s.reason)}</p>')
        if s.headline:
            out.append("<table><tr><th>headline</th><th>value</th></tr>")
            out.extend(f"<tr><td>{e(k)}</td><td>{_fmt(v)}</td></tr>" for k, v in s.headline.items())
            out.append("</table>")
        for t in s.tables:
            out.append(f"<h3>{e(t.title)}</h3><table><tr>" + "".join(f"<th>{e(c)}</th>" for c in t.columns) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>" for row in t.rows)
            out.append("</table>")
        for p in s.plots:
            data = base64.b64encode(p.png).decode("ascii")
            out.append(
                f'<figure><img id="plot-{e(p.plot_id)}" alt="{e(p.title)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{e(p.title)}</figcaption></figure>"
            )
        for n in s.notes:
            out.append(f'<p class="meta">{e(n)}</p>')
        out.append("</section>")
    out.append('<h2 id="environment">Environment</h2><table>')
    out.extend(f"<tr><td>{e(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in sorted(env.items()))
    out.append("</table>")
    if doc.get("ledger"):
        out.append('<h2 id="ledger">Ledger record</h2><table>')
        out.extend(f"<tr><td>{e(str(k))}</td><td>{_fmt(v)}</td></tr>"
                   for k, v in sorted(doc["ledger"].items()))
        out.append("</table>")
    # Mark every figure with its decoded size once the page has loaded, and warn visibly about a
    # figure the browser could not decode (headless-browser tests read these attributes too).
    out.append(
        "<script>window.addEventListener('load',function(){var bad=0;"
        "document.querySelectorAll('img').forEach(function(i){i.dataset.naturalWidth=i.naturalWidth;"
        "i.dataset.naturalHeight=i.naturalHeight;if(!i.naturalWidth){bad++;}});"
        "document.body.dataset.imagesChecked=document.images.length;document.body.dataset.brokenImages=bad;"
        "if(bad){var p=document.createElement('p');p.className='error';p.textContent=bad+' figure(s) failed to load';"
        "document.body.prepend(p);}});</script>"
    )
    out.append("</body></html>")
    return "\n".join(out)
