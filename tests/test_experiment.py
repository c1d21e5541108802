"""The reclaim-policy experiment: statistics, the plan, and the command end to end.

End to end on a tiny budget (2 policies x 1 order range x 2 seeds of 1 s, each a
stress subprocess on the trial engine): the JSON, table and plot are written and
every cell has its trials; SIGTERM stops it quickly, keeping finished trials.
"""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from harness import experiment as E
from harness.config import RunConfig, from_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mean_and_95_interval():
    m, h = E.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert m == 3.0
    assert math.isclose(h, 2.776 * math.sqrt(2.5) / math.sqrt(5), rel_tol=1e-9)
    assert E.mean_ci([2.0]) == (2.0, None)
    assert E.mean_ci([None, None]) == (None, None)
    assert E.mean_ci([1.0, None, 3.0])[0] == 2.0


def test_order_ranges_parse_and_refuse():
    assert E.parse_ranges("4-6,7-10") == ((4, 6), (7, 10))
    assert E.parse_ranges("5") == ((5, 5),)
    for bad in ("3-6", "6-4", "4-11", "a-b", ""):
        with pytest.raises(ValueError):
            E.parse_ranges(bad)


def test_plan_varies_policy_mix_and_seed_and_passes_other_options_through():
    template = RunConfig(threads=2, pages=16384, seconds=3, seed=10, cache_pct=70)
    trials = E.plan(template, ("off", "migrate"), ((4, 6), (7, 10)), 3)
    assert len(trials) == 12 and len({t.id for t in trials}) == 12
    t = next(t for t in trials if t.id == "migrate/7-10/2")
    argv = list(t.argv)
    assert argv[argv.index("--reclaim-policy") + 1] == "migrate"
    assert argv[argv.index("--reclaim-mix") + 1] == "7:1,8:1,9:1,10:1"
    assert argv[argv.index("--seed") + 1] == "11"
    assert argv[argv.index("--cache-pct") + 1] == "70"          # passed through


def run(*args, **kw):
    return subprocess.Popen([sys.executable, "-m", "harness", "experiment", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.timeout(400)
def test_experiment_end_to_end(tmp_path):
    proc = run("--policies", "off,migrate", "--orders", "4-6", "--seeds", "2", "--seconds", "1",
               "--threads", "2", "--pages", "16384", "--report-dir", str(tmp_path))
    out, err = proc.communicate(timeout=380)
    assert proc.returncode == 0, out + err
    assert "Traceback" not in err
    [path] = glob.glob(str(tmp_path / "experiment-*.json"))
    stem = path[:-len(".json")]
    assert os.path.getsize(stem + ".png") > 1000
    with open(stem + ".md") as f:
        assert f.read().strip() == out.strip()
    with open(path) as f:
        exp = json.load(f)
    assert exp["schema"] == E.SCHEMA and not exp["interrupted"]
    assert set(exp["cells"]) == {"off/4-6", "migrate/4-6"}
    for name, cell in exp["cells"].items():
        assert cell["n"] == 2, name
        assert cell["reclaim_success"]["mean"] is not None
        assert cell["alloc_mops"]["ci95"] is not None
    assert exp["cells"]["off/4-6"]["moved_per_reclaim"]["mean"] in (0, None)
    assert all(t["status"] == "clean" and "--reclaim-policy" in t["command"]
               for t in exp["trials"])
    assert "| migrate | 4-6 | 2 |" in out


@pytest.mark.timeout(400)
def test_sigterm_stops_the_experiment_and_keeps_finished_trials(tmp_path):
    proc = run("--policies", "off,capture", "--orders", "4-6", "--seeds", "4", "--seconds", "2",
               "--threads", "2", "--pages", "16384", "--report-dir", str(tmp_path))
    deadline = time.monotonic() + 300
    for line in proc.stderr:                     # wait for the first finished trial
        if line.startswith("[1/"):
            break
        assert time.monotonic() < deadline
    time.sleep(0.5)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 5
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    [path] = glob.glob(str(tmp_path / "experiment-*.json"))
    with open(path) as f:
        exp = json.load(f)
    assert exp["interrupted"] is True
    done = [t for t in exp["trials"] if t["status"] == "clean"]
    assert len(done) >= 1 and all(t["measured"] for t in done)
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


def test_from_args_keeps_the_capture_flag_working():
    import argparse
    from harness.config import add_options
    p = argparse.ArgumentParser()
    add_options(p)
    assert from_args(p.parse_args(["--no-capture"])).policy == "off"
    assert from_args(p.parse_args([])).policy == "capture"
    cfg = from_args(p.parse_args(["--reclaim-policy", "migrate"]))
    assert cfg.policy == "migrate" and cfg.capture is False
    assert from_args(p.parse_args(["--capture", "--reclaim-policy", "migrate+capture"])).capture
