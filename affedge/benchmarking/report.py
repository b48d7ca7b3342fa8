"""Text tables (in the style of Ultralytics' export/benchmark tables) and the JSON document."""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from affedge.benchmarking.harness import LatencyStats


def _cell(v: Any, fmt: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, str):
        return v
    return format(v, fmt)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                 fmts: Sequence[str] | None = None) -> str:
    """Aligned plain-text table; ``fmts`` per column (e.g. ".2f"), text left, numbers right."""
    fmts = list(fmts or [""] * len(headers))
    cells = [[_cell(v, f) for v, f in zip(r, fmts)] for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) and rows
               for i in range(len(headers))]

    def line(vals):
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(vals, widths, numeric)).rstrip()

    out = [line(list(headers)), "  ".join("-" * w for w in widths)]
    out += [line(c) for c in cells]
    return "\n".join(out)


def _short_reason(text: str, width: int = 90) -> str:
    """A table cell for why a row did not run: the specific reasons under a heading line that
    ends with a colon ("no backend can run bundle ... here:"), else the first line; cut to
    ``width`` characters."""
    from affedge.log import one_line

    out = one_line(text, heading=False)
    return out if len(out) <= width else out[:width - 3] + "..."


def encoder_table(rows: list[dict[str, Any]]) -> str:
    """Format | Precision | Size (MB) | Parity err | p50/p90/p99 ms | FPS | Status."""
    body = []
    for r in rows:
        st: LatencyStats | None = r.get("stats")
        body.append([r["format"], r["precision"], r.get("size_mb"), r.get("parity_max_abs"),
                     st.p50_ms if st else None, st.p90_ms if st else None,
                     st.p99_ms if st else None, st.fps if st else None,
                     (f"ok; export parity {r['export_parity']}" if r.get("export_parity")
                      else "ok") if r["status"] == "ok" else f"{r['status']}: "
                     f"{_short_reason(r.get('reason', ''))}"])
    return format_table(["Format", "Precision", "Size (MB)", "Parity err", "p50 ms", "p90 ms",
                         "p99 ms", "FPS", "Status"], body,
                        ["", "", ".1f", ".1e", ".2f", ".2f", ".2f", ".1f", ""])


def stage_table(stages: dict[str, LatencyStats], order: Sequence[str]) -> str:
    """Stage | p50/p90/p99/mean ms | FPS | share of the whole-frame p50."""
    whole = stages.get("whole_frame")
    body = []
    for name in order:
        st = stages.get(name)
        if not isinstance(st, LatencyStats):
            continue
        share = (st.p50_ms / whole.p50_ms * 100.0) if whole and name not in (
            "whole_frame", "end_to_end", "end_to_end_serial") else None
        body.append([name, st.p50_ms, st.p90_ms, st.p99_ms, st.mean_ms, st.fps, share, st.n])
    return format_table(["Stage", "p50 ms", "p90 ms", "p99 ms", "mean ms", "FPS",
                         "% of frame p50", "n"], body,
                        ["", ".2f", ".2f", ".2f", ".2f", ".1f", ".0f", "d"])


def roofline_table(rows: list[dict[str, Any]]) -> str:
    body = [[r["part"], r["precision"], r["flops"] / 1e9, r.get("peak_gflops"), r.get("bound_ms"),
             r["measured_ms"], r.get("measured_p50_ms"), r["achieved_gflops"],
             r.get("achieved_over_limit")] for r in rows]
    return format_table(["Part", "Precision", "GFLOP/frame", "Peak GFLOP/s", "Bound ms",
                         "Best ms", "p50 ms", "Achieved GFLOP/s", "Achieved/limit"], body,
                        ["", "", ".3f", ".1f", ".3f", ".2f", ".2f", ".1f", ".2f"])


def jsonable(obj: Any) -> Any:
    """Plain JSON types: LatencyStats -> dict (with fps), dataclasses, Paths, NaN -> None."""
    if isinstance(obj, LatencyStats):
        return {k: jsonable(v) for k, v in obj.as_dict().items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return jsonable(obj.item())
    return obj


def write_json(doc: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(jsonable(doc), indent=2, sort_keys=False) + "\n",
                    encoding="utf-8")
    return path
