"""The bare build (harness.bare, harness.seams): the same allocator without its seams.

Its kernels must do exactly what the full build's do (the same zone table after
the same operations), index arrays as C does without breaking anything, and no
run that needs a seam may start in it.  The first test compiles the bare build
(the Zone API's kernels and the bench's: ~15-30 s cold), the others reuse it.
"""

import json
import os
import sys
import textwrap
import time

import pytest

from harness import bare
from harness.cli import main

pytestmark = pytest.mark.timeout(300)

# The same random operations through the Zone API; prints the digest of the whole zone
# table, then runs the bench's allocator loop and checks the zone's invariants.
SCRIPT = textwrap.dedent("""
    import hashlib, json, random, sys, threading, time
    sys.path.insert(0, {root!r})
    from harness import layout as L
    from harness.api import Zone

    def digest(scheme, pcp, seed):
        z = Zone(pages=1 << 12, locking=scheme, pcp=pcp, cpus=2)
        rng, held, lists = random.Random(seed), [], []
        for _ in range(3000):
            r = rng.random()
            if lists and r < 0.02:
                pfn = z.capture_finish(lists.pop())
                if pfn is not None:
                    held.append((pfn, int(z.sections.pages[pfn, L.PG_ORDER])))
            elif r < 0.04 and len(lists) < 4:
                lists.append(z.capture_start(rng.randrange(4, 9)))
            elif held and r < 0.5:
                pfn, order = held.pop(rng.randrange(len(held)))
                into = rng.choice(lists) if lists and rng.random() < 0.3 else None
                z.free(pfn, order, capture=into, cpu=rng.randrange(z.cpus))
            else:
                order = rng.choice((0, 0, 0, 1, 2, 3, 5, 9))
                pfn = z.alloc(order, cpu=rng.randrange(z.cpus))
                if pfn is not None:
                    held.append((pfn, order))
        bad = z.check()
        return hashlib.sha256(z.table.tobytes()).hexdigest(), bad

    out = {{f"{{s}}/{{p}}": digest(s, p, 7) for s in ("zone", "fine") for p in (False, True)}}
    if {loop}:
        import numpy as np
        from harness import bench as B, layout as L
        from harness.invariants import check_zone
        from harness.rng import seed_state
        from harness.config import RunConfig
        from workers.allocator import allocator_loop
        from workers.config import worker_config
        from workers.pagecache import new_pool
        for scheme, cpus in (("zone", 0), ("fine", 1)):
            z = L.new_zone_table(B.PAGES, scheme, cpus=cpus, batch=16, high=96)
            th = L.new_thread_table(1)
            th[0, L.T_STATE, L.T_RNG] = seed_state(3, 0)
            cfg = worker_config(RunConfig(threads=1, alloc_mix=B.MIX, held=B.HELD, cache_pct=0))
            held = np.zeros((B.HELD, 3), np.int64)
            args = (z, th, 0, new_pool(1, B.PAGES), held, cfg)
            z[L.ctl_row_py(z), L.CTL_STOP] = 1
            allocator_loop(*args)                       # compiled (or loaded) first
            z[L.ctl_row_py(z), L.CTL_STOP] = 0
            t = threading.Thread(target=lambda: out.update({{scheme: allocator_loop(*args)}}))
            t.start()
            time.sleep(0.3)
            z[L.ctl_row_py(z), L.CTL_STOP] = 1
            t.join()
            out[f"loop {{scheme}}"] = [int(th[0, L.T_COUNT0, 0]), int(out.pop(scheme)),
                                       check_zone(z)]
    print(json.dumps(out))
""")


def run_script(bare_build, loop):
    import subprocess
    env = dict(os.environ)
    env.pop(bare.ENV, None)
    if bare_build:
        env[bare.ENV] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(root=root, loop=loop)],
                          capture_output=True, text=True, env=env, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_the_bare_build_leaves_the_same_zone_as_the_full_build():
    full = run_script(False, loop=False)
    bare_out = run_script(True, loop=True)
    for key, (dig, bad) in full.items():
        assert bad == [] and bare_out[key][1] == []
        assert bare_out[key][0] == dig, key         # byte for byte, locks' counters included
    for scheme in ("zone", "fine"):
        ops, held, bad = bare_out[f"loop {scheme}"]
        assert ops > 0 and held > 0 and bad == []


def test_the_bench_runs_its_numba_variants_in_the_bare_build(harness_cmd):
    proc = harness_cmd("bench", "--threads", "1", "--seconds", "0.2", "--repeats", "1", "--json",
                       timeout=280)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["build"] == "bare"
    assert result["results"]["zone/1"]["ops_per_s"] > 0
    assert result["results"]["fine+pcp/1"]["ops_per_s"] > 0


@pytest.mark.parametrize("argv", [["stress", "--seconds", "1"],
                                  ["faults", "--only", "clean", "--trials", "1"],
                                  ["lockorder"]], ids=lambda a: a[0])
def test_no_stress_run_starts_in_a_bare_process(harness_cmd, argv):
    t0 = time.monotonic()
    proc = harness_cmd(*argv, env=dict(os.environ, **{bare.ENV: "1"}))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"harness: error: stress runs need the full build (detectors, lockdep, witness, faults,"
        f" chaos, flight recorder): unset {bare.ENV}"]
    assert time.monotonic() - t0 < 20          # refused before any kernel is compiled


def test_bench_build_option_is_checked(capsys):
    assert main(["bench", "--build", "bare", "--overhead"]) == 2
    assert "--build applies to the throughput table only" in capsys.readouterr().err
    assert main(["bench", "--build", "bare", "--threads", "1"]) == 2   # this process is full
    assert "this process runs the full build" in capsys.readouterr().err


def test_lockdep_zone_is_refused_in_a_bare_process(monkeypatch):
    from harness.api import Zone
    monkeypatch.setenv(bare.ENV, "1")
    with pytest.raises(ValueError, match="needs the full build"):
        Zone(pages=1 << 12, lockdep=True)


def test_reexec_only_for_the_throughput_table(monkeypatch):
    calls = []
    monkeypatch.delenv(bare.ENV, raising=False)
    monkeypatch.setattr(os, "execve", lambda *a: calls.append(a))
    for argv in (["stress"], ["bench", "--overhead"], ["bench", "--build", "full"],
                 ["bench", "--build=full"], ["bench", "--stamps"], ["bench", "-h"]):
        bare.reexec(argv)
    assert calls == []
    bare.reexec(["bench", "--threads", "1"])
    (exe, args, env), = calls
    assert args[1:] == ["-m", "harness", "bench", "--threads", "1"] and env[bare.ENV] == "1"
