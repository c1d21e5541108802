"""Seeded faults: every fault in the catalogue is caught by one of its declared detectors,
the clean control never is, and `python -m harness faults` lists and reports.

Real threads never replay, so each fault gets up to three trials (different
seeds) and any declared detector counts.  The first trial runs in the mode the
catalogue implies: delay injection (chaos 0.02) if the fault's window is marked
narrow, none otherwise.  The retries always use chaos, so a fault whose window
is narrower than its flag says fails here only if it escapes delay injection
too.  Detected trials stop early (usually well under 2 s); an escaped one
costs its whole 8 s budget.
"""

import dataclasses
import glob
import json
import os
import subprocess
import sys

import pytest

from harness import faults as F
from harness.campaign import CLEAN, DETECTORS, fault_needs, trial
from harness.config import RunConfig
from harness.runner import warm_up

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAOS = 0.02
BUDGET = 8
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def warmed():
    """Compile (or load from the cache) every kernel once, before any timed run."""
    return warm_up()


def run_trial(name, seed, budget, chaos, threads=2, pages=16384):
    """One campaign trial of fault `name` (or CLEAN), as `python -m harness faults` runs it."""
    template = RunConfig(threads=threads, reclaimers=1, seconds=budget, seed=seed, pages=pages,
                         lockdep=True, chaos=chaos, check_ms=50, stall_s=2.0)
    cfg = dataclasses.replace(template, fault="" if name == CLEAN else name,
                              pcp=F.BY_NAME[name].pcp if name in F.BY_NAME else True,
                              **fault_needs(F.BY_NAME.get(name), template))
    return trial(cfg, warm_s=0.0)


def attempts(fault):
    """(seed, chaos) of each trial: first the fault's declared mode, then chaos."""
    return [(SEEDS[0], CHAOS if fault.narrow else 0.0)] + [(seed, CHAOS) for seed in SEEDS[1:]]


def test_catalogue_is_well_formed():
    assert len({f.id for f in F.FAULTS}) == len(F.FAULTS)
    assert F.NO_FAULT not in {f.id for f in F.FAULTS}
    assert CLEAN not in F.BY_NAME
    for f in F.FAULTS:
        assert F.BY_NAME[f.name] is f
        assert f.detectors and set(f.detectors) <= set(DETECTORS), f
        assert f.what and f.goes_wrong
        assert f.schemes and set(f.schemes) <= {"fine", "zone"}, f


def fault_seams():
    """Every `fault(z, F.FAULT_X)` call in the kernel sources: [(id name, file:line, target)]."""
    import ast
    seams = []
    for folder in ("harness", "workers"):
        for path in sorted(glob.glob(os.path.join(ROOT, folder, "*.py"))):
            tree = ast.parse(open(path).read(), path)
            parents = {child: node for node in ast.walk(tree)
                       for child in ast.iter_child_nodes(node)}
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fault" \
                        and len(node.args) == 2:
                    arg = node.args[1]
                    name = arg.attr if isinstance(arg, ast.Attribute) else getattr(arg, "id", "?")
                    parent = parents[node]
                    target = parent.targets[0].id if isinstance(parent, ast.Assign) and \
                        len(parent.targets) == 1 and isinstance(parent.targets[0], ast.Name) \
                        else None
                    seams.append((name, f"{os.path.relpath(path, ROOT)}:{node.lineno}", target))
    return seams


def test_every_fault_has_exactly_one_named_seam():
    seams = fault_seams()
    ids = {name for name in dir(F) if name.startswith("FAULT_")}
    assert ids == {name for name in dir(F) if name.startswith("FAULT_")
                   and getattr(F, name) in {f.id for f in F.FAULTS}}
    used = [name for name, _, _ in seams]
    assert set(used) <= ids, [s for s in seams if s[0] not in ids]       # no unknown id
    for name in sorted(ids):
        sites = [where for n, where, _ in seams if n == name]
        assert len(sites) == 1, (name, sites)
    for name, where, target in seams:                                      # a named boolean
        assert target is not None, f"{where}: the seam of {name} is not assigned to a name"


@pytest.mark.timeout(180)          # 3 trials of <= 8 s (+ hang teardown), and a cold compile
@pytest.mark.parametrize("fault", F.FAULTS, ids=[f.name for f in F.FAULTS])
def test_fault_is_caught_by_a_declared_detector(fault, warmed):
    tried = []
    for seed, chaos in attempts(fault):
        r = run_trial(fault.name, seed, budget=BUDGET, chaos=chaos)
        tried.append({k: r[k] for k in ("seed", "chaos", "verdict", "detectors", "ttd_s",
                                        "problems")})
        if r["detected"] and set(r["detectors"]) & set(fault.detectors):
            assert r["verdict"] in ("VIOLATIONS", "HANG")
            assert r["ttd_s"] is not None and r["ttd_s"] <= BUDGET + 5
            return
    pytest.fail(f"{fault.name} was not caught by any of {fault.detectors} in {len(tried)}"
                f" trials: {tried}")


@pytest.mark.timeout(120)
def test_capture_audit_catches_a_free_that_ignores_its_captured_buddy(warmed):
    """The damage of ignore-captured-buddy lives only while a list is open; the
    reclaimer's audit before capture_finish sees it there, with no chaos."""
    r = run_trial("ignore-captured-buddy", 1, budget=8, chaos=0.0)
    assert r["verdict"] == "VIOLATIONS", r
    assert any("captured_block_beside_free_buddy" in p for p in r["problems"]), r["problems"]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("chaos", [0.0, CHAOS], ids=["plain", "chaos"])
def test_clean_control_is_never_flagged(chaos, warmed):
    r = run_trial(CLEAN, 1, budget=3, chaos=chaos)
    assert r["verdict"] == "CLEAN", r["problems"]
    assert not r["detected"]
    assert r["detectors"] == [] and r["ttd_s"] is None
    assert r["ops"] > 0


def harness(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(60)
def test_cli_lists_every_fault():
    proc = harness("faults", "--list")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    assert listed == [f.name for f in F.FAULTS]
    for f in F.FAULTS:
        line = next(x for x in proc.stdout.splitlines() if x.split()[0] == f.name)
        assert "/".join(f.detectors) in line


@pytest.mark.timeout(180)
def test_cli_campaign_writes_reports_and_exits_0(tmp_path, warmed):
    proc = harness("faults", "--only", "clean,stale-buddy-order", "--trials", "1",
                   "--budget", "2", "--repro", "1", "--threads", "2",
                   "--report-dir", str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr

    jsons = glob.glob(str(tmp_path / "faults-*.json"))
    mds = glob.glob(str(tmp_path / "faults-*.md"))
    assert len(jsons) == 1 and len(mds) == 1, os.listdir(tmp_path)
    assert jsons[0][:-len(".json")] == mds[0][:-len(".md")]

    out = proc.stdout
    assert "reproduced" in out.splitlines()[0]                 # the table's header
    assert "| clean |" in out and "| stale-buddy-order |" in out
    assert "every fault was detected in every trial" in out
    with open(mds[0]) as f:
        assert f.read().strip() == out.strip()

    with open(jsons[0]) as f:
        campaign = json.load(f)
    assert list(campaign["faults"]) == ["clean", "stale-buddy-order"]
    for mode in ("plain", "chaos"):
        clean = campaign["faults"]["clean"]["modes"][mode]
        assert clean["summary"]["detected"] == 0
        assert "reproduced" not in clean               # nothing to reproduce
        stale = campaign["faults"]["stale-buddy-order"]["modes"][mode]
        assert stale["summary"]["detected"] == 1
        assert stale["reproduced"] in ("0/1", "1/1")
        for t in clean["trials"] + stale["trials"]:     # subprocess trials on the engine
            assert t["status"] in ("clean", "violations") and t["exit_code"] in (0, 1)
            assert t["command"].startswith("python -m harness stress")
