"""Both sides of a page race, from the merged flight recorder.

A page violation names one thread and one page.  The other side is the
latest operation of another thread on a block that covers the same page:
e.g. "thread 1 allocated order-2 block 50144, then thread 0 allocated
order-6 block 50112 that covers it", the way KCSAN and TSan name both
accesses of a race.  An event with a carried stamp (a per-CPU list event,
harness.tracing) happened within a window; when the other side falls inside it,
the report says the order was not recorded rather than guess it.
"""

VERBS = {"alloc": "allocated", "free": "freed", "free-capture": "freed into its capture list",
         "capture_finish": "took from its capture list", "captured-other": "freed (captured)",
         "pcp-alloc": "allocated from its per-CPU list", "pcp-free": "freed onto its per-CPU list"}


def covers(event, page):
    if event["pfn"] < 0 or event["op"] == "capture_start":
        return False
    return event["pfn"] <= page < event["pfn"] + (1 << max(0, event["order"]))


def window(e):
    """(earliest, latest) ns of event `e`: its stamp, or a carried stamp's window."""
    if not e.get("carried"):
        return e["ns"], e["ns"]
    return e["ns"], float("inf") if e.get("until_ns") is None else e["until_ns"]


def unordered(a, b):
    """Events `a` and `b` may have happened in either order: one has a carried stamp and
    their windows meet."""
    (a0, a1), (b0, b1) = window(a), window(b)
    return bool(a.get("carried") or b.get("carried")) and a0 <= b1 and b0 <= a1


def describe(e, t0):
    lo, hi = window(e)
    when = f"at +{(lo - t0) / 1000:.1f} us" if lo == hi else \
        f"at or after +{(lo - t0) / 1000:.1f} us" if hi == float("inf") else \
        f"between +{(lo - t0) / 1000:.1f} and +{(hi - t0) / 1000:.1f} us"
    return (f"thread {e['thread']} {VERBS.get(e['op'], e['op'])} order-{e['order']} block"
            f" {e['pfn']} {when}")


def explain(v, events):
    """{"this", "other", "text"} for violation `v`, or None when the recorder has no other side.

    `events` are all threads' events in time order; `v` has thread, page, ns and,
    for ownership kinds, `found` = the other owner's thread slot.
    """
    page, me = v["page"], v["thread"]
    mine = [e for e in events if e["thread"] == me and covers(e, page) and e["ns"] <= v["ns"]]
    this = mine[-1] if mine else None
    until = this["ns"] if this else v["ns"]
    others = [e for e in events if e["thread"] != me and covers(e, page)]
    before = [e for e in others if e["ns"] <= until]
    if v.get("detector") == "ownership" and before:
        named = [e for e in before if e["thread"] == v.get("found")]
        before = named or before
    other = before[-1] if before else (others[0] if others else None)
    if other is None:
        return None
    t0 = min(e["ns"] for e in (this, other) if e)
    if this is None:
        inside = window(other)[1] >= v["ns"] > other["ns"]     # a carried window holds it
        text = f"{describe(other, t0)}; thread {me} {'' if inside else 'then '}found page" \
               f" {page} in the wrong state{' within that window' if inside else ''}"
    else:
        first, second = sorted((this, other), key=lambda e: e["ns"])
        relation = "covers it" if second["order"] >= first["order"] else "lies inside it"
        if unordered(first, second):
            text = f"{describe(first, t0)}, and {describe(second, t0)}, which {relation}," \
                   f" in an order the flight recorder did not keep (page {page})"
        else:
            text = f"{describe(first, t0)}, then {describe(second, t0)}, which {relation}" \
                   f" (page {page})"
    return {"this": this, "other": other, "text": text}
