"""Per-CPU lists (harness.pcp): the real Zone in both schemes in lockstep with
tests/model.py's ModelPcpZone; the invariants and the ownership detector on PCP
heads; remote drains racing owners on real threads; the options' checks."""

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st
from numba import njit

from harness import Zone
from harness import layout as L
from harness import pcp as P
from harness.config import ConfigError, RunConfig
from harness.runner import run_stress
from model import ModelPcpZone
from workers import detectors as D
from workers.claims import owner_word

SCHEMES = ("zone", "fine")


def op_lists():
    op = st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, 10), st.integers(0, 2)),
        st.tuples(st.just("alloc"), st.integers(0, 3), st.integers(0, 2)),
        st.tuples(st.just("free"), st.integers(0, 1 << 16), st.integers(0, 2)),
        st.tuples(st.just("badfree"), st.integers(0, 4095), st.integers(0, 3)),
        st.tuples(st.just("drain"), st.integers(-1, 2), st.just(0)),
        st.tuples(st.just("capture"), st.integers(4, 10), st.integers(0, 1 << 16)),
    )
    return st.lists(op, min_size=1, max_size=120)


def outcome(call):
    try:
        v = call()
        return ("ok", None if v is None else int(v))
    except ValueError:
        return ("ValueError",)


@settings(max_examples=60)
@given(ops=op_lists(), batch=st.integers(1, 5), extra=st.integers(0, 6))
def test_zone_with_pcp_follows_the_model_in_both_schemes(ops, batch, extra):
    high = batch + extra
    model = ModelPcpZone(4096, 3, batch, high)
    zones = {s: Zone(4096, s, pcp=True, cpus=3, pcp_batch=batch, pcp_high=high)
             for s in SCHEMES}
    held = []                                   # (pfn, order) allocated in the model
    for step, (kind, a, b) in enumerate(ops):
        note(f"step {step}: {kind} {a} {b}")
        if kind == "alloc":
            calls = {"model": lambda z: z.alloc(a, cpu=b)}
        elif kind == "free":
            if not held:
                continue
            pfn, order = held.pop(a % len(held))
            calls = {"model": lambda z: z.free(pfn, order, cpu=b)}
        elif kind == "badfree":                 # a free of something not allocated that way
            pfn = a - a % (1 << b)
            if model.allocated.get(pfn) == b:
                continue
            calls = {"model": lambda z: z.free(pfn, b, cpu=0)}
        elif kind == "drain":
            cpu = None if a < 0 else a
            calls = {"model": lambda z: z.drain(cpu) if isinstance(z, ModelPcpZone)
                     else z.drain_pages(cpu)}
        else:                                   # a reclaimer's capture of held small blocks
            mine = [h for h in held if h[1] <= 3][:3]
            for h in mine:
                held.remove(h)

            def calls_capture(z, mine=mine, wanted=a):
                c = z.capture_start(wanted)
                for pfn, order in mine:
                    z.free(pfn, order, capture=c)
                return z.capture_finish(c)
            calls = {"model": calls_capture}
        fn = calls["model"]
        want = outcome(lambda: fn(model))
        for s, z in zones.items():
            got = outcome(lambda: fn(z))
            assert got == want, (s, step, kind, a, b)
        if kind == "alloc" and want[0] == "ok" and want[1] is not None:
            held.append((want[1], a))
        if kind == "capture" and want[1] is not None:
            held.append((want[1], a))
        for s, z in zones.items():
            assert z.free_counts() == model.free_counts(), (s, step)
            for cpu in range(3):
                for order in range(4):
                    assert z.pcp_list(cpu, order) == model.pcp_list(cpu, order), (s, cpu, order)
                assert z.pcp_counts(cpu) == [len(x) for x in model.pcp[cpu]]
    for s, z in zones.items():
        assert z.check() == [], s
        for order in range(L.NAREAS):
            assert z.free_list(order) == model.free_list(order), (s, order)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_refill_spill_and_drain_by_hand(scheme):
    z = Zone(4096, scheme, pcp=True, cpus=2, pcp_batch=3, pcp_high=4)
    first = z.alloc(0, cpu=0)
    # A refill of 3 order-0 blocks from the highest order-10 block; the head is served.
    assert first == 3072 and z.pcp_list(0, 0) == [3073, 3074]
    assert z.free_counts()[0] == 1                       # 3075, the rest of the split
    got = [first] + [z.alloc(0, cpu=0) for _ in range(5)]
    for pfn in got:
        z.free(pfn, 0, cpu=1)                           # another CPU's list: no merging
    # 6 frees on CPU 1: at the 5th the list held 5 > high 4 and spilled 3 from the tail.
    assert z.pcp_counts(1) == [3, 0, 0, 0]
    assert z.pcp_list(1, 0) == got[::-1][:3]
    with pytest.raises(ValueError):
        z.free(got[-1], 0, cpu=0)                       # on a per-CPU list: not allocated
    assert z.check() == []
    assert z.drain_pages(1) == 3 and z.pcp_counts(1) == [0, 0, 0, 0]
    assert z.drain_pages() == 0                        # CPU 0's list was used up
    assert z.pcp_counts(0) == [0, 0, 0, 0]
    assert z.free_counts() == [0] * 10 + [4] and z.check() == []


def test_default_zone_has_no_per_cpu_lists_and_section_3_semantics():
    z = Zone(2048)
    pfn = z.alloc(0)
    assert pfn == 1024 and z.free_counts()[:10] == [1] * 10       # expand(), no refill
    z.free(pfn, 0)
    assert z.free_counts() == [0] * 10 + [2]
    with pytest.raises(ValueError):
        z.drain_pages()
    with pytest.raises(ValueError):
        z.alloc(0, cpu=1)


@pytest.mark.parametrize("kw", [dict(pcp_batch=0), dict(pcp_high=-1), dict(cpus=0),
                                dict(pcp_batch=9, pcp_high=8), dict(pcp_batch=True)])
def test_zone_rejects_bad_per_cpu_settings(kw):
    with pytest.raises(ValueError):
        Zone(1024, pcp=True, **kw)


# ---------------------------------------------------------------- detectors on PCP heads

def pcp_zone():
    z = Zone(2048, "fine", pcp=True, cpus=2, pcp_batch=2, pcp_high=4)
    pfn = z.alloc(1, cpu=0)
    z.free(pfn, 1, cpu=0)
    return z, pfn, int(z.sections.pcp[L.PCP_LIST0]) + 1       # CPU 0's order-1 list


def test_invariants_account_for_blocks_on_per_cpu_lists():
    z, pfn, lst = pcp_zone()
    assert z.check() == []
    pages, lists = z.sections.pages, z.sections.lists
    assert pages[pfn, L.PG_STATE] == L.PCP
    lists[lst, L.LS_COUNT] += 1                           # a count updated without its lock
    assert [v["kind"] for v in z.check()] == ["list_count"]
    lists[lst, L.LS_COUNT] -= 1
    pages[pfn, L.PG_ORDER] = 0                            # wrong order for this list
    kinds = [v["kind"] for v in z.check()]
    assert "wrong_order_on_list" in kinds
    pages[pfn, L.PG_ORDER] = 1
    head = int(lists[lst, L.LS_HEAD])
    lists[lst, L.LS_HEAD] = pages[head, L.PG_NEXT]        # a PCP head no list holds
    lists[lst, L.LS_COUNT] -= 1
    pages[int(lists[lst, L.LS_HEAD]), L.PG_PREV] = -1
    v = z.check()
    assert [x["kind"] for x in v] == ["not_on_list"] and v[0]["pfn"] == head
    assert "per-CPU" in v[0]["message"]


def test_a_pcp_block_beside_a_free_buddy_is_not_unmerged():
    z = Zone(1024, "zone", pcp=True, cpus=1, pcp_batch=1, pcp_high=1)
    a = z.alloc(0)                      # refill of 1: buddy 1 stays free on the free list
    z.free(a, 0)
    assert z.pcp_list(0, 0) == [a] and z.free_list(0) == [a ^ 1]
    assert z.check() == []


def test_ownership_reports_a_block_that_leaves_a_per_cpu_list_twice():
    z, pfn, lst = pcp_zone()
    z.sections.flags[L.F_OWNERSHIP] = 1
    z.sections.flags[L.F_STOP_ON_VIOLATION] = 0
    claim, group = P.pcp_claim.py_func(1), pfn >> L.GROUP_SHIFT
    assert z.sections.pages[pfn, L.PG_CLAIM] == 0        # entered before the flag was on
    z.sections.pages[pfn, L.PG_CLAIM] = claim            # as if it had entered with it
    z.sections.groups[group] = 1
    mine = owner_word.py_func(0, 1)
    assert P.pcp_alloc(z.table, z.threads, 0, 1) == pfn   # leaves properly: no finding,
    assert D.thread_violations(z.threads, 0) == []       # and is CPU 0's in place
    assert list(z.sections.pages[pfn:pfn + 2, L.PG_CLAIM]) == [mine, 0]   # the head's
    assert z.sections.groups[group] == 1                 # one claim all along
    z.free(pfn, 1, cpu=0)                                # enters: the list's in place
    assert list(z.sections.pages[pfn:pfn + 2, L.PG_CLAIM]) == [claim, 0]
    assert z.sections.groups[group] == 1
    z.sections.pages[pfn, L.PG_CLAIM] = 0                # someone else took it meanwhile
    assert P.pcp_alloc(z.table, z.threads, 0, 1) == pfn
    v = D.thread_violations(z.threads, 0)
    assert [(x["kind"], x["detector"], x["pfn"]) for x in v] == \
        [("pcp_claim_mismatch", "ownership", pfn)]


@njit(nogil=True, cache=True, _nrt=False)
def claim_checked(z, t, me, pfn, order):
    D.claim_block(z, t, me, pfn, order, D.make_tag(me, 1))


def test_ownership_names_the_other_owner_of_a_block_on_or_freed_onto_a_list():
    z, pfn, lst = pcp_zone()
    z.sections.flags[L.F_OWNERSHIP] = 1
    z.sections.flags[L.F_STOP_ON_VIOLATION] = 0
    claim, group = P.pcp_claim.py_func(1), pfn >> L.GROUP_SHIFT
    z.sections.pages[pfn, L.PG_CLAIM] = claim            # parked, as if the flag was on
    z.sections.groups[group] = 1
    claim_checked(z.table, z.threads, 1, pfn + 1, 0)     # slot 1 is handed its tail page
    v = D.thread_violations(z.threads, 1)
    assert [(x["kind"], x["pfn"], x["page"], x["other_pfn"], x["other_order"]) for x in v] \
        == [("double_allocation", pfn + 1, pfn + 1, pfn, 1)]
    assert v[0]["found"] == D.PCP_OWNER
    assert z.sections.pages[pfn + 1, L.PG_CLAIM] == 0 and z.sections.groups[group] == 1
    assert P.pcp_alloc(z.table, z.threads, 0, 1) == pfn  # the list's claim passes to CPU 0
    assert D.thread_violations(z.threads, 0) == []
    z.sections.pages[pfn, L.PG_CLAIM] = owner_word.py_func(3, 1)  # slot 3's, not 0's
    z.free(pfn, 1, cpu=0)
    v = D.thread_violations(z.threads, 0)
    assert [(x["kind"], x["pfn"], x["expected"], x["found"]) for x in v] == \
        [("free_of_page_not_owned", pfn, 0, 3)]


# ---------------------------------------------------------------- real threads

@pytest.mark.timeout(120)
@pytest.mark.parametrize("scheme", SCHEMES)
def test_remote_drains_race_owners_and_stay_clean(scheme, warmed):
    """Two reclaimers drain every CPU's lists while two allocators use theirs; the
    quiescent checks (every 20 ms) and the final check find nothing; the zone ends fresh."""
    r = run_stress(RunConfig(threads=4, reclaimers=2, seconds=2.0, pages=8192, locking=scheme,
                             pcp_batch=4, pcp_high=8, check_ms=20, seed=3, chaos=0.005),
                   warm_s=warmed)
    assert r["verdict"] == "CLEAN", r["problems"]
    assert r["totals"]["pcp_drained_blocks"] > 0, r["totals"]
    assert r["checks"] >= 5
    assert r["end"]["fresh_after_drain"] is True
    assert r["locks"]["pcp"]["acquisitions"] > r["totals"]["reclaims"]


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("kw, text", [
    (dict(pcp_batch=0), "--pcp-batch must be in 1..65536, got 0"),
    (dict(pcp_high=-4), "--pcp-high must be in 1..65536, got -4"),
    (dict(pcp_batch=40, pcp_high=20), "--pcp-batch (40) cannot exceed --pcp-high (20)"),
    (dict(pcp=False, fault="drain-no-pcp-lock"), "no effect with --no-pcp"),
])
def test_bad_per_cpu_options_are_one_line_errors(kw, text):
    with pytest.raises(ConfigError) as err:
        RunConfig(**kw)
    assert text in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("args", [["--pcp-batch", "0"], ["--pcp-batch", "64", "--pcp-high", "8"],
                                  ["--pcp-high", "x"], ["--no-pcp", "--fault",
                                                        "pcp-count-outside-lock"]])
def test_cli_refuses_bad_per_cpu_options(args, harness_cmd):
    proc = harness_cmd("stress", "--seconds", "1", *args, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
