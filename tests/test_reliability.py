"""What a hostile first day does to the tool: bad paths, full disks, signals, odd numbers,
and whether the reproduction line really reproduces.

Each test pins one way a run could lose its results or lie about them.
"""

import copy
import glob
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import sigint_as_in_a_terminal
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import config as C
from harness import result as R
from harness.campaign import MIN_TRIALS_FOR_BOUND, table
from harness.cli import build_parser, main
from harness.race import explain
from harness.runner import run_stress, warm_up
from harness.verdict import grade, problems

pytestmark = pytest.mark.timeout(300)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--threads", "2", "--pages", "16384"]


@pytest.fixture(scope="module")
def warmed():
    return warm_up()


def harness_cmd(*args):
    return [sys.executable, "-m", "harness", *args]


def run_cli(*args, timeout=120, **kw):
    return subprocess.run(harness_cmd(*args), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kw)


@pytest.fixture
def no_run(monkeypatch):
    """Fail the test if anything builds a run (warm-up included): errors come first."""
    import harness.runner

    def boom(*a, **k):
        raise AssertionError("a run was started before the usage error was found")
    monkeypatch.setattr(harness.runner.Run, "__init__", boom)


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("harness: error: "), err
    return lines[0]


# ---------------------------------------------------------------- the reproduction line

mixes = st.dictionaries(st.integers(0, 10), st.floats(0.01, 1000, allow_nan=False),
                        min_size=1, max_size=11)
costly = st.dictionaries(st.integers(4, 10), st.floats(0.01, 1000, allow_nan=False),
                         min_size=1, max_size=7)


@st.composite
def configs(draw):
    threads = draw(st.integers(1, 16))
    detectors = draw(st.lists(st.sampled_from(C.DETECTORS), unique=True))
    locking = draw(st.sampled_from(["fine", "zone"]))
    capture = draw(st.booleans())
    policy = draw(st.sampled_from(("",) + C.POLICIES))
    effective = policy or ("capture" if capture else "off")
    from harness.faults import FAULTS
    faults = [""] + [f.name for f in FAULTS if locking in getattr(f, "schemes", (locking,))
                     and effective in (getattr(f, "policies", ()) or (effective,))]
    return C.RunConfig(
        threads=threads, reclaimers=draw(st.integers(0, threads)),
        seconds=draw(st.floats(0.001, 1e5, allow_nan=False)), seed=draw(st.integers(0, 1 << 40)),
        pages=1024 * draw(st.integers(1, 64)), locking=locking, capture=capture,
        alloc_mix=draw(mixes), reclaim_mix=draw(costly), held=draw(st.integers(1, 5000)),
        reclaimer_held=draw(st.integers(1, 64)), cache_pct=draw(st.integers(0, 100)),
        pool_fraction=draw(st.floats(0.001, 1.0)), batch_mul=draw(st.integers(0, 64)),
        batch_min=draw(st.integers(1, C.BATCH_MAX)), detectors=tuple(detectors),
        check_ms=draw(st.integers(0, 5000)) if "invariants" in detectors else 0,
        stall_s=draw(st.floats(C.MIN_STALL_S, 100)), stop_on_violation=draw(st.booleans()),
        lockdep=draw(st.booleans()), fault=draw(st.sampled_from(faults)),
        chaos=draw(st.floats(0, 1)), schedule=draw(st.sampled_from(["none", "pct"])),
        pct_depth=draw(st.integers(1, 16)), pct_steps=draw(st.integers(1, 1 << 40)),
        capture_lists=draw(st.integers(0, 4096)), boundscheck=draw(st.booleans()),
        reclaim_policy=policy)


def parse_back(argv):
    return C.from_args(build_parser().parse_args(["stress", *argv]))


@settings(max_examples=300, deadline=None)
@given(configs())
def test_reproduction_command_parses_back_to_the_same_config(cfg):
    assert parse_back(C.to_argv(cfg)) == cfg
    text = C.repro_command(cfg)
    import shlex
    words = shlex.split(text)
    assert words[:4] == ["python", "-m", "harness", "stress"]
    assert parse_back(words[4:]) == cfg


def test_every_config_field_has_a_cli_option():
    import dataclasses
    assert {f.name for f in dataclasses.fields(C.RunConfig)} == set(C.BY_FIELD)


def test_campaign_trial_command_carries_its_check_and_stall_settings():
    import dataclasses
    template = C.RunConfig(threads=2, reclaimers=1, seconds=10, seed=1, pages=16384,
                           lockdep=False, chaos=0.02, check_ms=50, stall_s=2.0)
    cfg = dataclasses.replace(template, seed=4, fault="stale-buddy-order")
    argv = C.to_argv(cfg)
    assert "--check-ms" in argv and "--stall-seconds" in argv and "--no-lockdep" in argv
    assert parse_back(argv) == cfg


def test_saved_config_loads_back(tmp_path):
    cfg = C.RunConfig(threads=3, alloc_mix={0: 1, 5: 2.5}, detectors=("poison",))
    assert C.from_dict(json.loads(json.dumps(C.to_dict(cfg)))) == cfg


# ---------------------------------------------------------------- numbers that are not numbers

@pytest.mark.parametrize("argv", [
    ["--alloc-mix", "0:nan"], ["--alloc-mix", "0:inf"], ["--reclaim-mix", "4:nan"],
    ["--seconds", "inf"], ["--seconds", "nan"], ["--chaos", "nan"], ["--stall-seconds", "inf"],
    ["--pool-fraction", "nan"], ["--alloc-mix", "0:-inf,1:1"],
], ids=lambda a: " ".join(a))
def test_non_finite_numbers_are_refused(argv, tmp_path, capsys):
    assert main(["stress", *argv, "--report-dir", str(tmp_path)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert argv[0] in line
    assert os.listdir(tmp_path) == []


def test_results_are_strict_json():
    with pytest.raises(R.ResultError):
        R.to_json({"x": math.nan})
    with pytest.raises(R.ResultError):
        R.to_json({"x": math.inf})


# ---------------------------------------------------------------- inputs that did nothing

SILENT = {
    "empty detectors": (["stress", "--detectors", ""], "--detectors"),
    "empty report dir": (["stress", "--report-dir", ""], "report folder"),
    "stall too short": (["stress", "--stall-seconds", "0.001"], "--stall-seconds"),
    "dot without lockdep": (["stress", "--no-lockdep", "--dot", "x.dot"], "--lockdep"),
    "check-ms without invariants": (["stress", "--detectors", "poison", "--check-ms", "100"],
                                    "--check-ms"),
    "faults: too many threads": (["faults", "--threads", "300"], "--threads"),
    "lockorder: too many threads": (["lockorder", "--threads", "300"], "--threads"),
    "stress: too many threads": (["stress", "--threads", "300"], "--threads"),
    "faults: huge zone": (["faults", "--pages", "1099511627776"], "--pages"),
    "faults: pages not a multiple": (["faults", "--pages", "1000"], "--pages"),
    "bench: cheap reclaim order": (["bench", "--capture-table", "--reclaim-mix", "2:1"],
                                   "--reclaim-mix"),
    "bench: reclaim mix without the table": (["bench", "--reclaim-mix", "5:1"], "--reclaim-mix"),
    "lockorder: unknown fault": (["lockorder", "--fault", "bogus"], "bogus"),
    "faults: unknown fault": (["faults", "--only", "bogus"], "bogus"),
}


@pytest.mark.parametrize("argv, mentions", SILENT.values(), ids=SILENT.keys())
def test_inputs_that_would_do_nothing_are_refused(argv, mentions, capsys, tmp_path,
                                                  monkeypatch, no_run):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    line = one_error_line(capsys.readouterr().err)
    assert mentions in line, line
    assert os.listdir(tmp_path) == []


def test_a_fault_without_a_site_in_the_scheme_is_refused():
    from harness.faults import FAULTS
    zone_less = [f for f in FAULTS if "zone" not in getattr(f, "schemes", ("zone",))]
    if not zone_less:
        pytest.skip("every fault acts in the zone scheme")
    with pytest.raises(C.ConfigError, match="no effect"):
        C.RunConfig(locking="zone", fault=zone_less[0].name)


def test_large_zone_without_reclaim_says_so(warmed):
    result = run_stress(C.RunConfig(threads=2, seconds=0.6, pages=1 << 20), warm_s=0)
    assert result["totals"]["reclaims"] == 0
    assert any("never had to reclaim" in w for w in result["warnings"]), result["warnings"]


def test_campaign_footer_states_no_bound_for_few_trials():
    campaign = {"config": {"trials": 2, "budget_s": 1, "threads": 2, "pages": 16384,
                           "check_ms": 50, "stall_s": 2}, "faults": {}}
    text = table(campaign)
    assert "too few" in text and "3/2" not in text
    campaign["config"]["trials"] = MIN_TRIALS_FOR_BOUND
    assert f"3/{MIN_TRIALS_FOR_BOUND}" in table(campaign)


# ---------------------------------------------------------------- report folders and files

def test_report_dir_that_is_a_file_is_refused_before_the_run(tmp_path, capsys, no_run):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["stress", "--seconds", "30", "--report-dir", str(afile)]) == 2
    assert "afile" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("folder", ["/proc/harness-reports", "/proc/self"])
def test_unwritable_report_dir_is_refused_before_the_run(folder, capsys, no_run):
    assert main(["stress", "--seconds", "30", "--report-dir", folder]) == 2
    one_error_line(capsys.readouterr().err)


def test_faults_campaign_checks_its_folder_first(tmp_path, capsys, no_run):
    afile = tmp_path / "afile"
    afile.write_text("")
    assert main(["faults", "--only", "clean", "--trials", "1", "--report-dir", str(afile)]) == 2
    one_error_line(capsys.readouterr().err)


def test_unwritable_dot_path_is_refused_before_the_run(tmp_path, capsys, no_run):
    assert main(["stress", "--seconds", "30", "--lockdep", "--dot", "/proc/x/order.dot",
                 "--report-dir", str(tmp_path)]) == 2
    one_error_line(capsys.readouterr().err)


def test_full_disk_at_the_end_still_prints_the_summary(tmp_path, warmed):
    """The probe (1 KiB) fits under the file-size limit, the report does not."""
    proc = subprocess.run(
        ["bash", "-c", 'ulimit -f 2; exec "$@"', "harness", *harness_cmd(
            "stress", "--seconds", "1", *SMALL, "--report-dir", str(tmp_path))],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert proc.stdout.startswith("verdict: CLEAN"), proc.stdout
    assert "reproduce:" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("harness: error: the report was"
                                                           " not saved")
    assert glob.glob(str(tmp_path / "stress-*.json")) == []
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def test_two_saves_in_one_second_keep_both(tmp_path):
    result = {"config": {"seed": 3}, "x": 1}
    a = R.save(result, str(tmp_path))
    b = R.save(dict(result, x=2), str(tmp_path))
    assert a != b
    assert json.load(open(a))["x"] == 1 and json.load(open(b))["x"] == 2


def test_temp_files_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".tmp-{dead.pid}-abc.json"
    stale.write_text("{")
    live = tmp_path / f".tmp-{os.getpid()}-def.json"
    live.write_text("{")
    R.prepare_dir(str(tmp_path))
    assert not stale.exists()
    assert live.exists()


# ---------------------------------------------------------------- loading saved results

def test_report_refuses_a_device_without_reading_it(capsys):
    t0 = time.monotonic()
    assert main(["report", "/dev/zero"]) == 2
    one_error_line(capsys.readouterr().err)
    assert time.monotonic() - t0 < 2


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, warmed):
    folder = tmp_path_factory.mktemp("saved")
    result = run_stress(C.RunConfig(threads=2, seconds=0.5, pages=16384), warm_s=0)
    return result, R.save(result, str(folder))


@pytest.mark.parametrize("damage", [
    lambda r: r.update(locks=[1, 2]), lambda r: r.update(threads={"a": 1}),
    lambda r: r.update(version=1), lambda r: r.update(schema="something-else"),
    lambda r: r["threads"].append(7), lambda r: r.pop("totals"),
    lambda r: r["threads"][0].update(cpu_s="1.5"), lambda r: r["threads"][1].update(cpu_s=None),
], ids=["locks list", "threads dict", "old version", "other schema", "bad thread",
        "no totals", "cpu seconds a string", "cpu seconds null"])
def test_report_of_a_damaged_result_exits_2(damage, saved_run, tmp_path, capsys):
    result, _ = saved_run
    bad = copy.deepcopy(result)
    damage(bad)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["report", str(path)]) == 2
    assert str(path) in one_error_line(capsys.readouterr().err)


def test_report_of_a_result_saved_without_cpu_seconds_still_renders(saved_run, tmp_path,
                                                                     capsys):
    result, _ = saved_run
    old = copy.deepcopy(result)
    for t in old["threads"]:
        del t["cpu_s"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    assert main(["report", str(path)]) == 0
    time_line = capsys.readouterr().out.splitlines()[2]
    assert time_line.startswith("time: ") and "each worker" not in time_line


def test_report_rerenders_a_campaign(tmp_path, warmed, capsys):
    assert main(["faults", "--only", "clean", "--trials", "1", "--budget", "0.5",
                 "--repro", "0", "--threads", "2", "--report-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    path = glob.glob(str(tmp_path / "faults-*.json"))[0]
    assert main(["report", path]) == 0
    assert capsys.readouterr().out.strip() == printed.strip()


# ---------------------------------------------------------------- grading

def test_grading_does_not_change_what_it_grades(saved_run):
    result, _ = saved_run
    before = copy.deepcopy(result)
    grade(result)
    problems(result)
    assert result == before


def fake_result(**kw):
    base = {"outcome": "completed", "worker_violations": [], "invariant_violations": [],
            "end": {}, "lockdep": None, "stalled_threads": []}
    return dict(base, **kw)


def test_repeated_problems_are_grouped_with_a_count():
    v = {"detector": "ownership", "kind": "double_allocation", "pfn": 50112, "order": 6,
         "page": 50144, "thread": 0}
    r = fake_result(worker_violations=[v, v, v, dict(v, pfn=7)])
    found = problems(r)
    assert len(found) == 1
    assert found[0].startswith("ownership: double_allocation: thread 0 allocated pfn 50112")
    assert "[and 3 more like it]" in found[0]
    assert grade(r) == ("VIOLATIONS", 1)


def test_race_report_names_both_sides():
    events = [
        {"thread": 1, "op": "alloc", "pfn": 50144, "order": 2, "ns": 1000},
        {"thread": 0, "op": "free", "pfn": 40000, "order": 0, "ns": 1500},
        {"thread": 0, "op": "alloc", "pfn": 50112, "order": 6, "ns": 2000},
    ]
    v = {"detector": "ownership", "kind": "double_allocation", "thread": 0, "pfn": 50112,
         "order": 6, "page": 50144, "found": 1, "ns": 2100}
    race = explain(v, events)
    assert race["this"] == events[2] and race["other"] == events[0]
    assert race["text"].startswith("thread 1 allocated order-2 block 50144")
    assert "then thread 0 allocated order-6 block 50112 at +1.0 us, which covers it" \
        in race["text"]


def test_race_report_names_a_per_cpu_list_event_in_words():
    events = [{"thread": 1, "op": "pcp-free", "pfn": 50144, "order": 0, "ns": 1000},
              {"thread": 0, "op": "pcp-alloc", "pfn": 50144, "order": 0, "ns": 1200}]
    v = {"detector": "poison", "kind": "x", "thread": 0, "pfn": 50144, "order": 0,
         "page": 50144, "ns": 1500}
    assert explain(v, events)["text"] == (
        "thread 1 freed onto its per-CPU list order-0 block 50144 at +0.0 us, then thread 0"
        " allocated from its per-CPU list order-0 block 50144 at +0.2 us, which covers it"
        " (page 50144)")


def test_race_report_keeps_no_order_inside_a_carried_stamps_window():
    carried = {"thread": 0, "op": "pcp-alloc", "pfn": 50144, "order": 0, "ns": 1000,
               "carried": True, "until_ns": 1600}
    v = {"detector": "ownership", "kind": "x", "thread": 0, "pfn": 50144, "order": 0,
         "page": 50144, "found": 1, "ns": 2000}
    inside = {"thread": 1, "op": "free", "pfn": 50144, "order": 0, "ns": 1200}
    assert explain(v, [carried, inside])["text"] == (
        "thread 0 allocated from its per-CPU list order-0 block 50144 between +0.0 and +0.6"
        " us, and thread 1 freed order-0 block 50144 at +0.2 us, which covers it, in an order"
        " the flight recorder did not keep (page 50144)")
    before = dict(inside, ns=900)           # before the window opened: an order after all
    assert explain(v, [before, carried])["text"] == (
        "thread 1 freed order-0 block 50144 at +0.0 us, then thread 0 allocated from its"
        " per-CPU list order-0 block 50144 between +0.1 and +0.7 us, which covers it"
        " (page 50144)")
    theirs = dict(carried, thread=1)           # the other side's window holds the finding
    assert explain(dict(v, ns=1300), [theirs])["text"] == (
        "thread 1 allocated from its per-CPU list order-0 block 50144 between +0.0 and +0.6"
        " us; thread 0 found page 50144 in the wrong state within that window")
    assert " us; thread 0 then found page" in explain(v, [theirs])["text"]
    unbounded = dict(carried, until_ns=None)    # no stamped event of its thread since
    assert "at or after +0.0 us, and thread 1 freed" in \
        explain(v, [unbounded, dict(inside, ns=1900)])["text"]


# ---------------------------------------------------------------- signals

def start_and_wait_running(argv, marker="running "):
    """Start the CLI; return (process, stderr lines so far) once `marker` was printed."""
    proc = subprocess.Popen(harness_cmd(*argv), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_in_a_terminal)
    seen = []
    deadline = time.monotonic() + 240
    for line in proc.stderr:
        seen.append(line)
        if line.startswith(marker) or time.monotonic() > deadline:
            break
    return proc, seen


def interrupt(proc, sig=signal.SIGINT, within=3.0):
    """Send `sig`; (stdout, stderr) once the process ended, which must be within `within` s
    and without a traceback."""
    t0 = time.monotonic()
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:                     # it ignored the signal: not left behind
            proc.kill()
            proc.wait()
    assert time.monotonic() - t0 < within, (out, err)
    assert "Traceback" not in err
    return out, err


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["SIGTERM", "SIGHUP"])
def test_termination_signals_save_a_partial_report(sig, status, tmp_path, warmed):
    proc, seen = start_and_wait_running(["stress", "--seconds", "30", *SMALL,
                                         "--report-dir", str(tmp_path)])
    time.sleep(1.0)
    out, err = interrupt(proc, sig)
    assert proc.returncode == status, (out, "".join(seen) + err)
    assert out.startswith("verdict: INTERRUPTED")
    reports = glob.glob(str(tmp_path / "stress-*.json"))
    assert len(reports) == 1
    saved = R.load(reports[0])
    assert saved["outcome"] == "interrupted" and saved["exit_status"] == status
    assert saved["interrupted_by"] == signal.Signals(sig).name


def test_sigterm_during_the_warm_up_saves_a_report_of_a_run_that_never_started(tmp_path):
    """An empty kernel cache: SIGTERM lands while the kernels compile."""
    proc = subprocess.Popen(harness_cmd("stress", "--seconds", "30", *SMALL, "--report-dir",
                                        str(tmp_path / "reports")), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, HARNESS_CACHE_DIR=str(tmp_path / "cache")))
    for line in proc.stderr:
        if line.startswith("warm-up: compiling"):
            break
    time.sleep(1.0)
    out, err = interrupt(proc, signal.SIGTERM)
    assert proc.returncode == 143, (out, err)
    assert out.startswith("verdict: INTERRUPTED")
    saved = R.load(glob.glob(str(tmp_path / "reports" / "stress-*.json"))[0])
    assert saved["outcome"] == "interrupted" and saved["ended_by"] == "warm-up"
    assert saved["threads"] == [] and saved["warmup_s"] > 0
    assert saved["command"].startswith("python -m harness stress")


def test_shielded_returns_and_raises_what_its_function_does_and_a_signal_stops_only_the_wait():
    from harness import signals
    assert signals.shielded(lambda: 5) == 5
    with pytest.raises(ZeroDivisionError):
        signals.shielded(lambda: 1 / 0)
    finished = []

    def slow():
        time.sleep(0.6)
        finished.append(True)        # not interrupted: the signal went to the waiting thread
    restore = signals.install()
    try:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()
        t0 = time.monotonic()
        with pytest.raises(signals.Interrupted):
            signals.shielded(slow)
        assert time.monotonic() - t0 < 0.5
    finally:
        restore()
    time.sleep(0.8)
    assert finished == [True]


def test_ctrl_c_stops_bench_promptly(warmed):
    proc, seen = start_and_wait_running(["bench", "--seconds", "5", "--threads", "2",
                                         "--repeats", "5"], marker="warming up")
    time.sleep(3.0)
    out, err = interrupt(proc)
    assert proc.returncode == 130, (out, err)


def test_ctrl_c_stops_a_campaign_and_keeps_finished_trials(tmp_path, warmed):
    proc, seen = start_and_wait_running(
        ["faults", "--only", "clean", "--trials", "2", "--budget", "1.5", "--repro", "0",
         "--threads", "2", "--report-dir", str(tmp_path)], marker="clean ")
    time.sleep(0.5)        # the plain mode is done, the chaos mode is running
    out, err = interrupt(proc)
    assert proc.returncode == 130, (out, "".join(seen) + err)
    saved = R.load(glob.glob(str(tmp_path / "faults-*.json"))[0])
    assert saved["interrupted"] is True
    plain = saved["faults"]["clean"]["modes"]["plain"]["summary"]
    assert plain["trials"] == 2 and plain["detected"] == 0      # not counted as detections
    chaos = saved["faults"]["clean"]["modes"].get("chaos", {"summary": {"trials": 0}})
    assert chaos["summary"]["trials"] < 2
    assert "INTERRUPTED" in out


def test_ctrl_c_stops_lockorder(warmed):
    proc, seen = start_and_wait_running(["lockorder", "--seconds", "20"],
                                         marker="lockorder: checking the fine")
    time.sleep(2.5)
    out, err = interrupt(proc)
    assert proc.returncode == 130, (out, err)
    assert "zone:" not in out               # it did not go on to the next scheme
