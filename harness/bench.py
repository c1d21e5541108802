"""`python -m harness bench`: allocator throughput, both schemes with and without per-CPU
lists, 1..N threads, against plain Python and a C reference.

Workload (the same for every variant): the plain allocator role
(workers.allocator) with detectors and page cache off: each thread keeps up
to HELD blocks; each step it allocates (order drawn from MIX) when it holds
fewer than half, frees a random held block when it holds more than half, and
otherwise tosses a coin.  An operation is one alloc attempt or one free.
Variants: `zone`, `fine` (no per-CPU lists), `zone+pcp`, `fine+pcp` (PCP_BATCH,
PCP_HIGH), `python` (harness.baseline), and `c`: harness/bench_ref.c, the same
loop over the same buddy under one pthread mutex, compiled with the system C
compiler into a temporary directory at bench time (skipped, with one line
saying why, when there is none).  Every variant runs in the same process (C in
a child), one after another, so ratios compare like with like.  The Numba
variants run the bare build when the command runs in one (harness.bare: `python
-m harness bench` does, unless --build full), the full build with every seam's
flag off otherwise; the result says which.
"""

import os
import shutil
import subprocess
import tempfile
import threading
import time

import numpy as np

from harness import bare, layout as L
from harness.baseline import PyZone
from harness.config import DETECTORS, RunConfig
from harness.locks import L_ACQ, L_CONT
from harness.rng import seed_state
from harness.signals import reraise_if_interrupted, shielded
from workers.allocator import allocator_loop
from workers.config import worker_config
from workers.counters import C_OPS
from workers.pagecache import new_pool

MIX = {0: 60, 1: 20, 2: 10, 3: 9.5, 9: 0.5}     # percent; "mostly 0-3, occasional order 9"
HELD = 256
PAGES = 1 << 16
PCP_BATCH, PCP_HIGH = 16, 96                    # the stress defaults (harness.config)
VARIANTS = ("python", "c", "zone", "fine", "zone+pcp", "fine+pcp")
C_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_ref.c")


class BenchError(Exception):
    """A benchmark that could not be measured (a child process that failed)."""


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


def run_numba(scheme, nthreads, seconds, seed=1, pcp=False):
    """ops/s of the Numba allocator (with per-CPU lists if `pcp`); also its lock contention."""
    z = L.new_zone_table(PAGES, scheme, cpus=nthreads if pcp else 0, batch=PCP_BATCH,
                         high=PCP_HIGH)
    th = L.new_thread_table(nthreads)
    for t in range(nthreads):
        th[t, L.T_STATE, L.T_RNG] = seed_state(seed, t)
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


def compile_c(folder):
    """Compile harness/bench_ref.c into `folder`: (binary path, None) or (None, why not)."""
    cc = next((c for c in (os.environ.get("CC"), "cc", "gcc", "clang") if c and shutil.which(c)),
              None)
    if cc is None:
        return None, "no C compiler found ($CC, cc, gcc, clang)"
    out = os.path.join(folder, "bench_ref")
    proc = subprocess.run([cc, "-O2", "-pthread", "-o", out, C_SOURCE, "-lpthread"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"{cc} failed to compile {os.path.basename(C_SOURCE)}: {last}"
    return out, None


def run_c(binary, nthreads, seconds, seed=1):
    """ops/s of the C reference (same workload, seeds and order weights)."""
    from workers.config import order_cdf
    cdf = ",".join(str(int(v)) for v in order_cdf(MIX))
    seeds = [str(seed_state(seed, t)) for t in range(nthreads)]
    proc = subprocess.run([binary, str(PAGES), repr(float(seconds)), str(HELD), cdf, *seeds],
                          capture_output=True, text=True, timeout=seconds + 60, check=True)
    ops, wall, *per_thread = proc.stdout.split()
    return {"ops_per_s": int(ops) / float(wall), "ops": int(ops),
            "per_thread": [int(x) for x in per_thread]}


def warm_up():
    """Compile (or load from cache) every kernel the bench uses; returns seconds taken.

    A signal interrupts the wait for the compile, never the compile (signals.shielded)."""
    def compile_all():
        t0 = time.perf_counter()
        for scheme in L.SCHEMES:
            run_numba(scheme, 1, 0.0)
            run_numba(scheme, 1, 0.0, pcp=True)
        return time.perf_counter() - t0
    return shielded(compile_all)


def run_bench(seconds=1.5, threads=(1, 2, 4, 8), repeats=3, say=None):
    """All variants; the median of `repeats` runs of each, with the range (the machine is
    shared and noisy: two threads sometimes run truly in parallel, sometimes not).

    Ratios: every variant's scaling (N threads vs 1), Numba vs C at each thread count,
    fine+pcp against zone (the one lock without per-CPU lists)."""
    result = {"build": "bare" if bare.active() else "full", "warmup_s": warm_up(),
              "seconds": seconds, "pages": PAGES, "mix": MIX,
              "held": HELD, "pcp_batch": PCP_BATCH, "pcp_high": PCP_HIGH, "results": {},
              "c_reference": None}
    res = result["results"]
    with tempfile.TemporaryDirectory(prefix="bench-c-") as tmp:
        binary, why = compile_c(tmp)
        result["c_reference"] = "compiled" if binary else f"skipped: {why}"
        if say and why:
            say(f"C reference skipped: {why}")
        runners = {"python": lambda n: run_python(n, seconds),
                   "c": (lambda n: run_c(binary, n, seconds)) if binary else None,
                   "zone": lambda n: run_numba("zone", n, seconds),
                   "fine": lambda n: run_numba("fine", n, seconds),
                   "zone+pcp": lambda n: run_numba("zone", n, seconds, pcp=True),
                   "fine+pcp": lambda n: run_numba("fine", n, seconds, pcp=True)}
        for n in threads:
            for name in VARIANTS:
                fn = runners[name]
                if fn is None:
                    continue
                runs = sorted((fn(n) for _ in range(repeats)), key=lambda r: r["ops_per_s"])
                res[f"{name}/{n}"] = dict(runs[len(runs) // 2],
                                          range=[runs[0]["ops_per_s"], runs[-1]["ops_per_s"]])
    result["ratios"] = bench_ratios(res, threads)
    return result


def bench_ratios(res, threads):
    """{label: ratio} of the medians in `res` (keys "variant/threads")."""
    def r(a, b):
        return res[a]["ops_per_s"] / res[b]["ops_per_s"] if a in res and b in res else None

    out = {}
    for n in threads:
        for name in ("zone", "fine", "zone+pcp", "fine+pcp"):
            out[f"{name}/{n} vs python/{n}"] = r(f"{name}/{n}", f"python/{n}")
        for name in ("zone", "fine", "zone+pcp", "fine+pcp"):
            out[f"{name}/{n} vs c/{n} (Numba/C)"] = r(f"{name}/{n}", f"c/{n}")
        out[f"fine/{n} vs zone/{n}"] = r(f"fine/{n}", f"zone/{n}")
        out[f"fine+pcp/{n} vs zone/{n}"] = r(f"fine+pcp/{n}", f"zone/{n}")
        out[f"zone+pcp/{n} vs zone/{n}"] = r(f"zone+pcp/{n}", f"zone/{n}")
    if 1 in threads:
        for n in threads:
            if n != 1:
                for name in VARIANTS:
                    out[f"scaling {name}: {n} threads vs 1"] = r(f"{name}/{n}", f"{name}/1")
    return {k: v for k, v in out.items() if v is not None}


def format_bench(result):
    seams = "no seams compiled in" if result["build"] == "bare" else "every seam's flag off"
    lines = [f"kernels: the {result['build']} build ({seams})",
             f"warm-up (JIT compile or cache load): {result['warmup_s']:.2f} s",
             f"C reference: {result['c_reference']}",
             f"{'variant':<14}{'median ops/s':>16}{'range of runs':>28}{'lock acq':>14}"
             f"{'contended':>12}"]
    for name, r in result["results"].items():
        acq = f"{r['lock_acquisitions']:,}" if "lock_acquisitions" in r else "-"
        cont = f"{r['contended']:,}" if "contended" in r else "-"
        lo, hi = r["range"]
        lines.append(f"{name:<14}{r['ops_per_s']:>16,.0f}{f'{lo:,.0f} .. {hi:,.0f}':>28}"
                     f"{acq:>14}{cont:>12}")
    lines.append("ratios (medians of this run):")
    lines += [f"  {k:<36} {v:8.2f}x" for k, v in result["ratios"].items()]
    return "\n".join(lines)


OVERHEAD_FIGURES = ("ops_per_s", "allocator_ops_per_s", "reclaimer_ops_per_s", "reclaims_per_s",
                    "capture_lists_per_s")


def overhead_figures(r):
    """Per-role rates of one stress result: ops/s by role, reclaims/s and capture lists
    opened per second (reclaims that got a capture list)."""
    tot, wall = r["totals"], max(r["duration_s"], 1e-9)
    no_slot = sum(t.get("capture_no_slot", 0) for t in r["threads"])
    lists = tot["reclaims"] - no_slot if r["config"].get("capture") else 0
    return {"ops_per_s": tot["ops_per_s"], "allocator_ops_per_s": tot["allocator_ops_per_s"],
            "reclaimer_ops_per_s": tot["reclaimer_ops_per_s"],
            "reclaims_per_s": tot["reclaims"] / wall, "capture_lists_per_s": lists / wall,
            **{f"{role}_cpu_ns_per_op": _cpu_ns_per_op(r["threads"], role) for role in ALONE}}


def _cpu_ns_per_op(threads, role):
    """CPU nanoseconds per operation of `role`'s worker threads (None if they did none):
    unlike a rate, blind to the time a worker was off its CPU (another process, the
    hypervisor, a park for the quiescent checks)."""
    ops = sum(th["ops"] for th in threads if th["role"] == role)
    return sum(th["cpu_s"] for th in threads if th["role"] == role) / ops * 1e9 if ops else None


def overhead_variants(per_detector=False):
    """{name: RunConfig settings}: bare, every detector, lockdep alone, all; or, per
    detector, bare, each detector alone and lockdep alone."""
    off = dict(detectors=(), check_ms=0, lockdep=False)
    if per_detector:
        alone = {d: dict(off, detectors=(d,), check_ms=RunConfig.check_ms if
                         d == "invariants" else 0) for d in DETECTORS}
        return {"bare": off, **alone, "lockdep": dict(off, lockdep=True)}
    return {"bare": off, "detectors": dict(lockdep=False), "lockdep": dict(off, lockdep=True),
            "all": dict(lockdep=True)}


ALONE = {"allocator": dict(threads=1, reclaimers=0), "reclaimer": dict(threads=1, reclaimers=1)}


def _interleaved(configs, rounds, warm):
    """{name: [overhead figures of each run]}: `rounds` stress runs of each RunConfig in
    `configs`, round-robin (the machine is shared and noisy: interleaving spreads its
    moods over every variant alike)."""
    from harness.runner import run_stress
    runs = {name: [] for name in configs}
    for _ in range(rounds):
        for name, cfg in configs.items():
            r = run_stress(cfg, warm_s=warm)
            reraise_if_interrupted(r)
            runs[name].append(overhead_figures(r))
    return runs


def _median(figures, key):
    return float(np.median([f[key] for f in figures]))


def _range(figures, key):
    return [min(f[key] for f in figures), max(f[key] for f in figures)]


def _slowdown(bare, rate):
    """bare / rate; None when the variant did none (JSON has no infinity)."""
    return bare / rate if rate else None


def _paired(bare_runs, runs, key, per_op=False):
    """[median, lower quartile, upper quartile] of the slowdowns of `runs` against the bare
    run of the same round (bare rate / rate, or, `per_op`, cost / bare cost); None when no
    round has one.  The machine's speed drifts over seconds (the same work took 34 to 54 CPU
    ns an operation in quarter-second windows of one run), and the two runs of a round sit
    side by side in that drift, so the ratio of a round is steadier than a ratio of medians
    taken over the whole measurement."""
    pairs = [(v[key] / b[key]) if per_op else _slowdown(b[key], v[key])
             for b, v in zip(bare_runs, runs) if b[key] and v[key]]
    return [float(q) for q in np.percentile(pairs, (50, 25, 75))] if pairs else None


def _first(quartiles):
    return quartiles[0] if quartiles else None


def _x(ratio):
    return f"{ratio:.2f}x" if ratio is not None else "-"


def run_overhead(seconds=3.0, threads=2, seed=1, rounds=3, pcp=True, per_detector=False):
    """Stress throughput with detectors / lockdep on vs off (or each detector alone), per
    role, interleaved in one process: `rounds` runs of each variant, round-robin; medians,
    the range of runs, and each role's slowdown: the median over rounds of the variant's
    run against the bare run of the same round (`_paired`).

    In a run of both roles each role's rate also moves with the other's (a faster thread
    holds the zone's locks more often), so each role is also run alone on one thread
    (`alone`): the reclaimer then allocates and frees its 16..1024-page blocks without
    anyone to reclaim from, which is the cost per operation the detectors add to it."""
    from harness.runner import warm_up
    warm = warm_up()
    variants = overhead_variants(per_detector)

    def config(kw, **shape):
        return RunConfig(**{"seconds": seconds, "threads": threads, "seed": seed, "pcp": pcp,
                            **kw, **shape})

    runs = _interleaved({name: config(kw) for name, kw in variants.items()}, rounds, warm)
    alone_runs = _interleaved({(role, name): config(kw, **shape) for role, shape in ALONE.items()
                               for name, kw in variants.items()}, rounds, warm)
    median = {name: {k: _median(fs, k) for k in OVERHEAD_FIGURES} for name, fs in runs.items()}
    spread = {name: {k: _range(fs, k) for k in OVERHEAD_FIGURES} for name, fs in runs.items()}
    slowdown = {name: {k: _first(_paired(runs["bare"], fs, k))
                       for k in OVERHEAD_FIGURES if k != "capture_lists_per_s"}
                for name, fs in runs.items()}
    cpu_slowdown = {name: {role: _first(_paired(runs["bare"], fs, f"{role}_cpu_ns_per_op",
                                                per_op=True)) for role in ALONE}
                    for name, fs in runs.items()}
    alone = {}
    for role in ALONE:
        key, cpu_key = f"{role}_ops_per_s", f"{role}_cpu_ns_per_op"
        bare_runs = alone_runs[(role, "bare")]
        alone[role] = {}
        for name in variants:
            fs = alone_runs[(role, name)]
            cpu = _paired(bare_runs, fs, cpu_key, per_op=True)
            alone[role][name] = {"ops_per_s": _median(fs, key), "range": _range(fs, key),
                                 "slowdown": _first(_paired(bare_runs, fs, key)),
                                 "cpu_ns_per_op": _median(fs, cpu_key),
                                 "cpu_slowdown": _first(cpu), "cpu_slowdown_quartiles": cpu}
    return {"seconds": seconds, "threads": threads, "rounds": rounds, "pcp": pcp,
            "ops_per_s": {name: m["ops_per_s"] for name, m in median.items()},
            "slowdown": {name: s["ops_per_s"] for name, s in slowdown.items()},
            "median": median, "range": spread, "role_slowdown": slowdown,
            "role_cpu_slowdown": cpu_slowdown, "runs": runs,
            "alone": alone}


def overhead_argv(seconds, threads, rounds, per_detector):
    """The command that runs `run_overhead` with these settings and prints its JSON."""
    return ("{python}", "-m", "harness", "bench", "--overhead", "--json", "--seconds",
            repr(seconds), "--threads", str(threads), "--repeats", str(rounds),
            *(("--per-detector",) if per_detector else ()))


def run_overhead_processes(processes, seconds=3.0, threads=2, rounds=3, per_detector=False,
                           say=None):
    """`run_overhead` in `processes` fresh processes, one after another; each process's
    result and `overhead_across` them.

    One process's slowdowns are steady from round to round but land anywhere in a band
    from process to process (poison alone on the allocator alone: 1.06x-1.32x in six
    processes of one build, one after another): something is drawn once a process (not
    transparent huge pages, not the address-space layout: README, "A process is a draw"),
    so each process is one more draw.  An interrupt stops the running one and returns
    what finished, marked."""
    from harness.trials import TIMEOUT, Trial, run_trial
    argv = overhead_argv(seconds, threads, rounds, per_detector)
    variants = len(overhead_variants(per_detector))
    timeout = 3 * variants * (1 + len(ALONE)) * rounds * (seconds + 1) + 600
    results, interrupted = [], None
    for i in range(processes):
        trial = Trial(id=f"overhead-{i}", argv=(), timeout_s=timeout, command=argv)
        try:
            record = run_trial(trial)           # an interrupt kills the running child
        except KeyboardInterrupt as exc:
            interrupted = exc
            break
        result = record["result"]
        if record["exit_code"] != 0 or not isinstance(result, dict):
            tail = (record["stderr_tail"] or "").strip().splitlines()
            how = "timed out" if record["status"] == TIMEOUT else f"exit {record['exit_code']}"
            raise BenchError(f"overhead process {i + 1} of {processes} failed ({how}):"
                             f" {tail[-1] if tail else 'no output'}")
        results.append(result)
        if say:
            say(f"process {i + 1}/{processes} done in {record['elapsed_s']:.0f} s: "
                + _alone_line(result))
    return {"processes": results, "asked": processes, "interrupted": interrupted is not None,
            "across": overhead_across(results), "rates": rates_across(results)}, interrupted


def _alone_line(result):
    """Each role alone, each variant's CPU per op slowdown: one process's headline."""
    return "; ".join(f"{role} alone " + " ".join(
        f"{name} {_x(row['cpu_slowdown'])}" for name, row in rows.items() if name != "bare")
        for role, rows in result["alone"].items())


ACROSS_KINDS = {"rate": "2 threads: rate", "cpu": "2 threads: CPU per op",
                "alone": "alone: CPU per op"}


def _summary(values):
    """Each process's value (None: its variant did none) and the median of the others."""
    got = [v for v in values if v is not None]
    return {"values": values, "median": float(np.median(got)) if got else None}


def overhead_across(results):
    """{variant: {role: {kind: {"values": each process's slowdown, "median": theirs}}}}
    for the kinds of ACROSS_KINDS; a process whose variant did none is left out."""
    if not results:
        return {}
    return {name: {role: {"rate": _summary([r["role_slowdown"][name][f"{role}_ops_per_s"]
                                            for r in results]),
                          "cpu": _summary([r["role_cpu_slowdown"][name][role] for r in results]),
                          "alone": _summary([r["alone"][role][name]["cpu_slowdown"]
                                             for r in results])}
                   for role in ALONE}
            for name in results[0]["role_slowdown"] if name != "bare"}


RATES = {"reclaims_per_s": "reclaims", "capture_lists_per_s": "capture lists"}


def rates_across(results):
    """{variant: {rate: {"values": each process's median, "median": theirs}}} for the
    2-thread runs' reclaims and capture lists opened per second."""
    if not results:
        return {}
    return {name: {k: _summary([r["median"][name][k] for r in results]) for k in RATES}
            for name in results[0]["median"]}


def format_overhead_across(result):
    """Slowdowns against bare over several processes: the median of the processes' own
    medians, then each process's in brackets, in the order they ran."""
    done = len(result["processes"])
    if not done:
        return (f"interrupted before the first of {result['asked']} processes finished:"
                " nothing measured")
    rounds = result["processes"][0]["rounds"]
    lines = [f"slowdown vs bare across {done} process{'es' if done > 1 else ''}, {rounds}"
             " interleaved rounds each"
             + (f" (interrupted: {done} of {result['asked']} finished)"
                if result["interrupted"] else "")
             + ": median of the processes [each process]"]
    rows = [(name, role, [f"{_x(kinds[k]['median'])} [" + " ".join(
        f"{v:.2f}" if v is not None else "-" for v in kinds[k]["values"]) + "]"
        for k in ACROSS_KINDS]) for name, roles in result["across"].items()
        for role, kinds in roles.items()]
    width = max(len(c) for _, _, cells in rows for c in [*cells, *ACROSS_KINDS.values()]) + 3
    for name, role, cells in [("variant", "role", list(ACROSS_KINDS.values())), *rows]:
        lines.append((f"{name:<11}{role:<11}" + "".join(f"{c:<{width}}" for c in cells)).rstrip())
    lines.append("per second in the 2-thread runs, median of the processes [each process]:")
    for name, rates in result["rates"].items():
        lines.append(f"  {name:<10}" + "   ".join(
            f"{label} {r['median']:,.0f} [" + " ".join(f"{v:,.0f}" for v in r["values"]) + "]"
            for label, r in ((RATES[k], rates[k]) for k in RATES)))
    return "\n".join(lines)


def format_overhead(result):
    """The overhead table: medians per variant and role, slowdowns, ranges of runs; then
    each role alone."""
    lines = [f"stress, {result['threads']} threads, per-CPU lists"
             f" {'on' if result['pcp'] else 'off'}, median of {result['rounds']} interleaved"
             " runs per variant:",
             f"{'variant':<10}{'all ops/s':>14}{'allocator ops/s':>18}{'reclaimer ops/s':>18}"
             f"{'reclaims/s':>12}{'capture lists/s':>17}"]
    for name, m in result["median"].items():
        lines.append(f"{name:<10}{m['ops_per_s']:>14,.0f}{m['allocator_ops_per_s']:>18,.0f}"
                     f"{m['reclaimer_ops_per_s']:>18,.0f}{m['reclaims_per_s']:>12,.0f}"
                     f"{m['capture_lists_per_s']:>17,.0f}")
    lines.append("slowdown vs bare (median over rounds of each round's ratio; CPU per op is"
                 " blind to the time a worker was off its CPU):")
    for name, s in result["role_slowdown"].items():
        c = result["role_cpu_slowdown"][name]
        lines.append(f"  {name:<10} all {_x(s['ops_per_s'])}   allocator"
                     f" {_x(s['allocator_ops_per_s'])}   reclaimer {_x(s['reclaimer_ops_per_s'])}"
                     f"   reclaims {_x(s['reclaims_per_s'])}   CPU per op: allocator"
                     f" {_x(c['allocator'])}   reclaimer {_x(c['reclaimer'])}")
    lines.append("range of runs:")
    for name, r in result["range"].items():
        lines.append(f"  {name:<10} allocator {r['allocator_ops_per_s'][0]:,.0f} .."
                     f" {r['allocator_ops_per_s'][1]:,.0f}   reclaimer"
                     f" {r['reclaimer_ops_per_s'][0]:,.0f} .. {r['reclaimer_ops_per_s'][1]:,.0f}")
    lines.append(f"each role alone (1 thread), median of {result['rounds']} interleaved runs"
                 " (slowdowns: median and quartiles of each round's ratio):")
    for role, rows in result["alone"].items():
        lines.append(f"  {role}")
        for name, r in rows.items():
            lo, hi = r["range"]
            q = r["cpu_slowdown_quartiles"]
            spread = f"({q[1]:.2f}..{q[2]:.2f})" if q else ""
            lines.append(f"    {name:<10}{r['ops_per_s']:>14,.0f} ops/s  {_x(r['slowdown']):>6}"
                         f"   CPU {r['cpu_ns_per_op']:6.1f} ns/op {_x(r['cpu_slowdown']):>6}"
                         f" {spread:<12}  range {lo:,.0f} .. {hi:,.0f} ops/s")
    return "\n".join(lines)


def run_capture_table(seconds=10.0, threads=2, seed=1, reclaim_mix=None):
    """Stress runs with capture off and on, each without and with per-CPU lists (whose
    blocks a capture list sees only when a spill or drain_all_pages frees them); same seed
    and settings."""
    from harness.runner import RECLAIM_MIX, RunConfig, run_stress, warm_up
    warm = warm_up()
    rows = {}
    for pcp, capture in ((False, False), (False, True), (True, False), (True, True)):
        r = run_stress(RunConfig(seconds=seconds, threads=threads, seed=seed, capture=capture,
                                 pcp=pcp, reclaim_mix=reclaim_mix or dict(RECLAIM_MIX)),
                       warm_s=warm)
        reraise_if_interrupted(r)
        tot = r["totals"]
        rows[f"capture {'on' if capture else 'off'}{', pcp' if pcp else ''}"] = {
            "high_order_success": tot["high_successes"] / max(1, tot["high_attempts"]),
            "high_attempts": tot["high_attempts"], "reclaims": tot["reclaims"],
            "reclaim_success": tot["reclaim_success"] or 0.0,
            "captures_delivered": tot["captures_delivered"],
            "retry_successes": tot["retry_successes"],
            "captured_own_pages": tot["captured_own_pages"],
            "captured_other_pages": tot["captured_other_pages"],
            "captured_merged_free_pages": tot["captured_merged_free_pages"],
            "pcp_drained_blocks": tot["pcp_drained_blocks"],
            "allocator_ops_per_s": tot["allocator_ops"] / r["duration_s"],
            "by_order": tot["high_by_order"], "verdict": r["verdict"]}
    return rows


def format_rows(title, rows):
    keys = [k for k in next(iter(rows.values())) if k != "by_order"]
    width = max(16, 2 + max(len(name) for name in rows))
    lines = [title, f"{'':<28}" + "".join(f"{name:>{width}}" for name in rows)]
    for k in keys:
        cells = []
        for r in rows.values():
            v = r[k]
            cells.append(f"{v:>{width}.3f}" if isinstance(v, float) else f"{v!s:>{width}}")
        lines.append(f"{k:<28}" + "".join(cells))
    return "\n".join(lines)
