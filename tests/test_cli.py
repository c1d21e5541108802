"""The command line: usage errors, --json, `report`, and Ctrl-C in the middle of a run.

Most cases call harness.cli.main(argv) in-process (it returns the exit
status); a few start `python -m harness` for real, to see what a user sees.
"""

import contextlib
import glob
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import sigint_as_in_a_terminal

from harness.cli import main
from harness.runner import warm_up

pytestmark = pytest.mark.timeout(300)      # a cold JIT compile alone can take ~40 s

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--threads", "2", "--pages", "8192"]


@pytest.fixture(scope="module", autouse=True)
def warmed():
    """Compile or load the kernels once; subprocesses then load them from the cache."""
    return warm_up()


def harness_cmd(*args):
    return [sys.executable, "-m", "harness", *args]


def one_error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("harness: error: "), err
    assert "Traceback" not in err
    return lines[0]


# ---------------------------------------------------------------- bad input

BAD = {
    "threads zero": (["stress", "--threads", "0"], "--threads"),
    "threads negative": (["stress", "--threads", "-1"], "--threads"),
    "threads not a number": (["stress", "--threads", "two"], "--threads"),
    "too many threads": (["stress", "--threads", "100000"], "--threads"),
    "reclaimers exceed threads": (["stress", "--reclaimers", "3", "--threads", "2"],
                                  "--reclaimers"),
    "pages not a multiple of 1024": (["stress", "--pages", "1000"], "--pages"),
    "pages zero": (["stress", "--pages", "0"], "--pages"),
    "pages too large": (["stress", "--pages", "2147483648"], "--pages"),
    "seconds zero": (["stress", "--seconds", "0"], "--seconds"),
    "seconds negative": (["stress", "--seconds", "-2"], "--seconds"),
    "seconds nan": (["stress", "--seconds", "nan"], "--seconds"),
    "locking unknown": (["stress", "--locking", "foo"], "--locking"),
    "detector unknown": (["stress", "--detectors", "bogus"], "--detectors"),
    "alloc mix junk": (["stress", "--alloc-mix", "junk"], "--alloc-mix"),
    "alloc mix order 11": (["stress", "--alloc-mix", "0:1,11:1"], "--alloc-mix"),
    "alloc mix all zero": (["stress", "--alloc-mix", "0:0"], "--alloc-mix"),
    "reclaim mix cheap order": (["stress", "--reclaim-mix", "2:1"], "--reclaim-mix"),
    "unknown option": (["stress", "--frobnicate"], "--frobnicate"),
    "unknown command": (["frobnicate"], "frobnicate"),
    "missing command": ([], "command"),
    "bench repeats zero": (["bench", "--repeats", "0"], "--repeats"),
    "bench threads zero": (["bench", "--threads", "0"], "--threads"),
    "report without file": (["report"], "file"),
    "reclaim policy unknown": (["stress", "--reclaim-policy", "lumpy"], "--reclaim-policy"),
    "capture contradicts policy": (["stress", "--no-capture", "--reclaim-policy", "capture"],
                                   "--reclaim-policy"),
    "migration fault without migration": (["stress", "--fault", "migrate-no-freeze",
                                           "--reclaim-policy", "capture"], "migrate"),
    "experiment policy unknown": (["experiment", "--policies", "off,lumpy"], "--policies"),
    "experiment orders bad": (["experiment", "--orders", "2-5"], "--orders"),
    "experiment orders junk": (["experiment", "--orders", "x"], "--orders"),
    "experiment varies the policy": (["experiment", "--reclaim-policy", "off"],
                                     "--reclaim-policy"),
    "experiment seeds zero": (["experiment", "--seeds", "0"], "--seeds"),
    "experiment bad stress option": (["experiment", "--pages", "1000"], "--pages"),
}


@pytest.mark.parametrize("argv, mentions", BAD.values(), ids=BAD.keys())
def test_bad_input_exits_2_with_one_line(argv, mentions, capsys, tmp_path):
    argv = argv + ["--report-dir", str(tmp_path)] if argv[:1] in (["stress"], ["experiment"]) \
        else argv
    t0 = time.monotonic()
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 2, (argv, out, err)
    line = one_error_line(err)
    assert mentions in line, line
    assert out == ""
    assert time.monotonic() - t0 < 5, "a usage error should not start a run"
    assert os.listdir(tmp_path) == []


def test_bad_input_in_a_real_process_has_no_traceback(tmp_path):
    for argv in (["stress", "--threads", "0"], ["stress", "--pages", "1000"], []):
        proc = subprocess.run(harness_cmd(*argv, *(["--report-dir", str(tmp_path)] if argv
                                                   else [])),
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (argv, proc.stderr)
        one_error_line(proc.stderr)
        assert proc.stdout == ""


# ---------------------------------------------------------------- --json and report

@pytest.fixture(scope="module")
def json_run(tmp_path_factory):
    """One short clean run through main(["stress", ..., "--json"]).

    Returns (status, stdout, stderr, report folder).
    """
    folder = tmp_path_factory.mktemp("reports")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["stress", "--seconds", "1", *SMALL, "--seed", "5",
                       "--report-dir", str(folder), "--json"])
    return status, out.getvalue(), err.getvalue(), folder


def test_json_prints_the_result(json_run):
    status, out, err, folder = json_run
    result = json.loads(out)
    assert status == 0, result.get("problems")
    assert result["verdict"] == "CLEAN"
    assert result["exit_status"] == 0
    assert result["outcome"] == "completed"
    assert result["config"]["seed"] == 5
    assert result["config"]["threads"] == 2 and result["config"]["pages"] == 8192
    assert err == ""                      # --json is quiet: no progress lines
    saved = glob.glob(os.path.join(str(folder), "stress-*.json"))
    assert len(saved) == 1
    with open(saved[0]) as f:
        assert f.read() == out            # --json prints exactly what is saved


def test_report_rerenders_a_saved_report(json_run, capsys):
    _, _, _, folder = json_run
    path = glob.glob(os.path.join(str(folder), "stress-*.json"))[0]
    status = main(["report", path])
    text, err = capsys.readouterr()
    assert status == 0, err
    assert text.startswith("verdict: CLEAN")
    assert "verdict:" in text
    assert text.strip().splitlines()[-1].startswith("reproduce: python -m harness stress")
    assert "--seed 5" in text


GARBAGE = {
    "missing": None,
    "not json": "this is not json {",
    "empty": "",
    "json list": "[1, 2, 3]",
    "json null": "null",
    "json object without fields": '{"verdict": "CLEAN"}',
    "NaN inside": '{"schema": "buddy-stress-report", "version": 2, "duration_s": NaN}',
}


@pytest.mark.parametrize("content", GARBAGE.values(), ids=GARBAGE.keys())
def test_report_of_a_bad_file_exits_2_with_one_line(content, tmp_path, capsys):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    status = main(["report", str(path)])
    out, err = capsys.readouterr()
    assert status == 2, (out, err)
    assert str(path) in one_error_line(err)
    assert out == ""


def test_report_of_a_directory_exits_2(tmp_path, capsys):
    status = main(["report", str(tmp_path)])
    _, err = capsys.readouterr()
    assert status == 2
    one_error_line(err)


# ---------------------------------------------------------------- Ctrl-C

def test_sigint_mid_run_saves_an_interrupted_report(tmp_path):
    proc = subprocess.Popen(
        harness_cmd("stress", "--seconds", "30", "--threads", "2", "--pages", "16384",
                    "--report-dir", str(tmp_path)),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=sigint_as_in_a_terminal)
    lines = queue.Queue()
    stderr_seen = []

    def pump():
        for line in proc.stderr:
            stderr_seen.append(line)
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240          # room for a cold compile
        while True:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, ("exited before running", "".join(stderr_seen))
                assert time.monotonic() < deadline, ("no 'running' line", "".join(stderr_seen))
                continue
            if line.startswith("running "):
                break
        time.sleep(1.5)                            # well inside the workers' loop
        assert proc.poll() is None, "".join(stderr_seen)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=5)
    err = "".join(stderr_seen)
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert elapsed < 10
    assert "Traceback" not in err
    reports = glob.glob(os.path.join(str(tmp_path), "*.json"))
    assert len(reports) == 1, (os.listdir(tmp_path), err)
    with open(reports[0]) as f:
        result = json.load(f)
    assert result["outcome"] == "interrupted"
    assert result["verdict"] == "INTERRUPTED"
    assert result["exit_status"] == 130
    assert 1.0 < result["duration_s"] < 29
    assert out.startswith("verdict: INTERRUPTED")
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]
