"""`python -m harness nightly` end to end on a tiny budget, shards and merge, JUnit, usage.

One small matrix: a clean cell and a cell with a seeded lock-order fault (so a
night always has the same bucket: lockdep names the cycle long before the
watchdog could), one canary.  The first night (local pool) finds the
bucket new and exits 1; the same night run as two shards and merged into the
same history has the same trial set and calls the bucket still open (exit 0).
"""

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
    assert "**NEW BUCKET OR REGRESSION**" in first.stdout
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
