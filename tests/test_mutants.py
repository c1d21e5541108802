"""Lock mutants: generation from source (synthetic and the real kernels), the equivalence
table, the campaign's bookkeeping on a scripted engine, the CLI, and one real mutant
compiled and killed (cold_compile: minutes).

The synthetic kernels are executed as plain Python with recording lock verbs, so
the tests see what each edit does to the lock calls, not only that it parses.
"""

import ast
import json
import os
import textwrap

import pytest

from harness import faults as F
from harness import mutants as MU
from harness import mutants_campaign as MC
from harness import trials as T
from harness.cli import main
from harness.config import RunConfig
from harness.mutants_equiv import EQUIVALENT
from harness.result import load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SYNTHETIC = textwrap.dedent('''\
    """Three small kernels: every operator has sites here."""


    @njit(nogil=True)
    def put(z, t, me, pfn, order):
        """Doc."""
        if not zone_enter(z, t, me):
            return -2
        blk = block_lock(z, pfn)
        alk = area_lock(z, order)
        if not fine_lock(z, t, me, blk, 1):
            return -2
        if not fine_lock(z, t, me, alk, 2):
            return -2
        if z[pfn, 0] != 0:
            fine_unlock(z, t, me, alk)
            fine_unlock(z, t, me, blk)
            zone_leave(z, t, me)
            return -3
        z[pfn, 0] = 1
        fine_unlock(z, t, me, alk)
        z[pfn, 1] = order
        fine_unlock(z, t, me, blk)
        zone_leave(z, t, me)
        return 0


    @njit(nogil=True)
    def take(z, t, me, pfn):
        slow = fault(z, F.FAULT_LOST_COALESCING)
        lk = block_lock(z, pfn)
        if slow:
            if not fine_lock(z, t, me, lk, 3):
                return -2
            z[pfn, 0] = 2
            fine_unlock(z, t, me, lk)
        return 0


    @njit(nogil=True)
    def peek(z, t, me, pfn):
        lk = block_lock(z, pfn)
        seen = z[pfn, 2]
        if not fine_lock(z, t, me, lk, 4):
            return -2
        if seen >= 0:
            seen = z[pfn, 2]
        fine_unlock(z, t, me, lk)
        return seen


    def not_a_kernel(z, t, me):
        fine_lock(z, t, me, 5, 5)
        fine_unlock(z, t, me, 5)
''')
SYNTHETIC_COUNTS = {"drop-lock": 5, "swap-locks": 1, "drop-recheck": 2, "early-unlock": 4}
# The real kernels: a change here means the kernels' locking changed; say so in README.
REAL_COUNTS = {"drop-lock": 20, "swap-locks": 1, "drop-recheck": 5, "early-unlock": 17}


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    (root / "harness").mkdir()
    (root / "harness" / "syn.py").write_text(SYNTHETIC)
    return MU.generate(root, ("harness/syn.py",))


@pytest.fixture(scope="module")
def real():
    return MU.generate()


class Recorder:
    """Plain-Python stand-ins for the lock verbs that record what a kernel took."""

    def __init__(self):
        self.events = []

    def namespace(self, fault_on=False):
        ev = self.events
        return {"njit": lambda **kw: (lambda f: f),
                "zone_enter": lambda z, t, me: ev.append(("acq", "zone")) or True,
                "zone_leave": lambda z, t, me: ev.append(("rel", "zone")),
                "fine_lock": lambda z, t, me, lk, site: ev.append(("acq", lk)) or True,
                "fine_unlock": lambda z, t, me, lk: ev.append(("rel", lk)),
                "block_lock": lambda z, pfn: "block", "area_lock": lambda z, order: "area",
                "fault": lambda z, f: fault_on, "F": F}


def run(source, name, *args, fault_on=False, taken=0):
    rec = Recorder()
    ns = rec.namespace(fault_on)
    exec(compile(source, "<mutant>", "exec"), ns)
    z = {(0, 0): taken, (0, 1): 0, (0, 2): 5}

    class Table(dict):
        def __getitem__(self, k):
            return dict.get(self, k, 0)
    table = Table(z)
    rc = ns[name](table, None, 0, 0, *args)
    return rc, rec.events, table


def balanced(events):
    held = []
    for kind, lk in events:
        if kind == "acq":
            assert lk not in held
            held.append(lk)
        else:
            assert lk in held, events
            held.remove(lk)
    return not held


# ---------------------------------------------------------------- generation

def test_synthetic_counts_per_operator(synthetic):
    assert MU.counts(synthetic) == SYNTHETIC_COUNTS
    assert all(m.function != "not_a_kernel" for m in synthetic)


def test_generation_is_deterministic(synthetic, real, tmp_path_factory):
    assert MU.generate() == real
    again = [m.id for m in MU.generate(tmp_path_factory.getbasetemp() / "syn0",
                                       ("harness/syn.py",))]
    assert again == [m.id for m in synthetic]


def test_every_mutant_parses_and_differs(synthetic, real):
    original = open(os.path.join(ROOT, "harness/zone.py")).read()
    for m in real:
        assert m.source != original
        ast.parse(m.source)
    assert len({m.id for m in real}) == len(real)
    assert len({m.source for m in real}) == len(real)
    for m in synthetic:
        ast.parse(m.source)


def test_drop_lock_removes_the_pair(synthetic):
    """The dropped lock is never taken nor released; every other lock stays balanced."""
    clean_rc, clean_events, _ = run(SYNTHETIC, "put", 3)
    assert clean_rc == 0 and balanced(clean_events)
    dropped = {m.id: m for m in synthetic if m.operator == "drop-lock" and m.function == "put"}
    assert set(dropped) == {"drop-lock/put/zone", "drop-lock/put/blk", "drop-lock/put/alk"}
    for mid, lock in (("drop-lock/put/zone", "zone"), ("drop-lock/put/blk", "block"),
                      ("drop-lock/put/alk", "area")):
        rc, events, table = run(dropped[mid].source, "put", 3)
        assert rc == 0 and table[(0, 1)] == 3
        assert lock not in {lk for _, lk in events}, (mid, events)
        assert balanced(events)
        assert [e for e in clean_events if e[1] != lock] == events
    assert dropped["drop-lock/put/zone"].schemes == ("zone",)
    assert dropped["drop-lock/put/blk"].schemes == ("fine",)


def test_swap_recheck_and_early_unlock_edits(synthetic):
    by_id = {m.id: m for m in synthetic}
    _, events, _ = run(by_id["swap-locks/put/blk+alk"].source, "put", 3)
    assert events[:3] == [("acq", "zone"), ("acq", "area"), ("acq", "block")]
    # The re-check that makes put refuse a taken page is gone: it writes anyway.
    assert run(SYNTHETIC, "put", 3, taken=1)[0] == -3
    rc, events, table = run(by_id["drop-recheck/put/alk"].source, "put", 3, taken=1)
    assert rc == 0 and table[(0, 1)] == 3 and balanced(events)
    reread = by_id["drop-recheck/peek/lk"]
    assert "re-read" in reread.description and reread.source.count("seen = z[pfn, 2]") == 1
    # early-unlock: the release now comes before the write it guarded.
    _, events, _ = run(by_id["early-unlock/put/alk"].source, "put", 3)
    assert events.index(("rel", "area")) < events.index(("rel", "block"))
    lines = by_id["early-unlock/put/blk"].source.splitlines()
    assert lines.index("    fine_unlock(z, t, me, blk)") < lines.index("    z[pfn, 1] = order")
    lines = by_id["early-unlock/put/zone"].source.splitlines()
    assert lines.index("    zone_leave(z, t, me)") < lines.index("    z[pfn, 1] = order")
    assert {m.id for m in synthetic if m.operator == "early-unlock"} == {
        "early-unlock/put/alk", "early-unlock/put/blk", "early-unlock/put/zone",
        "early-unlock/take/lk"}


def test_a_release_never_moves_above_the_value_its_condition_reads(tmp_path):
    """Moved above `keep = ...`, `if not keep: fine_unlock(...)` would read `keep` before
    it is assigned: a mutant that does not compile, reported as a finding."""
    (tmp_path / "harness").mkdir()
    (tmp_path / "harness" / "fin.py").write_text(textwrap.dedent('''\
        @njit(nogil=True)
        def fin(z, t, me, lk):
            if not fine_lock(z, t, me, lk, 1):
                return -2
            z[lk, 1] = 5
            keep = fault(z, F.FAULT_CAPTURE_BEFORE_BLOCK)
            if not keep:
                fine_unlock(z, t, me, lk)
            z[lk, 2] = 1
            if keep:
                fine_unlock(z, t, me, lk)
            return 0
    '''))
    mutants = MU.generate(tmp_path, ("harness/fin.py",))
    moved = [m for m in mutants if m.operator == "early-unlock"]
    for m in moved:
        lines = m.source.splitlines()
        assert lines.index("    keep = fault(z, F.FAULT_CAPTURE_BEFORE_BLOCK)") < \
            min(i for i, x in enumerate(lines) if "keep" in x and "fault" not in x), m.id
    assert [m.id for m in moved] == ["early-unlock/fin/lk"]     # the second release only


def test_fault_seams_take_effect_in_no_scheme(synthetic, real):
    seam = [m for m in synthetic if m.function == "take"]
    assert {m.operator for m in seam} == {"drop-lock", "early-unlock"}
    assert all(m.schemes == () and "FAULT_LOST_COALESCING" in m.note for m in seam)
    for m in real:
        assert bool(m.schemes) != bool(m.note), m.id
        if m.note:
            assert hasattr(F, m.note.split()[4]), m.note


def test_real_kernel_counts(real):
    assert MU.counts(real) == REAL_COUNTS
    assert {m.function for m in real} == {"alloc_block", "free_block", "capture_start",
                                          "capture_finish", "merge_and_place", "expand"}
    # Every lock acquisition site of the kernels is dropped once.
    src = open(os.path.join(ROOT, "harness/zone.py")).read()
    sites = sum(src.count(f"{v}(z, t, me") for v in ("zone_enter", "fine_lock", "fine_trylock"))
    assert REAL_COUNTS["drop-lock"] == sites


def test_verb_tables_cover_lockverbs():
    """Every verb of harness.lockverbs that takes or releases a lock is in a table."""
    tree = ast.parse(open(os.path.join(ROOT, "harness/lockverbs.py")).read())
    fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    prims = {"lock_acquire", "lock_try", "lock_release"}

    def calls(fn, seen=()):
        names = {c.func.id for c in ast.walk(fn) if isinstance(c, ast.Call)
                 and isinstance(c.func, ast.Name)}
        return names | {x for n in names & set(fns) - set(seen)
                        for x in calls(fns[n], (*seen, n))}
    verbs = {n for n, fn in fns.items() if calls(fn) & prims}
    assert verbs == set(MU.ACQUIRE) | set(MU.RELEASE)


def test_equivalence_table_names_runnable_mutants(real):
    by_id = {m.id: m for m in real}
    for mid, reason in EQUIVALENT.items():
        assert mid in by_id, mid
        assert by_id[mid].schemes, f"{mid} runs in no scheme: no need to declare it"
        assert len(reason) > 40


def test_select_and_materialize(real, tmp_path):
    assert MC.select(real, None) == real
    assert [m.id for m in MC.select(real, ["drop-lock/expand/lk"])] == ["drop-lock/expand/lk"]
    with pytest.raises(ValueError, match="unknown mutant"):
        MC.select(real, ["nope"])
    m = MC.select(real, ["drop-lock/expand/lk"])[0]
    root = MU.materialize(m, tmp_path / "tree")
    assert open(os.path.join(root, "harness/zone.py")).read() == m.source
    assert os.path.exists(os.path.join(root, "workers/allocator.py"))
    from harness.jitcache import key
    assert key(root) != key(ROOT)       # its own kernel cache


# ---------------------------------------------------------------- the campaign, scripted

def scripted_engine(kills, interrupt_after=None):
    """An engine factory whose trials are scripted: a trial of mutant id `m` is killed by
    `kills[m]` = (detector, ttd) or is clean; KeyboardInterrupt after N trials."""
    ran = []

    def factory(on_record, on_start=None):
        class Engine:
            def run(self, trials):
                for t in trials:
                    if interrupt_after is not None and len(ran) >= interrupt_after:
                        raise KeyboardInterrupt
                    ran.append(t.id)
                    hit = kills.get(t.cell)
                    result = {"verdict": "VIOLATIONS" if hit else "CLEAN",
                              "detection_s": {hit[0]: hit[1]} if hit else {},
                              "problems": [f"{hit[0]}: found"] if hit else [],
                              "totals": {"ops": 10}, "command": "python -m harness stress"}
                    on_record({"id": t.id, "status": T.VIOLATIONS if hit else T.CLEAN,
                               "result": result, "command": t.repro(), "elapsed_s": 1.0})
                return []
        return Engine()
    factory.ran = ran
    return factory


@pytest.fixture
def cheap_compile(monkeypatch):
    monkeypatch.setattr(MC, "COMPILE_CODE", "print(0)")


def template():
    return RunConfig(threads=2, reclaimers=1, seconds=1.0, seed=7, pages=16384, chaos=0.02,
                     check_ms=50, stall_s=2.0)


def test_campaign_kill_matrix_and_survivors(real, cheap_compile, tmp_path):
    chosen = MC.select(real, ["drop-lock/free_block/blk", "early-unlock/alloc_block/blk",
                              "drop-recheck/alloc_block/alk", "drop-lock/alloc_block/zone",
                              "drop-lock/capture_finish/alk"])
    engine = scripted_engine({"drop-lock/free_block/blk": ("ownership", 0.25),
                              "drop-lock/alloc_block/zone": ("invariants", 1.5)})
    saved = []
    camp = MC.Campaign(chosen, template(), 2, engine, 2, str(tmp_path / "work"),
                       print, saved.append, 1)
    out = camp.run()
    s = out["summary"]
    assert s["run"] == 4 and s["killed"] == 2 and s["kill_rate"] == 0.5
    assert s["median_ttd_s"] == pytest.approx(0.875) and s["p90_ttd_s"] == 1.5
    assert s["no_scheme"] == 1                          # capture_finish/alk: a fault seam
    assert s["gaps"] == ["drop-recheck/alloc_block/alk"]
    assert s["equivalent"] == 1                         # early-unlock/alloc_block/blk
    by = {e["id"]: e for e in out["mutants"]}
    assert by["drop-lock/free_block/blk"]["runs"]["fine"]["killed_by"] == "ownership"
    assert len(by["drop-lock/free_block/blk"]["runs"]["fine"]["trials"]) == 1   # stopped
    assert len(by["drop-recheck/alloc_block/alk"]["runs"]["fine"]["trials"]) == 2
    assert list(by["drop-lock/alloc_block/zone"]["runs"]) == ["zone"]
    assert by["early-unlock/alloc_block/blk"]["classification"].startswith("equivalent:")
    assert by["drop-recheck/alloc_block/alk"]["classification"].startswith("GAP")
    assert by["drop-lock/free_block/blk"]["compile_s"] is not None
    assert MC.exit_status(out) == 1
    assert len(saved) == 3                              # control, then each batch of two
    assert os.path.isdir(tmp_path / "work" / "drop-lock_free_block_blk" / "src")   # kept
    text = MC.render(out)
    assert "| `drop-lock/free_block/blk` | drop-lock | free_block |" in text
    assert "2 threads (3 threads, 2 reclaimers in odd trials)," in text
    assert "GAP" in text and "FINDING: real gaps" in text


def test_campaign_interrupted_keeps_finished_mutants(real, cheap_compile, tmp_path):
    chosen = MC.select(real, ["drop-lock/free_block/blk", "drop-lock/expand/lk",
                              "drop-lock/alloc_block/alk#1"])
    engine = scripted_engine({"drop-lock/free_block/blk": ("ownership", 0.1),
                              "drop-lock/expand/lk": ("poison", 0.2)}, interrupt_after=4)
    camp = MC.Campaign(chosen, template(), 1, engine, 2, None, print, lambda o: None, 1)
    out = camp.run()
    assert out["interrupted"] and MC.exit_status(out) == 130
    status = {e["id"]: e["status"] for e in out["mutants"]}
    # control (2 trials), then the first batch of two; the second batch is interrupted
    assert status == {"drop-lock/free_block/blk": "killed", "drop-lock/expand/lk": "not-run",
                      "drop-lock/alloc_block/alk#1": "survived"}
    assert out["summary"]["not_run"] == 1 and out["summary"]["run"] == 2
    assert not os.path.exists(camp.work)               # a temporary work folder is removed


def test_saved_result_loads_and_reports(real, cheap_compile, tmp_path, capsys):
    chosen = MC.select(real, ["drop-lock/expand/lk"])
    camp = MC.Campaign(chosen, template(), 1, scripted_engine({"drop-lock/expand/lk":
                                                               ("poison", 0.2)}),
                       1, None, print, lambda o: None, 1)
    path = MC.claim(str(tmp_path), camp.finish(0.0))
    camp.save = MC.saver(path)
    out = camp.run()
    camp.save(out)
    assert load(path)["summary"]["killed"] == 1
    assert main(["report", path]) == 0
    assert "drop-lock/expand/lk" in capsys.readouterr().out
    assert os.path.exists(path[:-5] + ".md")


# ---------------------------------------------------------------- the command line

@pytest.mark.parametrize("argv,word", [
    (["mutants", "--only", "nope"], "unknown mutant"),
    (["mutants", "--diff"], "--diff"),
    (["mutants", "--budget", "nan"], "--budget"),
    (["mutants", "--trials", "0"], "--trials"),
    (["mutants", "--compile-jobs", "x"], "--compile-jobs"),
    (["mutants", "--pages", "1000", "--only", "drop-lock/expand/lk"], "--pages"),
    (["mutants", "--scheduler", "tcp://127.0.0.1:1"], "--work-dir"),
])
def test_bad_input_is_one_line(argv, word, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("harness: error: ") and word in err[0]


def test_list(capsys):
    assert main(["mutants", "--list"]) == 0
    out = capsys.readouterr().out
    assert f"{sum(REAL_COUNTS.values())} mutants: drop-lock 20" in out
    assert main(["mutants", "--list", "--diff", "--only", "swap-locks/alloc_block/blk+alk"]) == 0
    out = capsys.readouterr().out
    assert "+++ b/harness/zone.py" in out and out.count("\n-") >= 2


def test_bad_report_is_one_line(tmp_path, capsys):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps({"schema": "buddy-stress-mutants", "version": 2, "config": {},
                               "control": {}, "mutants": [1], "summary": {}, "machine": {}}))
    assert main(["report", str(bad)]) == 2
    assert "malformed" in capsys.readouterr().err


# ---------------------------------------------------------------- one real mutant

@pytest.mark.cold_compile
@pytest.mark.timeout(1500)
def test_real_mutant_is_compiled_and_killed(tmp_path):
    """The free path without its block lock, compiled in its own cache, dies under stress."""
    chosen = MC.select(MU.generate(), ["drop-lock/free_block/blk"])
    executor, slots = T.local_executor()
    try:
        camp = MC.Campaign(chosen, dataclass_template(), 2,
                           lambda rec, on_start=None: T.Engine(executor, slots, rec), 1,
                           str(tmp_path), print, lambda o: None, slots)
        out = camp.run()
    finally:
        executor.shutdown()
    entry = out["mutants"][0]
    assert entry["compile_s"] > 1, entry
    assert entry["status"] == "killed", entry
    assert entry["runs"]["fine"]["killed_by"] in ("ownership", "poison", "invariants",
                                                  "witness", "lockdep"), entry
    assert not out["control"]["fine"]["killed"]


def dataclass_template():
    return RunConfig(threads=2, reclaimers=1, seconds=5.0, seed=1, pages=16384, chaos=0.02,
                     check_ms=50, stall_s=2.0)


def test_run_order_interleaves_operators_and_keeps_everything(real):
    pairs = [(m, {}) for m in real if m.schemes]
    order = [m for m, _ in MC.run_order(pairs)]
    assert sorted(m.id for m in order) == sorted(m.id for m, _ in pairs)
    assert [m.operator for m in order[:4]] == list(MU.OPERATORS)
    first_equivalent = next(i for i, m in enumerate(order) if m.id in EQUIVALENT)
    assert all(m.id in EQUIVALENT for m in order[first_equivalent:])


def test_regrade_reads_a_saved_campaign_with_the_current_table(real, cheap_compile):
    chosen = MC.select(real, ["early-unlock/alloc_block/blk", "drop-lock/expand/lk"])
    camp = MC.Campaign(chosen, template(), 1, scripted_engine({}), 2, None, print,
                       lambda o: None, 1)
    out = camp.run()
    assert out["summary"]["gaps"] == ["drop-lock/expand/lk"]
    saved = json.loads(json.dumps(out))
    for e in saved["mutants"]:          # as if saved before the declaration existed
        e.pop("declared_equivalent", None)
    again = MC.regrade(saved)
    assert again["summary"] == out["summary"]
    assert saved["mutants"][0].get("declared_equivalent") is None     # input unchanged


def test_mutants_are_built_from_the_snapshot_taken_at_the_start(real, cheap_compile, tmp_path,
                                                                monkeypatch):
    """Edits to the working tree during a campaign (hours) never mix into its mutants."""
    live = tmp_path / "live"
    MU.snapshot(live)
    monkeypatch.setattr(MU, "ROOT", live)
    chosen = MC.select(real, ["drop-lock/expand/lk"])
    camp = MC.Campaign(chosen, template(), 1, scripted_engine({}), 1, str(tmp_path / "w"),
                       print, lambda o: None, 1)
    real_snapshot = MU.snapshot

    def snapshot_then_edit(dest, root=None):
        out = real_snapshot(dest, root)
        (live / "workers" / "allocator.py").write_text("# edited meanwhile\n")
        return out
    monkeypatch.setattr(MU, "snapshot", snapshot_then_edit)
    out = camp.run()
    assert out["mutants"][0]["status"] == "survived"
    tree = tmp_path / "w" / "drop-lock_expand_lk" / "src"
    assert (tree / "harness" / "zone.py").read_text() == chosen[0].source
    assert (tree / "workers" / "allocator.py").read_text() == \
        open(os.path.join(ROOT, "workers", "allocator.py")).read()


def test_even_trials_run_without_per_cpu_lists_odd_ones_one_thread_more_and_two_reclaimers():
    camp = MC.Campaign([], template(), 2, None, 1, None, print, lambda out: None, 1)
    even, odd = camp._cfg("fine", 0), camp._cfg("zone", 1)
    assert (even.threads, even.reclaimers, odd.threads, odd.reclaimers) == (2, 1, 3, 2)
    assert (even.pcp, odd.pcp) == (False, True)
    assert (even.seed, odd.seed, odd.locking) == (7, 8, "zone")
    assert camp.out["config"]["odd_trials"] == {"threads": 3, "reclaimers": 2}
