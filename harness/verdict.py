"""Grading: a pure function from a saved result to a verdict and an exit status.

Declared outcomes (the jcstress way): CLEAN is the only acceptable one; any
violation, lock-order problem or hang is forbidden; an interrupted run is
inconclusive whatever it saw so far.
"""

EXIT_CLEAN, EXIT_VIOLATION, EXIT_USAGE, EXIT_HANG, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def problems(result):
    """Every finding of a result, as short strings (empty for a clean run)."""
    out = [f"{v['detector']}: {v['kind']} at pfn {v['pfn']}" for v in result["worker_violations"]]
    out += [f"invariants: {v['kind']}: {v['message']}" for v in result["invariant_violations"]]
    end = result["end"]
    if end.get("drain_rejected"):
        out.append(f"drain: the zone rejected {end['drain_rejected']} frees of blocks we held")
    if end.get("fresh_after_drain") is False:
        out.append("drain: after giving everything back the zone is not all order-10 blocks")
    lockdep = result.get("lockdep") or {}
    out += [f"lockdep: {p['kind']}: {p['summary']}" for p in lockdep.get("problems", [])]
    if result["outcome"] == "hang":
        out.append(f"watchdog: no progress from threads {result['stalled_threads']}")
    return out


def grade(result):
    """(verdict word, exit status) of a result dict."""
    if result["outcome"] == "interrupted":
        return "INTERRUPTED", EXIT_INTERRUPTED
    if result["outcome"] == "hang":
        return "HANG", EXIT_HANG
    if problems(result):
        return "VIOLATIONS", EXIT_VIOLATION
    return "CLEAN", EXIT_CLEAN
