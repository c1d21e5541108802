"""Grading: a pure function from a result's counts to a verdict and an exit status.

Declared outcomes (the jcstress way): CLEAN is the only acceptable one; any
violation, lock-order problem or hang is forbidden; an interrupted run is
inconclusive whatever it saw so far.  Nothing here changes the result it reads.
"""

from harness.stamps import describe as stamp_contents

EXIT_CLEAN, EXIT_VIOLATION, EXIT_USAGE, EXIT_HANG, EXIT_WRITE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130          # SIGINT; SIGTERM and SIGHUP give 128 + their number


OWNER_NAMES = {1023: "the page cache", 1022: "a per-CPU list", -1: "nobody"}   # workers.detectors


# poison findings: what the thread was doing, and what the page should have held
POISON_SEEN = {"write_to_free_page": ("allocated", "poison"),
               "write_to_allocated_page": ("freed", "its own stamp"),
               "read_after_free": ("read the cached page", "its cache key")}


def holder(slot):
    return OWNER_NAMES.get(slot, f"thread {slot}")


def other_block(v):
    return f" (pfn {v['other_pfn']}, order {v['other_order']})" if "other_pfn" in v else ""


def describe_violation(v):
    """One line for a worker finding; says who else is involved where the kind has someone."""
    head = f"{v['detector']}: {v['kind']}"
    if v["kind"] == "double_allocation":
        other = v.get("found")
        whose = "another block of its own" if other == v["thread"] else \
            f"a block that {holder(other)} holds" if other is not None else "a claimed block"
        return (f"{head}: thread {v['thread']} allocated pfn {v['pfn']} (order {v['order']}),"
                f" whose page {v['page']} is inside {whose}{other_block(v)}")
    if v["kind"] == "free_of_page_not_owned" and "other_pfn" in v:
        return (f"{head}: thread {v['thread']} freed pfn {v['pfn']} (order {v['order']}) as"
                f" {holder(v['expected'])}'s, but {holder(v['found'])} holds pfn"
                f" {v['other_pfn']} (order {v['other_order']}) there")
    if v["kind"] in POISON_SEEN:
        verb, wanted = POISON_SEEN[v["kind"]]
        return (f"{head}: thread {v['thread']} {verb} pfn {v['pfn']} (order {v['order']}),"
                f" whose page {v['page']} held {stamp_contents(v['found'])} where it should"
                f" have held {wanted}")
    if v["kind"] == "capture_list_gained_pages":
        return (f"{head}: capture list {v['page']} ended with {v['found']} pages but its uses"
                f" placed only {v['expected']} on it (thread {v['thread']})")
    return (f"{head} at pfn {v['pfn']} (order {v['order']}, page {v['page']},"
            f" thread {v['thread']})")


def findings(result):
    """Every finding as (group key, text), in detection order (empty for a clean run)."""
    out = []
    for v in result["worker_violations"]:
        out.append(((v["detector"], v["kind"]), describe_violation(v)))
    for v in result["invariant_violations"]:
        out.append((("invariants", v["kind"]), f"invariants: {v['kind']}: {v['message']}"))
    end = result["end"]
    if end.get("drain_rejected"):
        out.append((("drain", "rejected"),
                    f"drain: the zone rejected {end['drain_rejected']} frees of blocks we held"))
    if end.get("fresh_after_drain") is False:
        out.append((("drain", "not_fresh"), "drain: after giving everything back the zone is"
                    " not all order-10 blocks"))
    for w in result.get("witness") or []:
        out.append((("witness", w["kind"]), f"witness: {w['kind']}: {w['text']}"))
    for c in result.get("crashes") or []:
        out.append((("boundscheck",), f"boundscheck: thread {c['thread']}: {c['error']}"))
    if result.get("redzone"):
        out.append((("redzone",), "redzone: a stray write at index -1 of the zone table"
                    f" (fields {result['redzone']} of the last row are not zero)"))
    lockdep = result.get("lockdep") or {}
    for p in lockdep.get("problems", []):
        out.append((("lockdep", p["kind"], p["summary"]), f"lockdep: {p['kind']}: {p['summary']}"))
    if result["outcome"] == "hang":
        lost = [e for e in (result.get("wait_for") or {}).get("edges", [])
                if e.get("lost_wakeup")]
        why = "".join(f"; thread {e['thread']} waits for {e['waits_for_lock']}, held by nobody:"
                      f" lost wakeup" for e in lost)
        out.append((("watchdog",), f"watchdog: no progress from threads"
                    f" {result['stalled_threads']}{why}"))
    return out


def problems(result):
    """Findings grouped by detector and kind: the first of each group, with a count."""
    groups = {}
    for key, text in findings(result):
        first, n = groups.get(key, (text, 0))
        groups[key] = (first, n + 1)
    return [first if n == 1 else f"{first} [and {n - 1} more like it]"
            for first, n in groups.values()]


def grade(result):
    """(verdict word, exit status) of a result dict."""
    if result["outcome"] == "interrupted":
        return "INTERRUPTED", result.get("signal_exit") or EXIT_INTERRUPTED
    if result["outcome"] == "hang":
        return "HANG", EXIT_HANG
    if findings(result):
        return "VIOLATIONS", EXIT_VIOLATION
    return "CLEAN", EXIT_CLEAN
