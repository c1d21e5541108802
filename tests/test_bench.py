"""The bench: the C reference compiles and runs the workload, is skipped with a reason when
there is no compiler, and the ratios are the quotients of the medians they name."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from harness import bench as B


def test_c_reference_compiles_and_counts_every_thread(tmp_path):
    binary, why = B.compile_c(str(tmp_path))
    if binary is None:
        pytest.skip(why)
    r = B.run_c(binary, 2, 0.2)
    assert len(r["per_thread"]) == 2 and sum(r["per_thread"]) == r["ops"]
    assert all(n > 0 for n in r["per_thread"]) and r["ops_per_s"] > 0


def test_without_a_compiler_the_reason_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))           # nothing to find here
    monkeypatch.delenv("CC", raising=False)
    binary, why = B.compile_c(str(tmp_path))
    assert binary is None and why == "no C compiler found ($CC, cc, gcc, clang)"


def test_ratios_are_quotients_of_the_medians_they_name():
    res = {f"{v}/{n}": {"ops_per_s": float(ops)} for v, n, ops in [
        ("python", 1, 10), ("python", 2, 8), ("c", 1, 400), ("c", 2, 300),
        ("zone", 1, 200), ("zone", 2, 50), ("fine", 1, 150), ("fine", 2, 100),
        ("zone+pcp", 1, 220), ("zone+pcp", 2, 330), ("fine+pcp", 1, 160), ("fine+pcp", 2, 240)]}
    r = B.bench_ratios(res, (1, 2))
    assert r["zone/1 vs c/1 (Numba/C)"] == 0.5
    assert r["fine+pcp/2 vs zone/2"] == 240 / 50
    assert r["scaling fine+pcp: 2 threads vs 1"] == 1.5
    assert r["scaling zone: 2 threads vs 1"] == 0.25
    assert r["fine/2 vs python/2"] == 12.5
    del res["c/2"]                                      # a variant that did not run
    r = B.bench_ratios(res, (1, 2))
    assert "zone/2 vs c/2 (Numba/C)" not in r and "scaling c: 2 threads vs 1" not in r


@pytest.mark.timeout(120)
def test_a_short_bench_runs_every_variant(warmed):
    result = B.run_bench(seconds=0.1, threads=(1, 2), repeats=1)
    want = {f"{v}/{n}" for v in B.VARIANTS for n in (1, 2)}
    if result["c_reference"] != "compiled":
        want -= {"c/1", "c/2"}
    assert set(result["results"]) == want
    assert all(r["ops"] > 0 for r in result["results"].values())
    text = B.format_bench(result)
    assert "scaling fine+pcp: 2 threads vs 1" in text and "fine+pcp/2 vs zone/2" in text


@pytest.mark.timeout(120)
def test_stamp_alternatives_each_cost_a_positive_time_and_the_cli_prints_them(capsys):
    from harness.cli import main
    from harness.tracebench import ALTERNATIVES
    assert main(["bench", "--stamps", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    for name in ALTERNATIVES:
        row = next(line for line in out.splitlines() if name in line)
        one, two = float(row.split("1 thread")[1].split()[0]), float(row.split()[-1])
        assert one > 0 and two > 0
    assert main(["bench", "--stamps", "--overhead"]) == 2


def test_overhead_variants_each_detector_alone_or_together(capsys):
    from harness.cli import main
    from harness.config import DETECTORS, RunConfig
    alone = B.overhead_variants(per_detector=True)
    assert list(alone) == ["bare", *DETECTORS, "lockdep"]
    for name, kw in alone.items():
        cfg = RunConfig(**kw)                       # every variant is a valid run
        assert cfg.detectors == ((name,) if name in DETECTORS else ())
        assert cfg.lockdep == (name == "lockdep")
    assert list(B.overhead_variants()) == ["bare", "detectors", "lockdep", "all"]
    assert main(["bench", "--per-detector"]) == 2
    assert "--per-detector applies to --overhead only" in capsys.readouterr().err


def test_overhead_measures_both_roles_together_and_each_alone(warmed):
    r = B.run_overhead(seconds=0.1, threads=2, rounds=1)
    names = list(B.overhead_variants())
    assert list(r["median"]) == names and list(r["alone"]) == ["allocator", "reclaimer"]
    for role, rows in r["alone"].items():
        assert list(rows) == names
        assert rows["bare"]["slowdown"] == 1.0
        assert rows["bare"]["cpu_slowdown"] == 1.0
        assert rows["bare"]["cpu_slowdown_quartiles"] == [1.0, 1.0, 1.0]
        for row in rows.values():
            assert row["ops_per_s"] > 0 and row["range"][0] <= row["ops_per_s"] <= row["range"][1]
            assert row["slowdown"] == rows["bare"]["ops_per_s"] / row["ops_per_s"]
            # a worker is on its CPU at most the whole run: CPU ns/op <= wall ns/op
            assert 0 < row["cpu_ns_per_op"] <= 1e9 / row["range"][0] * 1.05
            assert row["cpu_slowdown"] == row["cpu_ns_per_op"] / rows["bare"]["cpu_ns_per_op"]
    assert r["role_slowdown"]["bare"]["ops_per_s"] == 1.0
    assert r["role_cpu_slowdown"]["bare"] == {"allocator": 1.0, "reclaimer": 1.0}
    text = B.format_overhead(r)
    assert "each role alone (1 thread)" in text and text.count("detectors") == 5
    assert text.count("CPU per op: allocator") == len(names)
    assert B._slowdown(5.0, 0.0) is None and B._x(None) == "-"   # a variant that did nothing
    json.dumps(r, allow_nan=False)                                # what --json prints


def test_slowdowns_pair_each_run_with_the_bare_run_of_its_round():
    """The machine's drift moves both runs of a round: two rounds of three say 2x, which
    the paired ratio reports where a ratio of medians says 1.33x."""
    bare = [{"r": r, "ns": 1000 / r} for r in (100.0, 40.0, 60.0)]
    det = [{"r": r, "ns": 1000 / r} for r in (50.0, 20.0, 45.0)]
    assert B._median(bare, "r") / B._median(det, "r") == 60 / 45
    assert B._paired(bare, det, "r") == pytest.approx([2.0, 5 / 3, 2.0])
    assert B._paired(bare, det, "ns", per_op=True) == pytest.approx([2.0, 5 / 3, 2.0])
    det[1] = {"r": 0.0, "ns": None}                                # a run that did nothing
    assert B._paired(bare, det, "r") == pytest.approx([5 / 3, 3 / 2, 11 / 6])
    assert B._paired(bare[1:2], det[1:2], "r") is None and B._first(None) is None


def _fake_overhead(detectors_alone):
    """The parts of a run_overhead result that overhead_across reads."""
    roles = ("allocator", "reclaimer")
    return {"rounds": 1,
            "median": {n: {"reclaims_per_s": r, "capture_lists_per_s": r / 2}
                       for n, r in (("bare", 1000.0), ("detectors", 800.0))},
            "role_slowdown": {n: {f"{r}_ops_per_s": s for r in roles}
                              for n, s in (("bare", 1.0), ("detectors", 1.5))},
            "role_cpu_slowdown": {n: {r: s for r in roles}
                                  for n, s in (("bare", 1.0), ("detectors", 1.4))},
            "alone": {r: {"bare": {"cpu_slowdown": 1.0},
                          "detectors": {"cpu_slowdown": detectors_alone}} for r in roles}}


def test_across_processes_each_slowdown_is_the_median_of_the_processes():
    runs = [_fake_overhead(s) for s in (1.2, 1.6, 1.3, None)]     # the last did nothing
    across = B.overhead_across(runs)
    assert list(across) == ["detectors"]                           # bare is the yardstick
    alone = across["detectors"]["allocator"]["alone"]
    assert alone == {"values": [1.2, 1.6, 1.3, None], "median": 1.3}
    assert across["detectors"]["reclaimer"]["rate"]["median"] == 1.5
    text = B.format_overhead_across({"processes": runs, "asked": 5, "interrupted": True,
                                     "across": across, "rates": {}})
    assert "across 4 processes" in text and "(interrupted: 4 of 5 finished)" in text
    assert "1.30x [1.20 1.60 1.30 -]" in text
    rates = B.rates_across(runs)
    assert rates["bare"]["reclaims_per_s"]["median"] == 1000.0
    assert rates["detectors"]["capture_lists_per_s"] == {"values": [400.0] * 4, "median": 400.0}
    text = B.format_overhead_across({"processes": runs, "asked": 4, "interrupted": False,
                                     "across": across, "rates": rates})
    assert "  bare      reclaims 1,000 [1,000 1,000 1,000 1,000]" in text
    assert "capture lists 400 [400 400 400 400]" in text
    assert "nothing measured" in B.format_overhead_across(
        {"processes": [], "asked": 2, "interrupted": True, "across": {}})


@pytest.mark.timeout(60)
def test_each_process_is_a_fresh_child_and_a_failed_one_is_one_line(monkeypatch):
    fake = json.dumps(_fake_overhead(1.25))
    monkeypatch.setattr(B, "overhead_argv", lambda *a: (
        "{python}", "-c", f"import json, os; print(json.dumps(dict(json.loads({fake!r}),"
                          " pid=os.getpid())))"))
    said = []
    result, interrupted = B.run_overhead_processes(2, say=said.append)
    assert interrupted is None and len(result["processes"]) == 2
    pids = {r["pid"] for r in result["processes"]}
    assert len(pids) == 2 and os.getpid() not in pids
    assert result["across"]["detectors"]["allocator"]["alone"]["values"] == [1.25, 1.25]
    assert said[0].startswith("process 1/2 done") and "allocator alone detectors 1.25x" in said[0]
    monkeypatch.setattr(B, "overhead_argv", lambda *a: ("{python}", "-c", "print('hello')"))
    with pytest.raises(B.BenchError, match="process 1 of 2 failed .exit 0.: no output"):
        B.run_overhead_processes(2)                               # no JSON on stdout
    monkeypatch.setattr(B, "overhead_argv", lambda *a: (
        "{python}", "-c", "import sys; sys.exit('harness: error: disk full')"))
    with pytest.raises(B.BenchError, match=r"\(exit 1\): harness: error: disk full$"):
        B.run_overhead_processes(3)


def test_processes_apply_to_overhead_only(capsys):
    from harness.cli import main
    assert main(["bench", "--processes", "2"]) == 2
    assert "--processes applies to --overhead only" in capsys.readouterr().err
    assert main(["bench", "--overhead", "--processes", "0"]) == 2


@pytest.mark.timeout(120)
def test_sigterm_stops_the_processes_and_prints_those_that_finished(root):
    proc = subprocess.Popen([sys.executable, "-m", "harness", "bench", "--overhead",
                             "--processes", "3", "--seconds", "0.1", "--repeats", "1"],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stderr:                     # wait for the first finished process
        if line.startswith("process 1/3 done"):
            break
    time.sleep(0.5)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children                              # the second process is running
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 2
    assert proc.returncode == 143 and "Traceback" not in err, err
    gone, alive = psutil.wait_procs(children, timeout=2)
    assert not alive                             # and it stopped with its parent
    assert "(interrupted: 1 of 3 finished)" in out and "detectors  allocator" in out
    assert "harness: interrupted (SIGTERM)" in err
