"""`python -m harness bench`: allocator throughput, both schemes, 1 and N threads, vs plain Python.

Workload (the same for every variant): the plain allocator role
(workers.allocator) with detectors and page cache off: each thread keeps up
to HELD blocks; each step it allocates (order drawn from MIX) when it holds
fewer than half, frees a random held block when it holds more than half, and
otherwise tosses a coin.  An operation is one alloc attempt or one free.
Every variant runs in the same process, one after another, so ratios compare
like with like.
"""

import threading
import time

import numpy as np

from harness import layout as L
from harness.baseline import PyZone
from harness.locks import L_ACQ, L_CONT
from harness.rng import seed_state
from harness.signals import reraise_if_interrupted
from workers.allocator import allocator_loop
from workers.config import worker_config
from workers.counters import C_OPS
from workers.pagecache import new_pool

MIX = {0: 60, 1: 20, 2: 10, 3: 9.5, 9: 0.5}     # percent; "mostly 0-3, occasional order 9"
HELD = 256
PAGES = 1 << 16


def run_threads(threads, seconds, stop):
    """Start `threads`, let them run `seconds`, call `stop()`, join; the wall seconds."""
    t0 = time.perf_counter()
    try:
        for t in threads:
            t.start()
        time.sleep(seconds)
    finally:                    # Ctrl-C or SIGTERM: the workers stop before we leave
        stop()
        for t in threads:
            if t.ident is not None:
                t.join()
    return time.perf_counter() - t0


def run_numba(scheme, nthreads, seconds, seed=1):
    """ops/s of the Numba allocator; also its lock contention."""
    z = L.new_zone_table(PAGES, scheme)
    th = L.new_thread_table(nthreads)
    for t in range(nthreads):
        th[t, L.T_STATE, L.T_RNG] = seed_state(seed, t)
    from harness.config import RunConfig
    cfg = worker_config(RunConfig(threads=nthreads, alloc_mix=MIX, held=HELD,
                                  cache_pct=0))          # no page cache
    pool = new_pool(1, PAGES)
    threads = [threading.Thread(target=allocator_loop,
                                args=(z, th, t, pool, np.zeros((HELD, 3), np.int64), cfg))
               for t in range(nthreads)]

    def stop():
        z[L.ctl_row_py(z), L.CTL_STOP] = 1

    wall = run_threads(threads, seconds, stop)
    per_thread = th[:, L.T_COUNT0, C_OPS]
    locks = L.Sections(z).locks
    acq, cont = int(locks[:, L_ACQ].sum()), int(locks[:, L_CONT].sum())
    return {"ops_per_s": int(per_thread.sum()) / wall, "ops": int(per_thread.sum()),
            "per_thread": per_thread.tolist(), "lock_acquisitions": acq,
            "contended": cont}


def run_python(nthreads, seconds, seed=1):
    """ops/s of the plain-Python baseline with threading.Lock, same workload."""
    import random
    zone = PyZone(PAGES)
    orders, weights = list(MIX), list(MIX.values())
    stop = threading.Event()
    counts = [0] * nthreads

    def body(t):
        rnd = random.Random(seed * 1000 + t)
        held, ops = [], 0
        while not stop.is_set():
            for _ in range(256):
                ops += 1
                n = len(held)
                if n == 0 or (n < HELD // 2 and rnd.random() < 0.75) or \
                        (n < HELD and rnd.random() < 0.5):
                    order = rnd.choices(orders, weights)[0]
                    pfn = zone.alloc(order)
                    if pfn is not None:
                        held.append((pfn, order))
                else:
                    j = rnd.randrange(n)
                    held[j], held[-1] = held[-1], held[j]
                    zone.free(*held.pop())
        counts[t] = ops

    threads = [threading.Thread(target=body, args=(t,)) for t in range(nthreads)]
    wall = run_threads(threads, seconds, stop.set)
    return {"ops_per_s": sum(counts) / wall, "ops": sum(counts)}


def warm_up():
    """Compile (or load from cache) every kernel the bench uses; returns seconds taken."""
    t0 = time.perf_counter()
    for scheme in L.SCHEMES:
        run_numba(scheme, 1, 0.0)
    return time.perf_counter() - t0


def run_bench(seconds=1.5, threads=(1, 2), repeats=5):
    """All variants; the median of `repeats` runs of each, with the range (the machine is
    shared and noisy: two threads sometimes run truly in parallel, sometimes not)."""
    result = {"warmup_s": warm_up(), "seconds": seconds, "pages": PAGES, "mix": MIX,
              "held": HELD, "results": {}}
    res = result["results"]
    for n in threads:
        for name, fn in (("python", lambda: run_python(n, seconds)),
                         ("zone", lambda: run_numba("zone", n, seconds)),
                         ("fine", lambda: run_numba("fine", n, seconds))):
            runs = sorted((fn() for _ in range(repeats)), key=lambda r: r["ops_per_s"])
            res[f"{name}/{n}"] = dict(runs[len(runs) // 2],
                                      range=[runs[0]["ops_per_s"], runs[-1]["ops_per_s"]])
    ratios = {}
    for n in threads:
        base = res[f"python/{n}"]["ops_per_s"]
        for name in ("zone", "fine"):
            ratios[f"{name}/{n} vs python/{n}"] = res[f"{name}/{n}"]["ops_per_s"] / base
        ratios[f"fine/{n} vs zone/{n}"] = res[f"fine/{n}"]["ops_per_s"] / \
            res[f"zone/{n}"]["ops_per_s"]
    result["ratios"] = ratios
    return result


def format_bench(result):
    lines = [f"warm-up (JIT compile or cache load): {result['warmup_s']:.2f} s",
             f"{'variant':<12}{'median ops/s':>16}{'range of runs':>28}{'lock acq':>14}"
             f"{'contended':>12}"]
    for name, r in result["results"].items():
        acq = f"{r['lock_acquisitions']:,}" if "lock_acquisitions" in r else "-"
        cont = f"{r['contended']:,}" if "contended" in r else "-"
        lo, hi = r["range"]
        lines.append(f"{name:<12}{r['ops_per_s']:>16,.0f}{f'{lo:,.0f} .. {hi:,.0f}':>28}"
                     f"{acq:>14}{cont:>12}")
    lines.append("ratios:")
    lines += [f"  {k:<24} {v:8.2f}x" for k, v in result["ratios"].items()]
    return "\n".join(lines)


def run_overhead(seconds=3.0, threads=2, seed=1):
    """Stress throughput with detectors / lockdep on vs off, interleaved in one process."""
    from harness.runner import RunConfig, run_stress, warm_up
    warm = warm_up()
    variants = {"bare": dict(detectors=(), check_ms=0, lockdep=False),
                "detectors": dict(lockdep=False),
                "lockdep": dict(detectors=(), check_ms=0, lockdep=True),
                "all": dict(lockdep=True)}
    ops = {name: [] for name in variants}
    for _ in range(2):                       # interleave: the machine is shared and noisy
        for name, kw in variants.items():
            r = run_stress(RunConfig(seconds=seconds, threads=threads, seed=seed, **kw),
                           warm_s=warm)
            reraise_if_interrupted(r)
            ops[name].append(r["totals"]["ops_per_s"])
    best = {name: max(v) for name, v in ops.items()}
    return {"seconds": seconds, "threads": threads, "ops_per_s": best,
            "slowdown": {name: best["bare"] / v for name, v in best.items()}}


def run_capture_table(seconds=10.0, threads=2, seed=1, reclaim_mix=None):
    """One stress run with capture off and one with capture on, same seed and settings."""
    from harness.runner import RECLAIM_MIX, RunConfig, run_stress, warm_up
    warm = warm_up()
    rows = {}
    for capture in (False, True):
        r = run_stress(RunConfig(seconds=seconds, threads=threads, seed=seed, capture=capture,
                                 reclaim_mix=reclaim_mix or dict(RECLAIM_MIX)), warm_s=warm)
        reraise_if_interrupted(r)
        tot = r["totals"]
        rows["on" if capture else "off"] = {
            "high_order_success": tot["high_successes"] / max(1, tot["high_attempts"]),
            "high_attempts": tot["high_attempts"], "reclaims": tot["reclaims"],
            "reclaim_success": tot["reclaim_success"] or 0.0,
            "captures_delivered": tot["captures_delivered"],
            "retry_successes": tot["retry_successes"],
            "captured_own_pages": tot["captured_own_pages"],
            "captured_other_pages": tot["captured_other_pages"],
            "captured_merged_free_pages": tot["captured_merged_free_pages"],
            "allocator_ops_per_s": tot["allocator_ops"] / r["duration_s"],
            "by_order": tot["high_by_order"], "verdict": r["verdict"]}
    return rows


def format_rows(title, rows):
    keys = [k for k in next(iter(rows.values())) if k != "by_order"]
    lines = [title, f"{'':<28}" + "".join(f"{name:>16}" for name in rows)]
    for k in keys:
        cells = []
        for r in rows.values():
            v = r[k]
            cells.append(f"{v:>16.3f}" if isinstance(v, float) else f"{v!s:>16}")
        lines.append(f"{k:<28}" + "".join(cells))
    return "\n".join(lines)
