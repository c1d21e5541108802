"""Bucket signatures, Wilson intervals and the history rules, on synthetic trial records."""

import sqlite3

import pytest

from harness import buckets as B
from harness import history as H


def ev(thread, op, pfn):
    return {"thread": thread, "op": op, "pfn": pfn, "order": 2, "ns": 1000 + pfn}


def violation(this, other, pfn=4096, thread=1):
    return {"detector": "ownership", "kind": "double_allocation", "thread": thread, "pfn": pfn,
            "order": 2, "page": pfn + 1, "found": 0, "ns": 5,
            "race": {"this": ev(thread, this, pfn), "other": ev(1 - thread, other, pfn),
                     "text": "..."}}


def result(**kw):
    base = {"worker_violations": [], "invariant_violations": [], "end": {},
            "lockdep": None, "outcome": "completed", "wait_for": None}
    return {**base, **kw}


def titles(res, **rec):
    return [t for _, t in B.signatures({"status": "violations", "result": res, **rec})]


def test_race_sides_are_sorted_and_numbers_never_enter():
    a = titles(result(worker_violations=[violation("free", "alloc", pfn=8192, thread=0)]))
    b = titles(result(worker_violations=[violation("alloc", "free", pfn=123, thread=1)]))
    assert a == b == ["double_allocation in alloc/free"]
    inv = {"kind": "wrong_state_on_list", "list": 5, "pfn": 13312, "state": "allocated",
           "message": "list 5: block 13312 ...", "detector": "invariants", "epoch": "final"}
    assert titles(result(invariant_violations=[inv])) == \
        ["invariant wrong_state_on_list (state=allocated)"]


def test_lock_cycles_are_rotated_to_one_spelling():
    for cycle in (["capture", "block"], ["block", "capture"]):
        lockdep = {"problems": [{"kind": "circular-dependency", "cycle": cycle}]}
        assert titles(result(lockdep=lockdep)) == ["possible deadlock: block -> capture"]
    wait_for = {"edges": [{"thread": 3, "class": "area", "held_by": 0},
                          {"thread": 0, "class": "block", "held_by": 3}], "cycle": [3, 0]}
    assert titles(result(outcome="hang", wait_for=wait_for)) == ["deadlock: area -> block"]
    no_cycle = {"edges": [{"thread": 0, "class": "block", "held_by": -1}], "cycle": []}
    assert titles(result(outcome="hang", wait_for=no_cycle)) == ["hang: no progress"]


def test_process_endings_are_buckets():
    assert titles(None, status="crash", signal="SIGSEGV") == ["trial crashed: SIGSEGV"]
    assert titles(None, status="timeout")[0].startswith("trial hung past its timeout")


def test_wilson_interval():
    assert B.wilson(0, 0) == (None, None)
    lo, hi = B.wilson(10, 10)
    assert hi == 1.0 and 0.69 < lo < 0.73            # 0.7225 for 10/10
    lo, hi = B.wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)


def rec(tid, cell, status="clean", sigs=(), ops=1.0e6, started=1.0):
    return {"id": tid, "cell": cell, "kind": "cell", "status": status, "command": f"cmd {tid}",
            "signatures": [(s, s) for s in sigs], "allocator_ops_per_s": ops,
            "started": started}


def night(conn, label, records):
    found = B.group(records)
    cmp = H.compare(conn, found, records)
    H.record(conn, {"label": label, "started": 1.0e9}, records, found, cmp["states"], 0)
    return found, cmp


def test_new_then_still_open_then_fixed(tmp_path):
    conn = H.open_history(str(tmp_path / "h.sqlite"))
    bug = [rec("a/1", "a", "violations", ["race x"]), rec("a/2", "a")]
    _, c1 = night(conn, "n1", bug)
    assert c1["states"] == {"race x": "new"}
    _, c2 = night(conn, "n2", bug)
    assert c2["states"] == {"race x": "still open"}
    quiet = [rec("a/1", "a"), rec("a/2", "a")]
    for k in range(H.FIXED_AFTER - 1):
        _, c = night(conn, f"q{k}", quiet)
        assert [q["title"] for q in c["not_seen"]] == ["race x"] and not c["fixed"]
    _, c = night(conn, "last", quiet)
    assert [f["title"] for f in c["fixed"]] == ["race x"]
    _, back = night(conn, "again", bug)
    assert back["states"] == {"race x": "reopened"}


def test_a_throughput_drop_is_a_regression_and_noise_is_not(tmp_path):
    conn = H.open_history(str(tmp_path / "h.sqlite"))
    for k, ops in enumerate((1.00e6, 1.03e6, 0.98e6, 1.01e6, 0.99e6, 1.02e6)):
        night(conn, f"n{k}", [rec("a/1", "a", ops=ops)])
    assert not H.compare(conn, {}, [rec("a/1", "a", ops=0.97e6)])["perf"]["a"]["regression"]
    perf = H.compare(conn, {}, [rec("a/1", "a", ops=0.70e6)])["perf"]["a"]
    assert perf["regression"] and perf["drop"] > 0.25


def test_a_failed_night_leaves_the_history_unchanged(tmp_path):
    path = str(tmp_path / "h.sqlite")
    conn = H.open_history(path)
    night(conn, "n1", [rec("a/1", "a")])
    broken = [rec("a/1", "a"), rec("a/1", "a")]          # duplicate trial: the insert fails
    with pytest.raises(sqlite3.IntegrityError):
        H.record(conn, {"label": "n2", "started": 2.0}, broken, {}, {}, 0)
    assert conn.execute("SELECT COUNT(*) FROM nights").fetchone()[0] == 1
    assert conn.execute("SELECT COUNT(*) FROM trials").fetchone()[0] == 1


def test_corrupt_or_foreign_databases_are_refused(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not sqlite at all" * 64)
    with pytest.raises(H.HistoryError):
        H.check(str(bad))
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(H.HistoryError, match="not a history database"):
        H.check(str(other))


def test_a_trial_is_bucketed_by_its_first_finding():
    inv = {"kind": "list_count", "list": 5, "message": "...", "detector": "invariants"}
    res = result(worker_violations=[violation("alloc", "free")], invariant_violations=[inv],
                 detection_s={"invariants": 0.05, "ownership": 0.001})
    r = {"id": "c/1", "cell": "c", "kind": "cell", "status": "violations", "command": "cmd",
         "started": 1.0, "signatures": B.signatures({"status": "violations", "result": res})}
    assert [t for _, t in r["signatures"]] == ["double_allocation in alloc/free",
                                               "invariant list_count"]
    (b,) = B.group([r]).values()
    assert b["title"] == "double_allocation in alloc/free"
    assert b["also_seen"] == ["invariant list_count"]
    res["detection_s"] = {"invariants": 0.001, "ownership": 0.05}
    assert B.signatures({"status": "violations", "result": res})[0][1] == "invariant list_count"
