"""The run's report: faults injected, transactions by kind and outcome, violations."""

from __future__ import annotations

from collections import Counter

from chaos.run import Result

_MAX_LINES = 40


def render(res: Result) -> str:
    """The report as text (Markdown-friendly)."""
    c = res.config
    out = [f"chaos run: store={c.store} servers={c.servers} seconds={c.seconds:g} "
           f"seed={c.seed} workers={c.workers} branch_fault_rate={c.branch_fault_rate:g} "
           f"clock_jumps={c.clock_jumps} kill_every={c.kill_every} "
           f"store_fault_every={c.store_fault_every}"]
    out.append(f"transfers: {res.transfers} ({res.client_errors} with a client-side error); "
               f"branch calls: {res.branch_calls} ({res.findings.server_calls} by servers)")
    out.append("branch calls by caller: " + ", ".join(
        f"{k} {v}" for k, v in sorted(res.findings.sources.items())))
    resumes = res.workflow_resumes
    out.append(f"workflow resume calls by servers: {sum(resumes.values())} (answers: "
               + ", ".join(f"{k} {v}" for k, v in sorted(resumes.items())) + ")")
    out.append("faults injected: " + ", ".join(
        f"{k} {v}" for k, v in sorted(res.faults.items()) if v) or "faults injected: none")
    kinds: dict[str, Counter[str]] = {}
    for (kind, outcome), n in sorted(res.outcomes.items()):
        kinds.setdefault(kind, Counter())[outcome] += n
    out.append("transactions by kind and outcome:")
    for kind, outcomes in kinds.items():
        out.append(f"  {kind}: " + ", ".join(f"{o} {n}" for o, n in sorted(outcomes.items())))
    out.append(f"time to quiescence: {res.quiescence:.1f} s")
    if res.findings.overlaps_under_skew:
        out.append(f"overlapping calls involving the clock-jumped server (allowed): "
                   f"{res.findings.overlaps_under_skew}")
    v = res.findings.violations
    out.append(f"violations: {len(v)}" + (" (" + ", ".join(
        f"{k} {n}" for k, n in sorted(res.findings.kinds.items())) + ")" if v else ""))
    out.extend(f"  {line}" for line in v[:_MAX_LINES])
    if len(v) > _MAX_LINES:
        out.append(f"  ... and {len(v) - _MAX_LINES} more")
    if v:
        out.append(f"run directory kept: {res.workdir}")
    return "\n".join(out)
