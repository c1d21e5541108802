"""The terminal summary of a stress result, rebuilt from the saved result alone.

`python -m harness report FILE` calls the same function on a saved file, so
nothing here needs a live run.  The summary ends with the command that
re-runs the configuration.
"""

from harness.result import totals


def summary(result, path=None):
    """The human summary of a finalized stress result."""
    cfg = result["config"]
    tot = result.get("totals") or totals(result["threads"], result["duration_s"])
    by = result.get("interrupted_by")
    when = " during the warm-up: the run never started" if result.get("ended_by") == "warm-up" \
        else ""
    lines = [
        f"verdict: {result['verdict']}   outcome: {result['outcome']}"
        + (f" (by {by}{when})" if by else ""),
        f"config: {cfg['threads']} threads ({cfg['reclaimers']} reclaimers), {cfg['pages']} pages,"
        f" locking={cfg['locking']}, capture={'on' if cfg['capture'] else 'off'},"
        + (f" reclaim-policy={cfg['reclaim_policy']}," if cfg.get("reclaim_policy") else "")
        + f" seed={cfg['seed']}, detectors={','.join(cfg['detectors']) or 'none'}"
        + (", lockdep" if cfg.get("lockdep") else "")
        + (f", fault={cfg['fault']}" if cfg.get("fault") else "")
        + (f", chaos={cfg['chaos']:g}" if cfg.get("chaos") else ""),
        f"time: {result['duration_s']:.2f} s (warm-up {result['warmup_s']:.2f} s);"
        f" CPU {result['cpu_s']:.2f} s; parallelism {result['parallelism']:.2f}"
        + _worker_cpu(result),
        f"throughput: {tot['ops_per_s']:,.0f} ops/s (allocators {tot['allocator_ops_per_s']:,.0f},"
        f" reclaimers {tot['reclaimer_ops_per_s']:,.0f})",
    ]
    if tot["high_attempts"]:
        success = tot["reclaim_success"]
        lines.append(
            f"high-order: {tot['high_successes']}/{tot['high_attempts']} "
            f"({100 * tot['high_successes'] / tot['high_attempts']:.1f}%) succeeded;"
            f" reclaims {tot['reclaims']}, after which capture delivered"
            f" {tot['captures_delivered']} and a retry {tot['retry_successes']}"
            + (f" ({100 * success:.1f}% of reclaims succeeded)" if success is not None else ""))
        lines.append(
            f"captured pages: own frees {tot['captured_own_pages']}, other threads' frees"
            f" {tot['captured_other_pages']}, merged free buddies {tot['captured_merged_free_pages']}")
        mig = tot.get("migration") or {}
        if mig.get("isolations") or mig.get("range_no_candidate"):
            lines.append(
                f"migration: ranges isolated {mig['isolations']} (taken {mig['ranges_taken']},"
                f" released {mig['ranges_released']}), no candidate {mig['range_no_candidate']},"
                f" pages migrated {mig['migrated_pages']}, busy {mig['migrate_busy']}")
    refs = tot.get("page_refs") or {}
    if refs.get("lookups"):
        lines.append(f"page cache: lookups {refs['lookups']:,} (hits {refs['lookup_hits']:,}),"
                     f" reclaim skipped {refs['reclaim_skipped_busy']:,} pages in use")
    locks = ", ".join(f"{name} {c['acquisitions']:,} acq / {c['contended']:,} contended"
                      for name, c in result["locks"].items() if c["acquisitions"])
    lines.append(f"locks: {locks or 'none taken'}")
    lines.append(f"invariant checks at quiescent points: {result['checks']} + final")
    for w in result.get("warnings", []):
        lines.append(f"WARNING {w}")
    for p in result["problems"][:20]:
        lines.append(f"PROBLEM {p}")
    if len(result["problems"]) > 20:
        lines.append(f"  ... {len(result['problems']) - 20} more kinds of problem in the report")
    races = [v["race"]["text"] for v in result["worker_violations"] if v.get("race")]
    for text in dict.fromkeys(races[:3]):
        lines.append(f"  race: {text}")
    if result.get("wait_for"):
        wf = result["wait_for"]
        for e in wf["edges"]:
            lines.append(f"  thread {e['thread']} waits for {e['waits_for_lock']}, held by nobody:"
                         f" lost wakeup" if e.get("lost_wakeup") else
                         f"  thread {e['thread']} waits for {e['waits_for_lock']}"
                         f" held by thread {e['held_by']}")
        if wf["cycle"]:
            lines.append("  wait-for cycle: " + " -> ".join(f"thread {n}" for n in wf["cycle"] +
                                                            wf["cycle"][:1]))
    if result.get("lockdep"):
        from harness.lockdep import render
        lines.append(render(result["lockdep"]))
    if result.get("detection_s"):
        res = result.get("detection_resolution_s", {})
        lines.append("first detection: " + ", ".join(
            f"{k} after {v:.3f} s" + (f" (checked every {res[k]:g} s)" if res.get(k) else "")
            for k, v in result["detection_s"].items()))
    if result["traces"]:
        lines.append("flight recorder (all threads, time order, events on the pfns involved):")
        t0 = result["traces"][0]["ns"]
        for e in result["traces"]:
            lines.append(f"  +{(e['ns'] - t0) / 1000:10.1f} us  thread {e['thread']:<3}"
                         f" {e['op']:<15} pfn {e['pfn']:<7} order {e['order']}"
                         + ("  (carried stamp: at or after)" if e.get("carried") else ""))
    if path:
        lines.append(f"report: {path}")
    lines.append(f"reproduce: {result['command']}")
    return "\n".join(lines)


def _worker_cpu(result):
    """How much of the run each worker thread was on a CPU (its one nogil call's CPU time
    over the wall time), lowest and highest; empty for a result saved without it."""
    cpu = [th["cpu_s"] for th in result["threads"] if "cpu_s" in th]
    if not cpu or result["duration_s"] <= 0:
        return ""
    lo, hi = (round(100 * c / result["duration_s"]) for c in (min(cpu), max(cpu)))
    return f"; each worker on a CPU {lo}%" + (f"-{hi}%" if hi != lo else "") + " of the time"
