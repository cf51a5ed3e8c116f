"""bench/REPORT.md and bench/throughput.png from bench/results/*.json.

The generated part (machine, commands, table, targets) is followed by the hand-written
analysis in bench/report_notes.md (the profile), so a rerun keeps it.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
ORDER = ("saga2", "saga2-wait", "msg1", "tcc2", "saga2-grpc", "floor", "scale", "dbos")
STORES = ("sqlite", "mysql", "postgres", "redis")


def load() -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for p in sorted(RESULTS.glob("*.json")):
        d = json.loads(p.read_text())
        out[(d["scenario"], d["store"])] = d
    return out


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}" if abs(x) < 100 else f"{x:,.0f}"
    return str(x)


def _machine() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({model}), Linux {platform.release()}, "
            f"Python {platform.python_version()}")


def table(res: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    rows = ["| scenario | store | tx/s | baseline/s | ratio | server CPU ms/tx | "
            "store RT/tx | p50 ms | p99 ms | baseline p50/p99 ms | final check | load |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"]
    for sc in ORDER:
        for st in STORES:
            d = res.get((sc, st))
            if d is None:
                continue
            if "error" in d and d.get("tps") is None:
                rows.append(f"| {sc} | {st} | FAILED: {d['error'][-120:]!r} |" + " |" * 9)
                continue
            chk = d.get("check")
            chk_s = f"{chk['succeed']}/{chk['checked']} succeed" if chk else "–"
            rows.append(
                f"| {sc} | {st} | {_f(d['tps'])} | {_f(d.get('baseline_tps'))} | "
                f"{_f(d.get('ratio'), 3)} | {_f(d.get('cpu_ms_per_tx'))} | "
                f"{_f(d.get('store_roundtrips_per_tx'), 1)} | {_f(d.get('p50_ms'), 1)} | "
                f"{_f(d.get('p99_ms'), 1)} | {_f(d.get('baseline_p50_ms'), 1)} / "
                f"{_f(d.get('baseline_p99_ms'), 1)} | {chk_s} | {_f(d.get('loadavg'), 1)} |")
    return rows


def _met(ok: bool | None) -> str:
    return "n/a (not measured)" if ok is None else ("**met**" if ok else "**not met**")


def targets(res: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    def g(sc: str, st: str, k: str) -> Any:
        return (res.get((sc, st)) or {}).get(k)

    out = []
    for st in ("sqlite", "redis"):
        r = g("saga2", st, "ratio")
        out.append(f"- saga2 ratio to direct ≥ 0.5 on {st}: {_f(r, 3)}× → "
                   f"{_met(None if r is None else r >= 0.5)}")
    for st in ("postgres", "mysql"):
        r, tps, fl = g("saga2", st, "ratio"), g("saga2", st, "tps"), g("floor", st, "tps")
        of_floor = tps / fl if tps and fl else None
        ok = None if r is None else (r >= 0.35 or (of_floor is not None and of_floor >= 0.8))
        out.append(f"- {st}: saga2 ≥ 0.35× direct or ≥ 80% of the store floor: {_f(r, 3)}× "
                   f"direct, {_f(None if of_floor is None else of_floor * 100, 0)}% of the "
                   f"floor ({_f(fl)} sagas/s) → {_met(ok)}")
    dt, db = g("saga2", "postgres", "tps"), g("dbos", "postgres", "tps")
    same = g("dbos", "postgres", "dtmx_over_dbos")
    x = dt / db if dt and db else None
    out.append(f"- dtmx on PostgreSQL ≥ 15× DBOS: saga2 {_f(x, 1)}× (separate runs); "
               f"saga2-wait in the DBOS run itself {_f(same, 1)}× → "
               f"{_met(None if same is None else same >= 15)}")
    for st in ("sqlite", "redis"):
        c = g("saga2", st, "cpu_ms_per_tx")
        out.append(f"- ≤ 0.6 ms server CPU per saga2 on {st}: {_f(c, 3)} ms → "
                   f"{_met(None if c is None else c <= 0.6)}")
    rts = {st: g("saga2", st, "store_roundtrips_per_tx") for st in STORES}
    known = [v for v in rts.values() if v is not None]
    out.append("- ≤ 3 store round trips per saga2: " +
               ", ".join(f"{k} {_f(v, 1)}" for k, v in rts.items()) +
               f" → {_met(max(known) <= 3 if known else None)}")
    for st in STORES:
        inc = g("scale", st, "cpu_increase_pct")
        if inc is None:
            continue
        out.append(f"- 2 server processes on {st}: CPU per saga {_f(inc, 1)}% above one "
                   f"({_f(g('scale', st, 'cpu_ms_per_tx_1proc'), 3)} → "
                   f"{_f(g('scale', st, 'cpu_ms_per_tx'), 3)} ms), tx/s "
                   f"{_f(g('scale', st, 'baseline_tps'))} → {_f(g('scale', st, 'tps'))} → "
                   f"{_met(inc <= 15)}")
    return out


def plot(res: dict[tuple[str, str], dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = [("direct (saga2 baseline)", "saga2", "baseline_tps"),
              ("saga2", "saga2", "tps"), ("saga2-wait", "saga2-wait", "tps"),
              ("msg1", "msg1", "tps"), ("tcc2", "tcc2", "tps"),
              ("saga2-grpc", "saga2-grpc", "tps"), ("store floor", "floor", "tps"),
              ("DBOS workflow", "dbos", "tps")]
    fig, ax = plt.subplots(figsize=(11, 5.5))
    width = 0.8 / len(series)
    for k, (label, sc, key) in enumerate(series):
        xs, ys = [], []
        for i, st in enumerate(STORES):
            v = (res.get((sc, st)) or {}).get(key)
            if v:
                xs.append(i + (k - len(series) / 2 + 0.5) * width)
                ys.append(v)
        if ys:
            bars = ax.bar(xs, ys, width, label=label)
            ax.bar_label(bars, fmt="%.0f", fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(STORES)), STORES)
    ax.set_ylabel("completed transactions / s")
    ax.set_title("dtmx throughput per store (32 clients, 2 cores shared by all processes)")
    ax.legend(fontsize=8, ncol=2)
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(args: Any) -> None:
    res = load()
    png = HERE / "throughput.png"
    plotted = plot(res, png)
    dates = sorted(d.get("date", "") for d in res.values() if d.get("date"))
    secs = sorted({d.get("seconds") for d in res.values() if d.get("seconds")})
    loads = [d["loadavg"] for d in res.values() if d.get("loadavg") is not None]
    lines = [
        "# dtmx benchmarks (issue 7)",
        "",
        f"- Machine: {_machine()}.",
        f"- Run: {dates[0] if dates else '?'} → {dates[-1] if dates else '?'}; "
        f"measured windows {', '.join(f'{s:g}' for s in secs)} s per phase, 32 clients.",
        f"- Load average at the start of the runs: {_f(min(loads), 1) if loads else '?'} – "
        f"{_f(max(loads), 1) if loads else '?'} (it counts the bench's own processes still "
        "winding down from the scenario before; the machine's cores are shared, so absolute "
        "numbers move between runs; ratios and CPU per transaction hold better).",
        "- Command: `python -m bench all --seconds 8 --baseline-seconds 4` (regenerates this "
        "file; one scenario: `python -m bench saga2 --store redis --clients 32 --seconds 20`).",
        f"- Written {time.strftime('%Y-%m-%d %H:%M')} by `bench/report.py`; the analysis "
        "below the targets is bench/report_notes.md.",
        "",
        "## Results",
        "",
        *table(res),
        "",
        "Columns: *tx/s* completed (final) transactions per second in the window; "
        "*baseline/s* the direct calls of the same transaction by the same clients in the same "
        "run (scale: one server process; floor: none); *server CPU* utime+stime of the dtmx "
        "server process(es) per completed transaction (floor: the bench process, which runs "
        "the store verbs; dbos: the DBOS process); *store RT* the store layer's `roundtrips` "
        "counter per transaction, counted on an in-process server; *final check*: a spread of "
        "completed gids queried afterwards must be `succeed`.",
        "",
        "![throughput](throughput.png)" if plotted else "(matplotlib missing: no plot)",
        "",
        "## Targets of issue 7",
        "",
        *targets(res),
        "",
    ]
    notes = HERE / "report_notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    (HERE / "REPORT.md").write_text("\n".join(lines))
