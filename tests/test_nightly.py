"""`python -m harness nightly` end to end on a tiny budget, shards and merge, JUnit, usage.

One small matrix: a clean cell and a cell with a seeded lock-order fault (so a
night always has the same bucket: lockdep names the cycle long before the
watchdog could), one canary.  The first night (local pool) finds the
bucket new and exits 1; the same night run as two shards and merged into the
same history has the same trial set and calls the bucket still open (exit 0).
"""

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from harness.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MATRIX = """
[axes]
locking = ["fine"]
fault = ["", "capture-before-block"]

[base]
lockdep = true
threads = 2
pages = 16384
check_ms = 100
stall_s = 2.0

[canaries]
runs = 1
faults = ["stale-buddy-order"]
"""
COMMON = ("--budget", "40s", "--trial-seconds", "1.5", "--rounds", "1", "--seed", "7")


def nightly(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "harness", "nightly", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def nights(tmp_path_factory, warmed):
    """Night 1 unsharded, then the same night as shards 1/2 + 2/2 merged: one history.

    `warmed` compiles (or loads) the kernels first: a cold compile takes minutes
    and is not what these tests measure."""
    d = tmp_path_factory.mktemp("nightly")
    (d / "matrix.toml").write_text(MATRIX)
    hist = str(d / "history.sqlite")
    m = ("--matrix", str(d / "matrix.toml"), "--history", hist, *COMMON)
    first = nightly(*m, "--out", str(d / "one"), "--repro", "1", "--label", "night-1")
    procs = [subprocess.Popen([sys.executable, "-m", "harness", "nightly", *m, "--shard", s,
                               "--out", str(d / f"s{k}")], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k, s in enumerate(("1/2", "2/2"))]          # shards run at once, as in CI
    shards = [subprocess.CompletedProcess(p.args, p.wait(120), *p.communicate())
              for p in procs]
    merged = nightly("merge", str(d / "s0"), str(d / "s1"), "--history", hist,
                     "--out", str(d / "merged"), "--label", "night-2")
    return d, first, shards, merged


def load(path):
    with open(path) as f:
        return json.load(f)


@pytest.mark.timeout(600)
def test_first_night_finds_a_new_bucket_and_every_canary(nights):
    d, first, _, _ = nights
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Traceback" not in first.stderr
    night = load(d / "one" / "night.json")
    ids = {r["id"] for r in night["records"]}
    assert {"fine-fault/1", "fine-faultcapture-before-block/1",
            "canary-stale-buddy-order/1"} <= ids
    assert night["canaries"]["stale-buddy-order"]["escaped"] == 0
    (new,) = night["buckets"].values()            # one trial, one bucket: its first finding
    assert new["title"] == "possible deadlock: block -> capture" and new["state"] == "new"
    assert new["cells"] == ["fine-faultcapture-before-block"]
    assert new["reproduced"] == "1/1"
    assert new["command"].startswith("python -m harness stress") and "--seed 7000" in \
        new["command"]
    assert not any(ch.isdigit() for ch in new["signature"])
    assert "**NEW BUCKET**" in first.stdout
    for name in ("junit.xml", "report.html", "summary.md", "part-1-of-1.json"):
        assert (d / "one" / name).exists(), name


@pytest.mark.timeout(240)
def test_junit_is_read_back_by_junitparser(nights):
    from junitparser import Failure, JUnitXml
    d = nights[0]
    xml = JUnitXml.fromfile(str(d / "one" / "junit.xml"))
    cases = {(s.name, c.name): c for s in xml for c in s}
    assert set(cases) == {("nightly.matrix", "fine-fault"),
                          ("nightly.matrix", "fine-faultcapture-before-block"),
                          ("nightly.canaries", "canary-stale-buddy-order")}
    assert cases[("nightly.matrix", "fine-fault")].is_passed
    assert cases[("nightly.canaries", "canary-stale-buddy-order")].is_passed
    bad = cases[("nightly.matrix", "fine-faultcapture-before-block")]
    (failure,) = [r for r in bad.result if isinstance(r, Failure)]
    assert failure.message == "[new] possible deadlock: block -> capture"
    assert "python -m harness stress" in bad.system_out and "--fault capture-before-block" in \
        bad.system_out


@pytest.mark.timeout(240)
def test_shards_and_merge_give_the_same_trials_and_a_still_open_bucket(nights):
    d, first, shards, merged = nights
    for s in shards:
        assert s.returncode == 0, s.stdout + s.stderr
    assert merged.returncode == 0, merged.stdout + merged.stderr
    one, two = load(d / "one" / "night.json"), load(d / "merged" / "night.json")

    def trial_set(n):
        return sorted(r["id"] for r in n["records"] if r["kind"] in ("cell", "canary"))
    assert trial_set(one) == trial_set(two) == sorted(one["plan"]["all_ids"])
    assert [r["id"] for r in two["records"] if r["kind"] == "repro"] == []   # known bucket
    assert list(two["buckets"]) == list(one["buckets"])
    assert {b["state"] for b in two["buckets"].values()} == {"still open"}
    with sqlite3.connect(d / "history.sqlite") as db:
        nights_ = db.execute("SELECT label, exit_status FROM nights ORDER BY id").fetchall()
        assert nights_ == [("night-1", 1), ("night-2", 0)]
        n_trials = db.execute("SELECT COUNT(*) FROM trials").fetchone()[0]
        assert n_trials == len(one["records"]) + len(two["records"])
    again = nightly("report", str(d / "merged" / "night.json"), "--format", "junit")
    assert again.returncode == 0
    with open(d / "merged" / "junit.xml") as f:
        assert f.read() == again.stdout           # one result, rendered again the same
    summary = subprocess.run([sys.executable, "-m", "harness", "report",
                              str(d / "merged" / "night.json")],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    with open(d / "merged" / "summary.md") as f:
        assert (summary.returncode, summary.stdout) == (0, f.read())   # `report` reads nights


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, words", [
    (("--shard", "3/2"), "--shard must be i/N"),
    (("--budget", "ten minutes"), "--budget must look like"),
    (("--budget", "5s"), "is too small"),
    (("--matrix", "{bad}"), "not valid TOML"),
    (("--matrix", "{unknown}"), "unknown axis 'colour'"),
    (("--history", "{corrupt}"), "history"),
    (("--scheduler", "tcp://127.0.0.1:9"), "cannot reach the Dask scheduler"),
], ids=["shard", "budget-text", "budget-small", "toml", "axis", "corrupt-history",
        "scheduler"])
def test_bad_input_is_one_line_and_exit_2_before_any_trial(tmp_path, capsys, args, words):
    (tmp_path / "bad.toml").write_text("[axes\nlocking = ")
    (tmp_path / "unknown.toml").write_text("[axes]\ncolour = ['red']\n")
    (tmp_path / "corrupt.sqlite").write_bytes(b"this is not a database" * 100)
    args = [a.format(bad=tmp_path / "bad.toml", unknown=tmp_path / "unknown.toml",
                     corrupt=tmp_path / "corrupt.sqlite") for a in args]
    out = tmp_path / "out"
    status = main(["nightly", "--out", str(out), "--history", str(tmp_path / "h.sqlite"),
                   *args] if "--history" not in args else ["nightly", "--out", str(out), *args])
    err = capsys.readouterr().err
    assert status == 2
    lines = [x for x in err.splitlines() if x.startswith("harness: error:")]
    assert len(lines) == 1 and words in lines[0], err
    assert not (out / "part-1-of-1.json").exists()
    assert not (tmp_path / "h.sqlite").exists()


def test_default_matrix_oversubscribes_and_is_printed(capsys):
    assert main(["nightly", "--show-matrix"]) == 0
    out = capsys.readouterr().out
    cores = os.cpu_count()
    assert f"threads {4 * cores}" in out and "threads 2 " in out
    assert "64 cells" in out and "[axes]" in out


@pytest.mark.timeout(120)
def test_sigterm_stops_the_night_within_seconds_and_keeps_finished_trials(tmp_path, warmed):
    import signal
    import time
    (tmp_path / "m.toml").write_text("[axes]\nlocking = ['fine']\nchaos = [0.0, 0.01, 0.02]\n"
                                     "[base]\nthreads = 2\npages = 16384\nstall_s = 2.0\n"
                                     "[canaries]\nruns = 0\n")
    hist = tmp_path / "h.sqlite"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "nightly", "--matrix",
                             str(tmp_path / "m.toml"), "--budget", "40s", "--trial-seconds", "2",
                             "--rounds", "1",
                             "--history", str(hist), "--out", str(tmp_path / "out")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    err = ""
    while "trial 1/3" not in err and time.monotonic() < deadline:      # one trial finished
        err += proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    t0 = time.monotonic()
    out, rest = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10
    assert proc.returncode == 143, err + rest
    part = load(tmp_path / "out" / "part-1-of-1.json")
    assert part["interrupted"] is True
    statuses = [r["status"] for r in part["records"]]
    assert len(statuses) == 3 and statuses[0] == "clean", statuses
    assert set(statuses[1:]) <= {"interrupted", "not-run"}, statuses
    assert not hist.exists()                     # an interrupted night is not history
    assert "INTERRUPTED" in (tmp_path / "out" / "summary.md").read_text()


def test_merge_refuses_shards_of_different_nights(tmp_path, capsys):
    from harness import nightly as N
    for k, ids in ((1, ["a/1", "b/1"]), (2, ["a/1", "c/1"])):
        part = {"schema": N.PART_SCHEMA, "version": N.NIGHT_VERSION, "shard": [k, 2],
                "started": 1.0, "elapsed_s": 1.0, "budget_s": 60, "interrupted": False,
                "interrupt_status": None, "plan": {"all_ids": ids}, "records": []}
        (tmp_path / f"s{k}").mkdir()
        (tmp_path / f"s{k}" / f"part-{k}-of-2.json").write_text(json.dumps(part))
    status = main(["nightly", "merge", str(tmp_path / "s1"), str(tmp_path / "s2"),
                   "--history", str(tmp_path / "h.sqlite"), "--out", str(tmp_path / "m")])
    assert status == 2
    assert "different nights" in capsys.readouterr().err
    assert not (tmp_path / "h.sqlite").exists()


def test_every_canary_of_the_default_matrix_is_a_valid_run_with_its_faults_workload():
    """A canary runs where its fault acts: its declared workload and reclaim policy."""
    from harness import matrix as M
    from harness.config import from_dict
    m = M.load(None, 2)
    cfgs = {f: from_dict({**M.canary_settings(m, f), "seconds": 1, "seed": 1})
            for f in m.canary_faults}
    assert (cfgs["merge-closed-capture"].threads, cfgs["merge-closed-capture"].reclaimers) == (3, 2)
    assert cfgs["migrate-no-freeze"].policy == "migrate"
    assert (cfgs["free-no-block-lock"].threads, cfgs["free-no-block-lock"].policy) == (2, "capture")


# ---------------------------------------------------------------- lock mutants in a night

MUTANTS_MATRIX = "[axes]\nlocking = ['fine']\n[canaries]\nruns = 0\n[mutants]\nper_night = 2\n"


def test_the_nights_mutants_rotate_through_every_mutant_that_takes_effect():
    from harness import mutants as MU
    from harness import nightly as N
    every = MU.generate()
    runnable = {m.id for m in every if m.schemes}
    n = len(runnable)
    one = [N.pick_mutants(1, seed, every)[0] for seed in range(1000, 1000 + n)]
    assert set(one) == runnable and len(one) == n           # each once in n nights
    three = [N.pick_mutants(3, seed, every) for seed in (5, 6)]
    assert not set(three[0]) & set(three[1])                # consecutive nights differ
    assert N.pick_mutants(0, 5, every) == []
    assert N.pick_mutants(3, 5, every) == N.pick_mutants(3, 5, every)


def test_the_plan_keeps_time_for_mutants_and_splits_them_over_shards(tmp_path):
    from harness import matrix as M
    from harness import nightly as N
    (tmp_path / "m.toml").write_text(MUTANTS_MATRIX)
    m = M.load(str(tmp_path / "m.toml"), 2)
    assert (m.mutants_per_night, m.mutant_trials) == (2, 2)
    plain = N.plan(dataclasses.replace(m, mutants_per_night=0), 1200, 1, seed=9)
    one, two = (N.plan(m, 1200, 1, (i, 2), seed=9) for i in (1, 2))
    assert one.all_mutants == two.all_mutants == N.pick_mutants(2, 9)
    assert one.mutants + two.mutants == one.all_mutants and len(one.mutants) == 1
    assert one.mutant_s == N.mutant_wall_s(1, 2, 1, N.CANARY_MAX_S) >= N.MUTANT_COMPILE_S
    assert plain.mutants == [] and plain.mutant_s == 0
    assert N.plan(m, 1200, 1, seed=9).rounds < plain.rounds       # mutants take cell time
    assert "lock mutant" in one.how and one.all_mutants[0] in one.how
    with pytest.raises(N.NightlyError, match=r"after 2 mutant\(s\)"):
        N.plan(m, 400, 1, seed=9)


@pytest.mark.parametrize("table, words", [
    ("[mutants]\nper_night = -1\n", "mutants.per_night must be an integer in 0..100"),
    ("[mutants]\nper_night = true\n", "mutants.per_night must be"),
    ("[mutants]\ntrials = 0\n", "mutants.trials must be an integer in 1..100"),
    ("[mutants]\nkinds = 3\n", "[mutants] takes per_night and trials"),
], ids=["negative", "bool", "no-trials", "unknown-key"])
def test_a_bad_mutants_table_is_one_line_and_exit_2(tmp_path, capsys, table, words):
    (tmp_path / "m.toml").write_text("[axes]\nlocking = ['fine']\n" + table)
    status = main(["nightly", "--matrix", str(tmp_path / "m.toml"), "--out",
                   str(tmp_path / "out"), "--history", str(tmp_path / "h.sqlite")])
    err = capsys.readouterr().err
    assert status == 2 and words in err and "Traceback" not in err, err


def _mutant_out(status, killer=None):
    """A mutants-campaign result with one real mutant and the given outcome in `fine`."""
    from harness import mutants as MU
    from harness import mutants_campaign as MC
    m = next(m for m in MU.generate() if "fine" in m.schemes and m.id not in MC.EQUIVALENT)
    row = {"seed": 1, "killed": status == "killed", "killed_by": killer, "ttd_s": 0.25 if killer
           else None, "detectors": [killer] if killer else [], "command": "python -m harness"
           " stress --locking fine", "ops": 10 ** 6, "parallelism": 1.8}
    run = MC._scheme_entry([row])
    clean = MC._scheme_entry([{**row, "killed": False, "killed_by": None, "ttd_s": None}])
    out = {"schema": "buddy-stress-mutants", "config": {}, "machine": {}, "elapsed_s": 500,
           "control": {"fine": clean, "zone": clean}, "interrupted": False,
           "mutants": [{**m.row(), "status": status, "compile_s": 400.0,
                        "runs": {"fine": run}}]}
    return m.id, MC.regrade(out)


@pytest.mark.parametrize("status, killer, exit_code, failure", [
    ("killed", "witness", 0, None), ("survived", None, 5, "mutant-survived")],
    ids=["killed", "survived"])
def test_a_nights_mutant_outcome_sets_its_exit_status_and_reports(tmp_path, status, killer,
                                                                  exit_code, failure):
    """A surviving mutant that is not declared equivalent is lost detection power (exit 5,
    a failing JUnit case in nightly.mutants, named in markdown and HTML); a killed one
    passes."""
    import xml.etree.ElementTree as ET
    from harness import nightly as N
    mid, out = _mutant_out(status, killer)
    part = {"schema": N.PART_SCHEMA, "version": N.NIGHT_VERSION, "shard": [1, 1],
            "started": 1.0, "elapsed_s": 1.0, "budget_s": 60, "interrupted": False,
            "interrupt_status": None, "plan": {"all_ids": [], "how": "test"}, "matrix": None,
            "records": [], "mutants": out}
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "part-1-of-1.json").write_text(json.dumps(part))
    night = N.merge(N.find_parts([str(tmp_path / "p")]), str(tmp_path), str(tmp_path / "h"),
                    write_history=False)
    assert night["exit_status"] == exit_code
    paths = N.render_all(night, str(tmp_path))
    suite = next(s for s in ET.parse(paths["junit.xml"]).getroot()
                 if s.get("name") == "nightly.mutants")
    case = next(c for c in suite if c.get("name") == mid)
    got = case.find("failure")
    assert (got.get("type") if got is not None else None) == failure
    md = open(paths["summary.md"]).read()
    assert f"`{mid}` | fine | {'killed' if killer else 'GAP'}" in md
    assert ("MUTANT SURVIVED" in md) == (status == "survived")
    assert mid in open(paths["report.html"]).read()


@pytest.mark.cold_compile
@pytest.mark.timeout(1800)
def test_a_real_night_builds_its_mutant_and_the_matrix_cell_runs_first(tmp_path, warmed):
    """Night 16 of the rotation is `drop-lock/free_block/blk`: it is compiled in its own
    cache after the cell's trial, killed, and the night passes with it in every report."""
    import xml.etree.ElementTree as ET
    (tmp_path / "m.toml").write_text(MUTANTS_MATRIX.replace("per_night = 2", "per_night = 1\n"
                                                            "trials = 1"))
    r = nightly("--matrix", str(tmp_path / "m.toml"), "--budget", "12m", "--trial-seconds",
                "1.5", "--rounds", "1", "--seed", "16", "--history", str(tmp_path / "h.sqlite"),
                "--out", str(tmp_path / "out"), timeout=1700)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    night = load(tmp_path / "out" / "night.json")
    [entry] = night["mutants"]["mutants"]
    assert entry["id"] == "drop-lock/free_block/blk" and entry["status"] == "killed", entry
    assert not night["mutants"]["summary"]["control_killed"]
    assert [x["status"] for x in night["records"]] == ["clean"]
    saved = load(tmp_path / "out" / "mutants-1-of-1.json")
    assert saved["mutants"][0]["status"] == "killed"
    suite = next(s for s in ET.parse(tmp_path / "out" / "junit.xml").getroot()
                 if s.get("name") == "nightly.mutants")
    assert {c.get("name") for c in suite} == {"control", "drop-lock/free_block/blk"}
    assert suite.get("failures") == "0"
