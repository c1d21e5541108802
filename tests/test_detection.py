"""Detection power beyond the catalogue: lost wakeups, the mutual-exclusion witness,
recursive locking, the redzone under index -1, the bounds-checked build, and the
controlled (PCT) scheduler."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from harness import hierarchy as H
from harness import layout as L
from harness import sched as S
from harness import zone as Z
from harness.config import PRESETS, RunConfig, from_args
from harness.lockverbs import block_lock, unlock
from harness.locks import L_OWNER, lock_acquire
from harness.witness import describe, thread_witness

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def zone_and_threads(pages=2048, threads=8):
    return L.new_zone_table(pages, "fine", 4), L.new_thread_table(threads)


def name_of(z):
    from harness.runner import lock_name
    sec = L.Sections(z)
    return lambda row: lock_name(sec, row)


# ---------------------------------------------------------------- lost wakeup

@pytest.mark.timeout(120)
def test_a_lost_wakeup_is_a_named_hang(warmed):
    from harness.runner import run_stress
    r = run_stress(RunConfig(threads=2, reclaimers=1, seconds=15, pages=16384, seed=1,
                             fault="unlock-no-wake", stall_s=30.0, check_ms=50), warm_s=0.0)
    assert r["verdict"] == "HANG", r["problems"]
    assert r["detection_s"]["watchdog"] < 10      # found asleep on a free lock, not by stalling
    lost = [e for e in r["wait_for"]["edges"] if e.get("lost_wakeup")]
    assert lost and lost[0]["held_by"] == -1
    text = f"thread {lost[0]['thread']} waits for {lost[0]['waits_for_lock']}, held by nobody:" \
           " lost wakeup"
    assert any(text in p for p in r["problems"]), r["problems"]
    assert r["duration_s"] < 10 and r["unjoined_threads"] == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize("taken_meanwhile", [False, True])
def test_a_sleeper_on_a_free_lock_is_a_lost_wakeup_only_if_nobody_takes_the_lock(
        taken_meanwhile):
    """Right after a release the woken waiter may not have run yet (a busy machine), so
    one look at "asleep on a free lock" proves nothing: the lock must stay untouched."""
    from harness.runner import LOST_WAKEUP_S, Run
    run = Run(RunConfig(threads=2, reclaimers=1, pages=1 << 12, seconds=1))
    row = block_lock(run.z, 1024)
    run.t[0, L.T_STATE, L.T_WAITING] = row + 1          # thread 0 asleep on block[1], free
    if taken_meanwhile:                                 # ... while thread 1 takes it
        threading.Timer(LOST_WAKEUP_S / 4, lambda: run.z.__setitem__(
            (row, L.L_ACQ), run.z[row, L.L_ACQ] + 1)).start()
    (edge,) = run.wait_for_graph()["edges"]
    assert edge["waits_for_lock"] == "block[1]" and edge["held_by"] == -1
    assert edge["lost_wakeup"] is (not taken_meanwhile)


@pytest.mark.parametrize("taken_meanwhile", [False, True])
def test_the_watchdog_ends_a_run_once_a_sleeper_stays_on_a_free_untaken_lock(taken_meanwhile):
    from harness.runner import ASLEEP_ON_FREE_S, Run
    run = Run(RunConfig(threads=2, reclaimers=1, pages=1 << 12, seconds=1))
    row = block_lock(run.z, 1024)
    run.t[1, L.T_STATE, L.T_WAITING] = row + 1          # thread 1 asleep on block[1], free
    assert run.asleep_on_free_locks(100.0) == []
    if taken_meanwhile:
        run.z[row, L.L_ACQ] += 1
    assert run.asleep_on_free_locks(100.0 + ASLEEP_ON_FREE_S / 2) == []
    expected = [] if taken_meanwhile else [1]           # taken: the clock started again
    assert run.asleep_on_free_locks(100.0 + ASLEEP_ON_FREE_S) == expected
    run.z[row, L_OWNER] = 1                             # held: a plain wait, not a lost wakeup
    assert run.asleep_on_free_locks(100.0 + 2 * ASLEEP_ON_FREE_S) == []


# ---------------------------------------------------------------- the witness

def test_the_witness_names_the_lock_and_both_threads_when_exclusion_is_lost():
    z, t = zone_and_threads()
    L.Sections(z).flags[L.F_STOP_ON_VIOLATION] = 1
    pfn = 1024
    lk = block_lock(z, pfn)
    z[lk, L_OWNER] = 7 + 1                  # thread 7 recorded as owner, yet the word is free
    assert Z.alloc_block(z, t, 3, 0) >= 0   # thread 3 takes block[1] (the head is pfn 1024)
    w = thread_witness(t, 3)
    assert w["kind"] == "mutual_exclusion_lost" and w["other"] == 7
    text = describe(w, name_of(z))
    assert text == ("mutual exclusion lost on block[1]: thread 3 acquired it while thread 7"
                    " was recorded as its owner")
    assert z[L.ctl_row_py(z), L.CTL_STOP] == 1      # the run stops at once


def test_the_witness_names_a_release_by_a_thread_that_is_not_the_owner():
    z, t = zone_and_threads()
    lk = block_lock(z, 0)
    assert lock_acquire(z, lk, 5, t)
    unlock(z, t, 2, lk)                     # thread 2 drops thread 5's lock
    w = thread_witness(t, 2)
    assert describe(w, name_of(z)) == "thread 2 released block[0], which was held by thread 5"
    unlock(z, t, 4, lk)
    assert describe(thread_witness(t, 4), name_of(z)) == \
        "thread 4 released block[0], which was held by nobody"


def test_recursive_locking_is_named_so_and_does_not_wait():
    from harness import lockdep
    z, t = zone_and_threads()
    L.Sections(z).flags[L.F_LOCKDEP] = 1
    pfn = Z.alloc_block(z, t, 0, 0)
    assert lock_acquire(z, block_lock(z, pfn), 0, t)      # thread 0 already holds the block
    assert Z.free_block(z, t, 0, pfn, 0, -1) == Z.ABORTED  # returns: it did not wait for itself
    w = thread_witness(t, 0)
    assert w["kind"] == "recursive_locking"
    from harness.hierarchy import SITES
    text = describe(w, name_of(z), SITES[w["site"]])
    assert text.startswith(f"recursive locking: thread 0 takes block[{pfn >> L.TOP}] at ")
    assert text.endswith(", which it already holds")
    kinds = [p["kind"] for p in lockdep.analyze(t, "fine")["problems"]]
    assert "same-class-nesting" not in kinds


def test_clean_operations_leave_the_witness_silent():
    z, t = zone_and_threads()
    pfns = [Z.alloc_block(z, t, i % 8, o) for i, o in enumerate([0, 3, 5, 9, 1, 0])]
    for i, (p, o) in enumerate(zip(pfns, [0, 3, 5, 9, 1, 0])):
        assert Z.free_block(z, t, (i + 1) % 8, p, o, -1) == 0
    assert all(thread_witness(t, i) is None for i in range(8))


def test_a_list_changed_without_its_lock_names_the_list_the_lock_and_its_holder():
    """With lockdep on, unlink/push_head assert that the caller holds the list's lock:
    the area lock (fine scheme), the zone lock (zone scheme), a per-CPU list's pcp lock."""
    from harness.lockverbs import list_lock
    for scheme, lock in (("fine", "area[0]"), ("zone", "zone")):
        z, t = L.new_zone_table(2048, scheme, 4, cpus=2), L.new_thread_table(8)
        L.Sections(z).flags[L.F_LOCKDEP] = 1
        pfn = Z.alloc_block(z, t, 1, 0)
        Z.push_head(z, t, 1, 0, pfn)                    # thread 1 holds no lock
        assert describe(thread_witness(t, 1), name_of(z)) == \
            f"thread 1 changed list 0 without holding {lock}, which guards it (free)"
        assert lock_acquire(z, list_lock(z, 0), 5, t)
        Z.unlink(z, t, 2, 0, pfn)                       # thread 2, while thread 5 holds it
        assert describe(thread_witness(t, 2), name_of(z)) == \
            f"thread 2 changed list 0 without holding {lock}, which guards it (held by thread 5)"
        Z.push_head(z, t, 5, 0, pfn)                    # the holder: silent
        assert thread_witness(t, 5) is None
        first_pcp = int(L.Sections(z).pcp[L.PCP_LIST0])
        assert name_of(z)(list_lock(z, first_pcp + L.PCP_ORDERS + 1)) == "pcp[1]"


@pytest.mark.parametrize("fault", [False, True])
def test_a_merge_from_a_closed_capture_list_is_named(fault):
    """A captured block whose list its owner has CLOSED belongs to the finishing owner:
    a merge re-checks under the capture lock and leaves it; the seeded fault skips the
    re-check, and lockdep's list assertion names the list, its lock and its owner."""
    from harness import faults as F
    z, t = zone_and_threads()
    sec = L.Sections(z)
    sec.flags[L.F_LOCKDEP] = 1
    sec.flags[L.F_FAULT] = F.FAULT_MERGE_CLOSED_CAPTURE if fault else F.NO_FAULT
    lst = Z.capture_start(z, t, 0, 5)
    first, buddy = Z.alloc_block(z, t, 0, 4), Z.alloc_block(z, t, 1, 4)
    assert buddy == first ^ 16
    Z.free_block(z, t, 0, first, 4, lst)                # captured on thread 0's list
    row = Z.lrow(z, lst)
    z[row, L.LS_STATE] = z[row, L.LS_STATE] & ~L.PHASE_MASK | L.CLOSED   # being finished
    Z.free_block(z, t, 1, buddy, 4, -1)
    if not fault:
        assert thread_witness(t, 1) is None
        assert z[first, L.PG_STATE] == L.CAPTURED and z[buddy, L.PG_STATE] == L.FREE
        return
    assert describe(thread_witness(t, 1), name_of(z)) == (
        f"thread 1 changed capture list {lst} while it is not open (closed by its finishing"
        f" owner, or unused), under capture[0]; its last owner is thread 0")


def test_a_capture_lists_page_counts_change_only_under_its_lock():
    """The owner reads a capture list's page counts when it closes the list (the balance
    check), so add_pages asserts the list's lock, as push_head does."""
    z, t = zone_and_threads()
    L.Sections(z).flags[L.F_LOCKDEP] = 1
    lst = Z.capture_start(z, t, 0, 5)
    Z.add_pages(z, t, 1, lst, L.LS_MERGED, 4)           # thread 1 holds no lock
    assert describe(thread_witness(t, 1), name_of(z)) == \
        f"thread 1 changed list {lst} without holding capture[0], which guards it (free)"
    from harness.lockverbs import list_lock
    assert lock_acquire(z, list_lock(z, lst), 2, t)
    Z.add_pages(z, t, 2, lst, L.LS_MERGED, 4)           # the holder: silent
    assert thread_witness(t, 2) is None and z[Z.lrow(z, lst), L.LS_MERGED] == 8


def test_a_merge_or_split_without_the_block_lock_names_the_pfn_and_the_lock():
    """With lockdep on, merge_and_place and expand assert that the caller holds the block
    lock of the pages they change: a free that skips it is named on its first merge."""
    from harness import faults as F
    z, t = zone_and_threads()
    sec = L.Sections(z)
    sec.flags[L.F_LOCKDEP] = 1
    pfn = Z.alloc_block(z, t, 1, 3)
    assert thread_witness(t, 1) is None                 # expand under the block lock
    sec.flags[L.F_FAULT] = F.FAULT_FREE_NO_BLOCK_LOCK
    assert Z.free_block(z, t, 1, pfn, 3, -1) == 0
    assert describe(thread_witness(t, 1), name_of(z)) == (
        f"thread 1 changed the pages of pfn {pfn} without holding block[{pfn >> 10}], which guards"
        f" them (free)")


@pytest.mark.parametrize("scheme", ["fine", "zone"])
def test_clean_operations_with_lockdep_leave_the_witness_silent(scheme):
    """Allocation, frees into a capture list and out of it, per-CPU lists, a drain,
    an isolated range."""
    from harness.api import Zone
    zone = Zone(4096, locking=scheme, lockdep=True, pcp=True, cpus=2)
    c = zone.capture_start(5)
    blocks = [(zone.alloc(o, cpu=i % 2), o, i % 2) for i, o in enumerate([0, 3, 5, 9, 1, 0, 2])]
    for p, o, _ in blocks[2:4]:
        zone.free(p, o, capture=c)
    zone.capture_finish(c)
    for p, o, cpu in blocks[:2] + blocks[4:]:
        zone.free(p, o, cpu=cpu)
    zone.drain_pages()
    inside = zone.alloc(5)                          # migration's isolation lists too
    iso = zone.isolate(inside & ~63, 6)
    assert iso is not None
    zone.free(inside, 5)                            # held on the range's list
    whole = zone.end_isolation(iso)                 # the range's block, or freed normally
    if whole is not None:
        zone.free(whole, 6)
    assert all(thread_witness(zone.threads, i) is None for i in range(2))


# ---------------------------------------------------------------- index -1

def test_a_write_at_index_minus_one_changes_no_flag():
    z, _ = zone_and_threads()
    sec = L.Sections(z)
    sec.flags[:] = [1, 0, 3, 0, 1, 1, 1, 0]
    before = (sec.flags.copy(), sec.meta.copy(), sec.ctl.copy(), sec.sched.copy())
    z[-1, :] = 12345                        # e.g. a page's NEXT (-1, "none") used as a pfn
    after = (sec.flags, sec.meta, sec.ctl, sec.sched)
    assert all((a == b).all() for a, b in zip(before, after))
    assert (sec.redzone == 12345).all()     # it lands in the redzone, which the run reports


def test_a_stray_write_in_the_redzone_is_reported():
    from harness.verdict import findings
    result = {"worker_violations": [], "invariant_violations": [], "end": {}, "lockdep": None,
              "outcome": "completed", "redzone": [3]}
    assert any(k == ("redzone",) for k, _ in findings(result))


# ---------------------------------------------------------------- the bounds-checked build

def test_kernel_names_are_read_from_mangled_names():
    from harness.boundscheck import kernel_name
    assert kernel_name("_ZN7harness4zone6unlinkB2v1E") == "harness.zone.unlink"
    assert kernel_name("_ZN8__main__5innerB2v3E5ArrayIxLi2E") == "__main__.inner"


@pytest.mark.timeout(120)
def test_the_bounds_checked_build_names_the_kernel(tmp_path):
    # A tiny kernel in a bounds-checked process: the IndexError names it and the axis.
    code = ("from harness import jitcache\n"            # installs the naming bounds check
            "import numpy as np\nfrom numba import njit\n"
            "@njit(nogil=True, _nrt=False)\ndef stray(a, i):\n    a[i, 0] = 1\n"
            "try:\n    stray(np.zeros((4, 8), np.int64), 9)\n"
            "except IndexError as e:\n    print(e)\n")
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", HARNESS_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=100)
    assert out.stdout.strip() == "index out of bounds on axis 0 in __main__.stray", out.stderr


@pytest.mark.cold_compile
@pytest.mark.timeout(900)
def test_a_stray_index_in_an_allocator_kernel_is_named(tmp_path):
    # A free list whose head points past the zone: alloc_block's unlink indexes out of range.
    code = ("from harness.api import Zone\nfrom harness import layout as L\n"
            "z = Zone(pages=1024)\nlists = z.sections.lists\n"
            "lists[0, L.LS_HEAD], lists[0, L.LS_COUNT] = 1 << 20, 1\n"
            "try:\n    z.alloc(0)\nexcept IndexError as e:\n    print(e)\n")
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=880)
    # the first stray index: the block lock row of that pfn, whose word the trylock CASes
    # (the atomics are bounds-checked too)
    assert out.stdout.strip() == "index out of bounds on axis 0 in harness.locks.lock_try", \
        out.stderr


# ---------------------------------------------------------------- the PCT scheduler

_LOOP = None


def pct_loop():
    """A test kernel: n scheduling points, each followed by an entry in a shared log."""
    global _LOOP
    if _LOOP is None:
        from numba import njit
        from harness.atomics import fetch_add, store_release
        from harness.chaos import chaos

        @njit(nogil=True, _nrt=False)
        def loop(z, t, me, n, log, at, sites):
            for k in range(n):
                chaos(z, t, me, sites[k])
                log[fetch_add(at, 0, 1)] = me
            store_release(t, (me, L.T_SCHED, L.TS_STATE), S.DONE)
        _LOOP = loop
    return _LOOP


def run_pct(depth, steps, seed, n=400, mode=L.SCHED_PCT, sites=None):
    """Two threads through `n` points each (at `sites[k]`, default site 0); the log's runs."""
    z, t = L.new_zone_table(1024, "fine", 4), L.new_thread_table(2)
    sec = L.Sections(z)
    sec.sched[[L.SC_MODE, L.SC_DEPTH, L.SC_STEPS, L.SC_SEED]] = [mode, depth, steps, seed]
    sites = np.zeros(n, np.int64) if sites is None else np.asarray(sites, np.int64)
    # Both started, with their round-0 priorities: nobody runs ahead while the other thread
    # is still being created.
    t[:, L.T_SCHED, L.TS_STATE] = S.RUNNING
    t[:, L.T_SCHED, L.TS_PRIO] = [S.base_priority(seed, 0, i, depth) for i in range(2)]
    log, at = np.full(2 * n, -1, np.int64), np.zeros(1, np.int64)
    loop = pct_loop()
    ths = [threading.Thread(target=loop, args=(z, t, i, n, log, at, sites)) for i in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    assert not any(th.is_alive() for th in ths)
    assert t[:, L.T_SCHED, L.TS_TIMEOUTS].sum() == 0
    runs = [[int(log[0]), 1]]
    for x in log[1:]:
        if x == runs[-1][0]:
            runs[-1][1] += 1
        else:
            runs.append([int(x), 1])
    return t, runs


@pytest.mark.timeout(120)
def test_the_scheduler_serializes_threads_at_its_points():
    hi = int(np.argmax([S.base_priority(5, 0, i, 1) for i in range(2)]))
    t, runs = run_pct(depth=1, steps=1 << 30, seed=5)
    # the highest-priority thread passes all its points before the other passes one
    assert runs == [[hi, 400], [1 - hi, 400]]
    assert t[:, L.T_SCHED, L.TS_CHANGES].sum() == 0


@pytest.mark.timeout(120)
def test_the_scheduler_changes_priority_at_its_change_points():
    steps = 800                                   # one round: every point of both threads
    switched = 0
    for seed in range(1, 7):
        hi = int(np.argmax([S.base_priority(seed, 0, i, 2) for i in range(2)]))
        c = S.change_point(seed, 0, 0, steps)
        t, runs = run_pct(depth=2, steps=steps, seed=seed)
        assert t[:, L.T_SCHED, L.TS_CHANGES].sum() == 1      # depth 2: one change a round
        if t[hi, L.T_SCHED, L.TS_CHANGES]:
            # hi drops below the other at global point c: the other runs to its end, then hi
            assert [r[0] for r in runs] == [hi, 1 - hi, hi] or c <= 1, runs
            assert runs[0][1] in (c - 1, c), (runs, c)
            switched += 1
        else:
            assert runs == [[hi, 400], [1 - hi, 400]]
    assert switched >= 3


@pytest.mark.timeout(120)
def test_pct_sites_changes_priority_at_the_first_point_of_the_rounds_site():
    """pct-sites: change 0 of the round happens at the first point of site change_site(...)
    that any thread reaches (here only each thread's point 200 is at that site), once;
    with no point at that site there is no change at all."""
    for seed in range(1, 5):
        hi = int(np.argmax([S.base_priority(seed, 0, i, 2) for i in range(2)]))
        site = S.change_site(seed, 0, 0)
        other = (site + 1) % S.N_POINTS
        sites = [site if k == 200 else other for k in range(400)]
        t, runs = run_pct(2, 1 << 30, seed, mode=L.SCHED_PCT_SITES, sites=sites)
        assert t[:, L.T_SCHED, L.TS_CHANGES].tolist() == [int(i == hi) for i in range(2)]
        # hi drops at its point 200: the other passes all its points, then hi the rest
        assert [r[0] for r in runs] == [hi, 1 - hi, hi] and runs[0][1] == 200, runs
        t, runs = run_pct(2, 1 << 30, seed, mode=L.SCHED_PCT_SITES, sites=[other] * 400)
        assert t[:, L.T_SCHED, L.TS_CHANGES].sum() == 0 and runs == [[hi, 400], [1 - hi, 400]]
    assert len(S.POINTS) == S.N_POINTS == len(set(S.POINTS))
    assert S.POINTS[H.S_PLACE_CAPTURE].endswith(H.SITES[H.S_PLACE_CAPTURE])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("schedule", ["pct", "pct-sites"])
def test_a_pct_run_is_clean_and_its_points_rarely_give_up_waiting(warmed, schedule):
    from harness.runner import run_stress
    r = run_stress(RunConfig(threads=3, reclaimers=1, seconds=2, pages=16384, seed=2,
                             schedule=schedule, pct_depth=3, pct_steps=500), warm_s=0.0)
    assert r["verdict"] == "CLEAN", r["problems"]
    s = r["schedule"]
    assert s["points"] > 1000 and s["rounds"] >= 2 and s["waits"] > 0
    if schedule == "pct":
        assert s["changes"] >= s["rounds"]        # two changes a round (depth 3), most taken
    else:                                         # only in rounds that reach a chosen site
        assert 0 < s["changes"] <= 2 * s["rounds"]
    # a point gives up waiting after PATIENCE_NS (a loaded machine can deschedule the
    # thread it waits for that long): rare, never a hang
    assert s["timeouts"] <= max(5, s["waits"] // 20), s


# ---------------------------------------------------------------- config

def test_lockdep_is_on_by_default_and_presets_fill_unset_options():
    from harness.cli import build_parser
    assert RunConfig().lockdep is True
    parse = build_parser().parse_args
    assert from_args(parse(["stress", "--no-lockdep"])).lockdep is False
    cfg = from_args(parse(["stress", "--preset", "reuse", "--threads", "5"]))
    assert cfg.threads == 5 and cfg.reclaimers == PRESETS["reuse"]["reclaimers"]
    assert cfg.capture_lists == PRESETS["reuse"]["capture_lists"] and cfg.pages == 4096

