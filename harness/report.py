"""Reports: the JSON file (written atomically) and the human summary, both from a result dict.

A summary can be rebuilt from a saved file at any time (`python -m harness
report FILE`), so nothing here needs a live run.
"""

import json
import os
import shlex
import tempfile
import time

from harness.verdict import grade, problems


def write_atomic(path, text):
    """Write `text` to `path` via a temp file in the same folder and a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(result, folder, stem="stress"):
    """Add the verdict, write `<folder>/<stem>-<time>-seed<seed>.json`; returns its path."""
    verdict, status = grade(result)
    result["verdict"], result["exit_status"] = verdict, status
    result["problems"] = problems(result)
    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-seed{result['config']['seed']}.json"
    path = os.path.join(folder, name)
    write_atomic(path, json.dumps(result, indent=1, default=str))
    return path


def repro_command(cfg):
    """The command line that re-runs a config (real threads never replay exactly)."""
    args = ["python", "-m", "harness", "stress", "--threads", cfg["threads"],
            "--reclaimers", cfg["reclaimers"], "--seconds", cfg["seconds"], "--seed", cfg["seed"],
            "--pages", cfg["pages"], "--locking", cfg["locking"],
            "--capture" if cfg["capture"] else "--no-capture"]
    if cfg.get("lockdep"):
        args.append("--lockdep")
    if cfg.get("fault"):
        args += ["--fault", cfg["fault"]]
    if cfg.get("chaos"):
        args += ["--chaos", cfg["chaos"]]
    if sorted(cfg["detectors"]) != sorted(("ownership", "poison", "invariants", "trace")):
        args += ["--detectors", ",".join(cfg["detectors"]) or "none"]
    return " ".join(shlex.quote(str(a)) for a in args)


def totals(result):
    threads = result["threads"]
    sum_ = lambda key, role=None: sum(t[key] for t in threads if role in (None, t["role"]))  # noqa: E731
    high = {}
    for t in threads:
        for order, h in t["high_order"].items():
            agg = high.setdefault(order, {"attempts": 0, "successes": 0, "direct": 0})
            for k in agg:
                agg[k] += h[k]
    return {
        "ops": sum_("ops"), "allocator_ops": sum_("ops", "allocator"),
        "reclaimer_ops": sum_("ops", "reclaimer"),
        "high_attempts": sum(h["attempts"] for h in high.values()),
        "high_successes": sum(h["successes"] for h in high.values()),
        "high_by_order": high,
        "reclaims": sum_("reclaims"), "captures_delivered": sum_("captures_delivered"),
        "captured_own_pages": sum_("captured_own_pages"),
        "captured_other_pages": sum_("captured_other_pages"),
        "captured_merged_free_pages": sum_("captured_merged_free_pages"),
        "retry_successes": sum_("retry_successes"),
        "reclaim_success": (sum_("captures_delivered") + sum_("retry_successes"))
        / max(1, sum_("reclaims")),
    }


def summary(result):
    """The terminal summary; it ends with the command that reproduces the run."""
    cfg, tot = result["config"], totals(result)
    wall = result["duration_s"] or 1e-9
    lines = [
        f"verdict: {result.get('verdict') or grade(result)[0]}   outcome: {result['outcome']}",
        f"config: {cfg['threads']} threads ({cfg['reclaimers']} reclaimers), {cfg['pages']} pages,"
        f" locking={cfg['locking']}, capture={'on' if cfg['capture'] else 'off'},"
        f" seed={cfg['seed']}, detectors={','.join(cfg['detectors']) or 'none'}",
        f"time: {result['duration_s']:.2f} s (warm-up {result['warmup_s']:.2f} s);"
        f" CPU {result['cpu_s']:.2f} s; parallelism {result['parallelism']:.2f}",
        f"throughput: {tot['ops'] / wall:,.0f} ops/s (allocators {tot['allocator_ops'] / wall:,.0f},"
        f" reclaimers {tot['reclaimer_ops'] / wall:,.0f})",
    ]
    if tot["high_attempts"]:
        lines.append(
            f"high-order: {tot['high_successes']}/{tot['high_attempts']} "
            f"({100 * tot['high_successes'] / tot['high_attempts']:.1f}%) succeeded;"
            f" reclaims {tot['reclaims']}, after which capture delivered"
            f" {tot['captures_delivered']} and a retry {tot['retry_successes']}"
            f" ({100 * tot['reclaim_success'] :.1f}% of reclaims succeeded)")
        lines.append(
            f"captured pages: own frees {tot['captured_own_pages']}, other threads' frees"
            f" {tot['captured_other_pages']}, merged free buddies {tot['captured_merged_free_pages']}")
    locks = ", ".join(f"{name} {c['acquisitions']:,} acq / {c['contended']:,} contended"
                      for name, c in result["locks"].items() if c["acquisitions"])
    lines.append(f"locks: {locks}")
    lines.append(f"invariant checks at quiescent points: {result['checks']} + final")
    found = result.get("problems") or problems(result)
    for p in found[:20]:
        lines.append(f"PROBLEM {p}")
    if result.get("wait_for"):
        wf = result["wait_for"]
        for e in wf["edges"]:
            lines.append(f"  thread {e['thread']} waits for {e['waits_for_lock']}"
                         f" held by thread {e['held_by']}")
        if wf["cycle"]:
            lines.append("  wait-for cycle: " + " -> ".join(f"thread {n}" for n in wf["cycle"] +
                                                            wf["cycle"][:1]))
    if result.get("lockdep"):
        from harness.lockdep import render
        lines.append(render(result["lockdep"]))
    if result.get("detection_s"):
        lines.append("first detection: " + ", ".join(f"{k} after {v:.3f} s"
                                                     for k, v in result["detection_s"].items()))
    if result["traces"]:
        lines.append("flight recorder (all threads, time order, events on the pfns involved):")
        t0 = result["traces"][0]["ns"]
        for e in result["traces"]:
            lines.append(f"  +{(e['ns'] - t0) / 1000:10.1f} us  thread {e['thread']:<3}"
                         f" {e['op']:<15} pfn {e['pfn']:<7} order {e['order']}")
    if result.get("report_path"):
        lines.append(f"report: {result['report_path']}")
    lines.append(f"reproduce: {repro_command(cfg)}")
    return "\n".join(lines)
