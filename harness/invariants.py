"""Structural invariants of a quiescent zone (no operation in flight).

A kernel walks the page array and every list and returns one row per
violation; `describe` turns rows into dicts for reports and `Zone.check`.
"""

import numpy as np
from numba import njit

from harness.layout import Sections
from harness.layout import (ALLOC, CAPTURED, FREE, LS_COUNT, LS_HEAD, LS_STATE, NAREAS, OPEN,
                            PG_LIST, PG_NEXT, PG_ORDER, PG_PREV, PG_STATE, PHASE_MASK, TAIL,
                            TOP)

(V_OVERLAP, V_MISALIGNED, V_BAD_ORDER, V_LIST_LINK, V_LIST_STATE, V_LIST_COUNT,
 V_NOT_ON_LIST, V_UNMERGED, V_CONSERVATION, V_LIST_CYCLE, V_CLOSED_LIST) = range(11)

MESSAGES = {
    V_OVERLAP: "page {pfn} is a tail page where a block head was expected (blocks overlap or a page is lost)",
    V_MISALIGNED: "block {pfn} of order {a} is not aligned to its size",
    V_BAD_ORDER: "block {pfn} has order {a}, outside 0..10",
    V_LIST_LINK: "list {a}: block {pfn} has a broken prev link (prev={b})",
    V_LIST_STATE: "list {a}: block {pfn} has state/order/list fields that do not belong on it (state={b})",
    V_LIST_COUNT: "list {a}: count says {b}, walking it finds {pfn}",
    V_NOT_ON_LIST: "block {pfn} is free or captured but not on the list its fields name ({a})",
    V_UNMERGED: "blocks {pfn} and {a} are buddies of order {b}, both free or captured, yet unmerged",
    V_CONSERVATION: "pages not conserved: {a} pages in blocks, zone has {b}",
    V_LIST_CYCLE: "list {a} has a cycle or more than {b} entries",
    V_CLOSED_LIST: "list {a} is not open but still holds block {pfn}",
}
STATE_NAMES = {TAIL: "tail", FREE: "free", CAPTURED: "captured", ALLOC: "allocated"}
MAX_REPORTED = 64


@njit(nogil=True, cache=True)
def _add(out, n, code, pfn, a, b):
    if n < out.shape[0]:
        out[n, 0], out[n, 1], out[n, 2], out[n, 3] = code, pfn, a, b
    return n + 1


@njit(nogil=True, cache=True)
def check_kernel(pages, lists, out):
    """Fill `out` with (code, pfn, a, b) rows; return the number of violations found."""
    npages = pages.shape[0]
    n = 0
    seen = np.zeros(npages, np.int8)          # 1: head reached by walking some list
    # Lists: links, membership, counts.
    for lst in range(lists.shape[0]):
        prev = -1
        p = lists[lst, LS_HEAD]
        walked = 0
        while p >= 0 and walked <= npages:
            if p >= npages:
                n = _add(out, n, V_LIST_LINK, p, lst, prev)
                break
            if pages[p, PG_PREV] != prev:
                n = _add(out, n, V_LIST_LINK, p, lst, pages[p, PG_PREV])
            st = pages[p, PG_STATE]
            want = FREE if lst < NAREAS else CAPTURED
            if st != want or pages[p, PG_LIST] != lst or (lst < NAREAS and pages[p, PG_ORDER] != lst):
                n = _add(out, n, V_LIST_STATE, p, lst, st)
            if lst >= NAREAS and lists[lst, LS_STATE] & PHASE_MASK != OPEN:
                n = _add(out, n, V_CLOSED_LIST, p, lst, 0)
            if seen[p] != 0:
                n = _add(out, n, V_LIST_CYCLE, p, lst, npages)
                break
            seen[p] = 1
            walked += 1
            prev = p
            p = pages[p, PG_NEXT]
        if walked != lists[lst, LS_COUNT]:
            n = _add(out, n, V_LIST_COUNT, walked, lst, lists[lst, LS_COUNT])
    # Pages: tile the zone with blocks, check heads and buddies.
    total = 0
    p = 0
    while p < npages:
        st = pages[p, PG_STATE]
        order = pages[p, PG_ORDER]
        if st == TAIL:
            n = _add(out, n, V_OVERLAP, p, 0, 0)
            p += 1
            continue
        if order < 0 or order > TOP:
            n = _add(out, n, V_BAD_ORDER, p, order, 0)
            p += 1
            continue
        if p & ((1 << order) - 1) != 0:
            n = _add(out, n, V_MISALIGNED, p, order, 0)
        if (st == FREE or st == CAPTURED) and seen[p] == 0:
            n = _add(out, n, V_NOT_ON_LIST, p, pages[p, PG_LIST], 0)
        if (st == FREE or st == CAPTURED) and order < TOP:
            buddy = p ^ (1 << order)
            bst = pages[buddy, PG_STATE]
            if buddy > p and pages[buddy, PG_ORDER] == order and (bst == FREE or bst == CAPTURED):
                n = _add(out, n, V_UNMERGED, p, buddy, order)
        total += 1 << order
        p += 1 << order
    if total != npages:
        n = _add(out, n, V_CONSERVATION, -1, total, npages)
    return n


def check_zone(z):
    """All invariant violations of a quiescent zone table, as dicts (empty list when clean)."""
    sec = Sections(z)
    out = np.zeros((MAX_REPORTED, 4), np.int64)
    n = check_kernel(sec.pages, sec.lists, out)
    return [describe(row) for row in out[:min(n, MAX_REPORTED)]] + (
        [{"kind": "truncated", "message": f"{n - MAX_REPORTED} more violations not shown"}]
        if n > MAX_REPORTED else [])


def describe(row):
    code, pfn, a, b = (int(x) for x in row)
    kind = ("overlap", "misaligned", "bad_order", "list_link", "list_state", "list_count",
            "not_on_list", "unmerged_buddies", "conservation", "list_cycle", "closed_list")[code]
    return {"kind": kind, "pfn": pfn, "a": a, "b": b,
            "message": MESSAGES[code].format(pfn=pfn, a=a, b=b)}
