"""The lock-order validator: pinned graphs, the `lockorder` fixture, the declaration's
docstring, the analysis on hand-made tables, the seeded inversion, and the CLI.

The pinned edge sets below are deliberately literal: a code change that adds a
nesting fails here until both harness.hierarchy.DECLARED and this pin are
updated on purpose.  Stress runs are short (pages=16384, threads=2); the
module-scoped `warmed` fixture pays the JIT compile (or cache load) once, so
only tests that run kernels request it.
"""

import os
import subprocess
import sys
import textwrap
import threading

import pytest

from harness import faults as F
from harness import hierarchy as H
from harness import layout as L
from harness import lockdep
from harness.runner import RunConfig, run_stress, warm_up
from harness.verdict import grade

pytest_plugins = ["pytester"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = H.CLASS_NAMES

# What a clean short run of each scheme observes: (held class, taken class).
PINNED = {
    "fine": {("block", "capture"), ("block", "area"), ("pcp", "block"), ("pcp", "capture"),
             ("pcp", "area")},
    "zone": {("pcp", "zone")},
}


@pytest.fixture(scope="module")
def warmed():
    """Compile (or load from the cache) every kernel once, before any timed run."""
    return warm_up()


def named(pairs):
    return {(NAMES[a], NAMES[b]) for a, b in pairs}


def observed_pairs(analysis):
    return {(e["held"], e["taken"]) for e in analysis["observed"]}


def harness(*args, timeout=90):
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- pinned graphs

@pytest.mark.timeout(180)          # includes a possible cold JIT compile (~45 s)
@pytest.mark.parametrize("scheme", ["fine", "zone"])
def test_observed_lock_graph_is_pinned(scheme, lockorder, warmed):
    result = lockorder.stress(seconds=1.5, locking=scheme, seed=1)
    analysis = result["lockdep"]

    assert result["outcome"] == "completed"
    assert sum(t["ops"] for t in result["threads"]) > 0
    assert result["locks"]["zone" if scheme == "zone" else "block"]["acquisitions"] > 0

    observed = observed_pairs(analysis)
    assert observed == PINNED[scheme], lockdep.render(analysis)
    assert observed <= named(H.allowed_edges(scheme))
    index = {name: k for k, name in enumerate(NAMES)}
    assert lockdep.find_cycles({(index[a], index[b]) for a, b in observed}) == []
    assert analysis["problems"] == []
    assert analysis["missing"] == []                # every declared edge was exercised
    assert analysis["scheme"] == scheme
    assert {tuple(d) for d in analysis["declared"]} == named(H.allowed_edges(scheme))


def test_pins_match_the_declaration():
    # Both must be edited together: the pin is not a copy that can drift.
    for scheme, pinned in PINNED.items():
        assert named(H.allowed_edges(scheme)) == pinned, scheme


# ---------------------------------------------------------------- the fixture

@pytest.mark.timeout(180)
def test_fixture_zone_api_run_is_clean(lockorder, warmed):
    zone = lockorder.zone(pages=4096, locking="fine")
    small = zone.alloc(0)
    mid = zone.alloc(3)
    assert small is not None and mid is not None
    zone.free(small, 0)

    c = zone.capture_start(4)
    block = zone.alloc(4)
    zone.free(block, 4, capture=c)              # block -> capture (place on the list)
    assert zone.captured(c)
    got = zone.capture_finish(c)
    assert got is not None
    zone.free(got, 4)
    zone.free(mid, 3)

    assert zone.check() == []
    assert zone.free_counts()[L.TOP] == 4
    analysis = zone.lock_order()
    assert analysis["problems"] == [], lockdep.render(analysis)
    observed = observed_pairs(analysis)
    assert ("block", "capture") in observed
    assert observed <= named(H.allowed_edges("fine"))
    # The fixture re-reads this zone at teardown and must find nothing to fail.
    assert all(not a["problems"] for a in lockorder.collect())


INLINE_TESTS = """
    def test_clean_stress(lockorder):
        result = lockorder.stress(seconds=0.5, seed=1)
        assert result["outcome"] == "completed"

    def test_inverted_stress(lockorder):
        lockorder.stress(seconds=3, seed=1, fault="capture-before-block")
"""


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fixture_fails_an_inverted_run_and_passes_a_clean_one(pytester, harness_env, warmed):
    # harness_env (conftest): this tree's package and JIT cache in the pytester subprocess.
    pytester.makepyfile(test_inline=textwrap.dedent(INLINE_TESTS))
    result = pytester.runpytest_subprocess("-rA", "-p", "no:cacheprovider", timeout=120)
    out = result.stdout.str()

    assert result.ret == pytest.ExitCode.TESTS_FAILED, out
    assert "PASSED test_inline.py::test_clean_stress" in out
    assert "FAILED test_inline.py::test_inverted_stress" in out    # the test, not its teardown
    assert "ERROR test_inline.py" not in out
    assert "lock-order validator:" in out
    assert "reproduce: python -m harness stress" in out
    assert "possible circular locking dependency" in out
    assert "capture_finish: block" in out          # the site of the inverted edge


def test_fixture_is_registered_as_a_pytest11_entry_point(pytestconfig):
    plugin = pytestconfig.pluginmanager.get_plugin("harness_lockorder")
    assert plugin is not None
    assert plugin.__name__ == "harness.pytest_plugin"


# ---------------------------------------------------------------- the declaration's docstring

def doc_tree(scheme):
    """The indented tree of `scheme` in hierarchy's docstring: (top entries, nested edges).

    Entries are (indent, class, rest of line); edges are (held, taken, rest of line).
    """
    lines = H.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{scheme} scheme"))
    entries = []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):   # the next paragraph
            break
        if line.strip():
            name, _, rest = line.strip().partition(" ")
            entries.append((len(line) - len(line.lstrip()), name, rest))
    edges, stack = [], []
    for indent, name, rest in entries:
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack:
            edges.append((stack[-1][1], name, rest))
        stack.append((indent, name))
    return entries, edges


@pytest.mark.parametrize("scheme", sorted(H.DECLARED))
def test_docstring_renders_the_declared_edges(scheme):
    entries, edges = doc_tree(scheme)
    assert entries, f"no tree for the {scheme} scheme in harness.hierarchy's docstring"
    assert all(name in NAMES for _, name, _ in entries), entries

    for held, taken, functions in H.DECLARED[scheme]:
        rows = [rest for h, t, rest in edges if (h, t) == (NAMES[held], NAMES[taken])]
        assert rows, f"{NAMES[taken]} is not indented under {NAMES[held]} ({scheme})"
        for fn in functions.split(", "):
            assert any(fn in rest for rest in rows), (fn, rows)

    # And the converse: every nesting the docstring shows is declared, except
    # trylocks, which wait for nobody and so add no edge.
    shown = {(h, t) for h, t, rest in edges if "trylock" not in rest}
    assert shown == named(H.allowed_edges(scheme))


def test_docstring_names_the_no_sleep_classes():
    rules = H.__doc__[H.__doc__.index("Rules:"):]
    assert "NO_SLEEP" in rules
    for cls in H.NO_SLEEP:
        assert NAMES[cls] in rules


# ---------------------------------------------------------------- analyze on hand-made tables

def table():
    return L.new_thread_table(2)


def edge(t, thread, held, taken, site):
    t[thread, L.T_EDGE0 + held, taken] = site + 1


def kinds(analysis):
    return [p["kind"] for p in analysis["problems"]]


def test_analyze_empty_table_is_clean():
    a = lockdep.analyze(table(), "fine")
    assert a["problems"] == []
    assert a["observed"] == []
    assert {tuple(m) for m in a["missing"]} == named(H.allowed_edges("fine"))


def test_analyze_declared_edges_only_is_clean():
    t = table()
    edge(t, 0, H.BLOCK, H.CAPTURE, H.S_PLACE_CAPTURE)
    edge(t, 1, H.BLOCK, H.AREA, H.S_EXPAND_AREA)
    edge(t, 0, H.BLOCK, H.AREA, H.S_MERGE_AREA)
    edge(t, 1, H.PCP, H.BLOCK, H.S_FREE_BLOCK)
    edge(t, 1, H.PCP, H.CAPTURE, H.S_MERGE_CAPTURE)
    edge(t, 1, H.PCP, H.AREA, H.S_ALLOC_AREA)
    a = lockdep.analyze(t, "fine")
    assert a["problems"] == []
    by_pair = {(e["held"], e["taken"]): e for e in a["observed"]}
    assert by_pair[("block", "area")]["threads"] == [0, 1]
    assert by_pair[("block", "area")]["site"] == H.SITES[H.S_MERGE_AREA]   # thread 0's site
    assert by_pair[("block", "capture")]["site"] == H.SITES[H.S_PLACE_CAPTURE]
    assert a["missing"] == []


def test_analyze_two_threads_forming_a_cycle():
    t = table()
    edge(t, 0, H.BLOCK, H.CAPTURE, H.S_PLACE_CAPTURE)
    edge(t, 1, H.CAPTURE, H.BLOCK, H.S_CAPFINISH_BLOCK)
    a = lockdep.analyze(t, "fine")
    circular = [p for p in a["problems"] if p["kind"] == "circular-dependency"]
    assert len(circular) == 1
    p = circular[0]
    assert p["cycle"] == ["block", "capture"]
    assert [(e["held"], e["taken"], e["site"], e["threads"]) for e in p["chain"]] == [
        ("block", "capture", H.SITES[H.S_PLACE_CAPTURE], [0]),
        ("capture", "block", H.SITES[H.S_CAPFINISH_BLOCK], [1]),
    ]
    assert "possible circular locking dependency block -> capture -> block" in p["summary"]
    undeclared = [p for p in a["problems"] if p["kind"] == "undeclared-edge"]
    assert [(p["held"], p["taken"]) for p in undeclared] == [("capture", "block")]

    text = lockdep.render(a)
    assert "possible circular locking dependency" in text
    assert "DEADLOCK" in text
    assert H.SITES[H.S_CAPFINISH_BLOCK] in text
    assert "[BAD]" in text

    dot = lockdep.to_dot(a)
    assert dot.startswith("digraph")
    assert dot.rstrip().endswith("}")
    assert '"block" -> "capture"' in dot
    assert '"capture" -> "block"' in dot
    red = [line for line in dot.splitlines() if "color=red" in line]
    assert len(red) == 1 and '"capture" -> "block"' in red[0]


def test_analyze_three_class_cycle_reports_the_chain_in_order():
    t = table()
    edge(t, 0, H.BLOCK, H.CAPTURE, H.S_PLACE_CAPTURE)
    edge(t, 0, H.CAPTURE, H.AREA, H.S_PLACE_AREA)
    edge(t, 1, H.AREA, H.BLOCK, H.S_ALLOC_BLOCK)
    a = lockdep.analyze(t, "fine")
    circular = [p for p in a["problems"] if p["kind"] == "circular-dependency"]
    assert len(circular) == 1
    chain = [(e["held"], e["taken"]) for e in circular[0]["chain"]]
    assert chain == [("block", "capture"), ("capture", "area"), ("area", "block")]


def test_analyze_self_edge_is_same_class_nesting():
    t = table()
    edge(t, 1, H.BLOCK, H.BLOCK, H.S_ALLOC_BLOCK)
    a = lockdep.analyze(t, "fine")
    assert kinds(a) == ["same-class-nesting"]       # not also an undeclared edge
    p = a["problems"][0]
    assert p["cycle"] == ["block"]
    assert p["chain"][0]["threads"] == [1]
    assert "two locks of class block" in p["summary"]
    assert "same-class-nesting" in lockdep.render(a)


def test_analyze_undeclared_edge():
    t = table()
    edge(t, 0, H.AREA, H.BLOCK, H.S_ALLOC_BLOCK)
    a = lockdep.analyze(t, "fine")
    assert kinds(a) == ["undeclared-edge"]
    p = a["problems"][0]
    assert (p["held"], p["taken"]) == ("area", "block")
    assert p["site"] == H.SITES[H.S_ALLOC_BLOCK]
    assert p["threads"] == [0]
    text = lockdep.render(a)
    assert "undeclared-edge" in text and "[BAD]" in text
    assert "color=red" in lockdep.to_dot(a)


def test_analyze_edge_declared_in_one_scheme_is_undeclared_in_the_other():
    t = table()
    edge(t, 0, H.BLOCK, H.CAPTURE, H.S_PLACE_CAPTURE)
    assert lockdep.analyze(t, "fine")["problems"] == []
    assert kinds(lockdep.analyze(t, "zone")) == ["undeclared-edge"]


def test_analyze_sleep_while_holding():
    t = table()
    t[1, L.T_AUX, L.A_SLEPT_HOLDING] = 3
    t[1, L.T_AUX, L.A_SLEPT_CLASS] = H.AREA
    t[1, L.T_AUX, L.A_SLEPT_WAITING] = 1234
    a = lockdep.analyze(t, "fine", lock_name=lambda row: f"lock#{row}")
    assert kinds(a) == ["sleep-while-holding"]
    p = a["problems"][0]
    assert (p["thread"], p["count"]) == (1, 3)
    assert "area" in p["summary"] and "lock#1234" in p["summary"]


def test_analyze_unlock_not_held():
    t = table()
    t[0, L.T_STATE, L.T_LOCKDEP_ERR] = 2
    a = lockdep.analyze(t, "zone")
    assert kinds(a) == ["unlock-not-held"]
    assert (a["problems"][0]["thread"], a["problems"][0]["count"]) == (0, 2)


def test_dot_marks_declared_but_unseen_edges_dashed():
    t = table()
    edge(t, 0, H.BLOCK, H.AREA, H.S_EXPAND_AREA)
    for taken, site in ((H.BLOCK, H.S_FREE_BLOCK), (H.AREA, H.S_ALLOC_AREA)):
        edge(t, 1, H.PCP, taken, site)
    dot = lockdep.to_dot(lockdep.analyze(t, "fine"))
    assert '"block" -> "area"' in dot and '"pcp" -> "block"' in dot
    dashed = [line for line in dot.splitlines() if "dashed" in line]
    assert len(dashed) == 2, dashed
    assert '"block" -> "capture"' in dashed[0] and '"pcp" -> "capture"' in dashed[1]


# ---------------------------------------------------------------- the seeded inversion

@pytest.mark.timeout(180)
def test_capture_before_block_is_reported_as_a_circular_dependency(warmed):
    # The inversion often also deadlocks for real in these runs (outcome "hang"),
    # so no outcome is asserted: the lockdep report must be there either way.
    for seed in (1, 2, 3):
        result = run_stress(RunConfig(fault="capture-before-block", lockdep=True, seconds=8,
                                      pages=16384, threads=2, seed=seed,
                                      stop_on_violation=True))
        problems = result["lockdep"]["problems"]
        circular = [p for p in problems if p["kind"] == "circular-dependency"
                    and sorted(p["cycle"]) == ["block", "capture"]]
        assert circular, (seed, [p["summary"] for p in problems])
        chain = {(e["held"], e["taken"]): e["site"] for e in circular[0]["chain"]}
        assert chain[("capture", "block")] == H.SITES[H.S_CAPFINISH_BLOCK]
        assert ("block", "capture") in chain
        assert result["detection_s"]["lockdep"] < 5, result["detection_s"]
        assert result["outcome"] in ("completed", "hang")
        assert grade(result)[0] in ("VIOLATIONS", "HANG")
        assert result["unjoined_threads"] == []


@pytest.mark.timeout(180)
def test_inversion_is_reported_by_a_single_thread_that_cannot_deadlock(lockorder, warmed):
    # One thread through the Zone API takes block -> capture (a capture free)
    # and then capture -> block (the inverted capture_finish): no deadlock is
    # possible, yet the cycle is reported, as in Linux lockdep.
    lockorder.expect_problems = True
    zone = lockorder.zone(pages=4096, locking="fine")
    zone.sections.flags[L.F_FAULT] = F.BY_NAME["capture-before-block"].id
    done = {}

    def drive():
        c = zone.capture_start(4)
        zone.free(zone.alloc(4), 4, capture=c)
        done["got"] = zone.capture_finish(c)

    worker = threading.Thread(target=drive, daemon=True)
    worker.start()
    worker.join(20)
    if worker.is_alive():                       # never expected: unstick it, then fail
        zone.table[L.ctl_row_py(zone.table), L.CTL_ABORT] = 1
        worker.join(5)
        pytest.fail("a single thread deadlocked on itself in capture_finish")
    assert done["got"] is not None
    assert zone.check() == []

    analysis = zone.lock_order()
    circular = [p for p in analysis["problems"] if p["kind"] == "circular-dependency"]
    assert [p["cycle"] for p in circular] == [["block", "capture"]], lockdep.render(analysis)
    assert all(e["threads"] == [0] for e in circular[0]["chain"])


# ---------------------------------------------------------------- the command line

@pytest.mark.timeout(180)
def test_cli_lockorder_clean_exits_0(warmed):
    proc = harness("lockorder", "--seconds", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "fine: OK" in proc.stdout
    assert "zone: OK" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(180)
def test_cli_lockorder_with_a_fault_exits_1_or_3_when_it_deadlocked(warmed):
    proc = harness("lockorder", "--seconds", "1", "--fault", "area-then-block")
    hung = "fine: HANG" in proc.stdout
    assert proc.returncode == (3 if hung else 1), proc.stdout + proc.stderr
    assert hung or "fine: PROBLEMS" in proc.stdout
    assert "possible circular locking dependency" in proc.stdout
    # the zone scheme has no inner locks: the fault is skipped there, or has no effect
    assert "zone: OK" in proc.stdout or "zone: skipped" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.timeout(180)
def test_cli_stress_lockdep_writes_a_dot_file(tmp_path, warmed):
    dot = tmp_path / "order.dot"
    proc = harness("stress", "--seconds", "1", "--threads", "2", "--pages", "16384",
                   "--lockdep", "--dot", str(dot), "--report-dir", str(tmp_path / "reports"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = dot.read_text()
    assert text.startswith("digraph")
    assert '"block" -> "capture"' in text
    assert '"block" -> "area"' in text
    assert "color=red" not in text


# ---------------------------------------------------------------- detection time (stamps)

def stamp(t, thread, held, taken, value):
    t[thread, L.T_EDGE_STAMP0 + held, taken] = value


def test_analyze_problem_stamps_on_hand_made_tables():
    t = table()
    edge(t, 0, H.BLOCK, H.CAPTURE, H.S_PLACE_CAPTURE)
    stamp(t, 0, H.BLOCK, H.CAPTURE, 100)
    edge(t, 1, H.BLOCK, H.CAPTURE, H.S_PLACE_CAPTURE)
    stamp(t, 1, H.BLOCK, H.CAPTURE, 50)                 # thread 1 made it first
    edge(t, 1, H.CAPTURE, H.BLOCK, H.S_CAPFINISH_BLOCK)
    stamp(t, 1, H.CAPTURE, H.BLOCK, 300)
    edge(t, 0, H.AREA, H.AREA, H.S_MERGE_AREA)
    stamp(t, 0, H.AREA, H.AREA, 200)
    t[1, L.T_AUX, L.A_SLEPT_HOLDING] = 1
    t[1, L.T_AUX, L.A_SLEPT_STAMP] = 400
    t[0, L.T_STATE, L.T_LOCKDEP_ERR] = 1
    t[0, L.T_AUX, L.A_UNHELD_STAMP] = 500
    a = lockdep.analyze(t, "fine")
    by_pair = {(e["held"], e["taken"]): e for e in a["observed"]}
    assert by_pair[("block", "capture")]["stamp"] == 50
    assert by_pair[("block", "capture")]["threads"] == [0, 1]
    by_kind = {p["kind"]: p for p in a["problems"]}
    assert by_kind["circular-dependency"]["stamp"] == 300     # when the later edge closed it
    assert by_kind["same-class-nesting"]["stamp"] == 200
    assert by_kind["undeclared-edge"]["stamp"] == 300
    assert by_kind["sleep-while-holding"]["stamp"] == 400
    assert by_kind["unlock-not-held"]["stamp"] == 500


@pytest.mark.timeout(180)
def test_edge_stamps_follow_the_order_the_edges_were_made(warmed):
    from harness.api import Zone
    zone = Zone(pages=4096, locking="fine", lockdep=True)
    zone.sections.flags[L.F_FAULT] = F.BY_NAME["capture-before-block"].id
    small = zone.alloc(0)                                   # block -> area (expand)
    first = lockdep.analyze(zone.threads, "fine")["observed"]
    assert [(e["held"], e["taken"]) for e in first] == [("block", "area")]
    c = zone.capture_start(4)
    zone.free(zone.alloc(4), 4, capture=c)                  # block -> capture (placing)
    got = zone.capture_finish(c)                            # capture -> block (the fault)
    assert got is not None
    a = lockdep.analyze(zone.threads, "fine")
    s = {(e["held"], e["taken"]): e["stamp"] for e in a["observed"]}
    assert 0 < s[("block", "area")] < s[("block", "capture")] < s[("capture", "block")]
    cycle = [p for p in a["problems"] if p["kind"] == "circular-dependency"]
    assert len(cycle) == 1 and cycle[0]["stamp"] == s[("capture", "block")]
    undeclared = {(p["held"], p["taken"]): p["stamp"] for p in a["problems"]
                  if p["kind"] == "undeclared-edge"}
    assert undeclared[("capture", "block")] == s[("capture", "block")]
    zone.free(got, 4)
    zone.free(small, 0)


# ---------------------------------------------------------------- after an abort

@pytest.mark.timeout(180)
def test_an_aborted_thread_takes_and_records_nothing_more(warmed):
    # Thread 0's wait for a block lock held by "thread 7" is aborted in the middle of
    # capture_finish.  It must return ABORTED at once: no lock taken afterwards (none
    # left owned by it), no further lockdep edge, no unlock-not-held, and every later
    # call returns ABORTED without touching a lock.
    from harness import zone as Z
    from harness.api import Zone
    from harness.lockverbs import block_lock
    from harness.locks import L_OWNER, lock_acquire

    zone = Zone(pages=4096, locking="fine", lockdep=True)
    z, t = zone.table, zone.threads
    c = zone.capture_start(5)
    page = zone.alloc(4)
    zone.free(page, 4, capture=c)
    before = lockdep.analyze(t, "fine")
    assert lock_acquire(z, block_lock(z, page), 7, t)       # the block stays locked by 7
    z[L.ctl_row_py(z), L.CTL_ABORT] = 1
    assert Z.capture_finish(z, t, 0, zone._lists[c]) == Z.ABORTED
    assert t[0, L.T_AUX, L.A_ABORTED] == 1
    for _ in range(100):
        assert Z.alloc_block(z, t, 0, 0) == Z.ABORTED
        assert Z.free_block(z, t, 0, page, 4, -1) == Z.ABORTED
        assert Z.capture_start(z, t, 0, 4) == Z.ABORTED
    sec = L.Sections(z)
    assert list(sec.locks[:, L_OWNER]).count(1) == 0, "the aborted thread holds a lock"
    after = lockdep.analyze(t, "fine")
    assert after["problems"] == [] == before["problems"]
    assert after["observed"] == before["observed"]
