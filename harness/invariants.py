"""Structural invariants of a quiescent zone (no operation in flight).

`check_kernel` walks every list and then tiles the page array with blocks; it
writes one row per violation, `(code, field0, field1, ...)`.  `KINDS` is the one
declaration of what a row means: for each kind its name, its fields in row
order and its message.  `describe` turns a row into a dict, `check_zone` returns
all of them (and `Zone.check` returns that list).

Every violation dict has `kind`, `message` and that kind's fields.  The field
`pfn` is present exactly when the violation is about a real page (the page the
message is about); other page-valued fields are listed in `PAGE_FIELDS`, so
report code collects the pages involved with `pages_of(v)`, never by kind.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from harness.layout import Sections
from harness.isolate import BASE_SHIFT, ISOLATE, MODE_SHIFT, OWN_ONLY
from harness.layout import (ALLOC, CAPTURED, CLOSED, FREE, LS_COUNT, LS_HEAD, LS_OWNER, LS_STATE,
                            LS_WANTED, NAREAS, OPEN, PCP, PCP_LIST0, PCP_ORDERS, PG_LIST, PG_NEXT,
                            PG_ORDER, PG_PREV, PG_STATE, PHASE_MASK, TAIL, TOP, UNUSED)


class Kind(NamedTuple):
    name: str
    fields: tuple        # row order after the code; also the dict keys
    message: str         # str.format template over the (decoded) fields


# The one declaration.  The kernel writes the fields in exactly this order.
KINDS = (
    # lists, walked first (each list with its own marks, so a revisit within one
    # walk is a cycle and a page already reached by another list is on two lists)
    Kind("head_out_of_range", ("list", "head"),
         "list {list}: head {head} is not a pfn of the zone"),
    Kind("next_out_of_range", ("list", "pfn", "next"),
         "list {list}: block {pfn} links to next {next}, which is not a pfn of the zone"),
    Kind("list_cycle", ("list", "pfn", "linked_from"),
         "list {list} has a cycle: block {linked_from} links back to block {pfn}, "
         "already walked on this list"),
    Kind("on_two_lists", ("pfn", "first_list", "second_list"),
         "block {pfn} is on lists {first_list} and {second_list} "
         "(list {first_list} reached it first)"),
    Kind("list_link", ("list", "pfn", "prev_found", "prev_expected"),
         "list {list}: block {pfn} has prev {prev_found}, but the walk reached it from "
         "{prev_expected} (-1: the list head)"),
    Kind("wrong_state_on_list", ("list", "pfn", "state", "expected_state"),
         "list {list}: block {pfn} is {state}, but blocks on this list must be {expected_state}"),
    Kind("wrong_list_field", ("list", "pfn", "list_field"),
         "list {list}: block {pfn} is on it, but its list field names list {list_field}"),
    Kind("wrong_order_on_list", ("list", "pfn", "order"),
         "free or per-CPU list {list}: block {pfn} has order {order}"),
    Kind("closed_list", ("list", "pfn", "phase"),
         "capture list {list} is {phase}, yet still holds block {pfn}"),
    Kind("list_count", ("list", "counted", "walked"),
         "list {list}: its count says {counted} blocks, walking it finds {walked}"),
    # pages, tiled by blocks in increasing pfn order
    Kind("bad_order", ("pfn", "order"),
         "block {pfn} has order {order}, outside 0..10"),
    Kind("misaligned", ("pfn", "order"),
         "block {pfn} of order {order} is not aligned to its size ({pfn} % 2**{order} != 0)"),
    Kind("overlap", ("pfn", "block", "order"),
         "page {pfn} is a block head inside block {block} of order {order}: blocks overlap"),
    Kind("not_on_list", ("pfn", "state", "list_field"),
         "{state} block {pfn} is on no list (its list field names list {list_field})"),
    Kind("unmerged_buddies", ("pfn", "buddy", "order"),
         "blocks {pfn} and {buddy} are buddies of order {order}, both free or captured, "
         "yet unmerged"),
    Kind("conservation", ("pfn", "pages_in_blocks", "zone_pages"),
         "pages not conserved: blocks hold {pages_in_blocks} of the zone's {zone_pages} pages; "
         "page {pfn} is the first tail page that no block covers"),
    # isolated ranges (harness.isolate), from each open list of kind ISOLATE
    Kind("free_in_isolated_range", ("pfn", "list", "state"),
         "block {pfn} is {state} inside the range isolated on list {list}: "
         "every free there must be held on that list"),
    Kind("crosses_isolated_range", ("pfn", "order", "list"),
         "block {pfn} of order {order} crosses the boundary of the range isolated on list {list}"),
)
CODES = {k.name: code for code, k in enumerate(KINDS)}
WIDTH = 1 + max(len(k.fields) for k in KINDS)

V_HEAD_RANGE = CODES["head_out_of_range"]
V_NEXT_RANGE = CODES["next_out_of_range"]
V_LIST_CYCLE = CODES["list_cycle"]
V_TWO_LISTS = CODES["on_two_lists"]
V_LIST_LINK = CODES["list_link"]
V_LIST_STATE = CODES["wrong_state_on_list"]
V_LIST_FIELD = CODES["wrong_list_field"]
V_LIST_ORDER = CODES["wrong_order_on_list"]
V_CLOSED_LIST = CODES["closed_list"]
V_LIST_COUNT = CODES["list_count"]
V_BAD_ORDER = CODES["bad_order"]
V_MISALIGNED = CODES["misaligned"]
V_OVERLAP = CODES["overlap"]
V_NOT_ON_LIST = CODES["not_on_list"]
V_UNMERGED = CODES["unmerged_buddies"]
V_CONSERVATION = CODES["conservation"]
V_ISO_FREE = CODES["free_in_isolated_range"]
V_ISO_CROSS = CODES["crosses_isolated_range"]

STATE_NAMES = {TAIL: "tail", FREE: "free", CAPTURED: "captured", ALLOC: "allocated",
               PCP: "on a per-CPU list"}
PHASE_NAMES = {UNUSED: "unused", OPEN: "open", CLOSED: "closed"}
DECODE = {"state": STATE_NAMES, "expected_state": STATE_NAMES, "phase": PHASE_NAMES}
PAGE_FIELDS = ("pfn", "buddy", "block", "linked_from", "prev_found", "prev_expected")
MAX_REPORTED = 64

assert all(k.message.format(**{f: 0 for f in k.fields}) for k in KINDS)
assert "pfn" in PAGE_FIELDS and all(len(set(k.fields)) == len(k.fields) for k in KINDS)


@njit(nogil=True, cache=True)
def _add(out, n, code, f0, f1=0, f2=0, f3=0):
    if n < out.shape[0]:
        out[n, 0], out[n, 1], out[n, 2], out[n, 3], out[n, 4] = code, f0, f1, f2, f3
    return n + 1


@njit(nogil=True, cache=True)
def check_kernel(pages, lists, out, first_pcp=-1):
    """Fill `out` with (code, fields...) rows as `KINDS` declares; return how many were found.

    Lists from `first_pcp` on (-1: none) are per-CPU lists, PCP_ORDERS a CPU: their
    blocks are PCP heads of the list's order, accounted for like free ones (each on
    exactly one list) but never merge candidates.

    A list walk that leaves the zone, closes a cycle or runs into a block another
    list already holds stops there, and that list's count is not compared (the
    walked number would measure nothing); the stop itself is the report.
    """
    npages = pages.shape[0]
    n = 0
    seen = np.zeros(npages, np.int32)      # list + 1 of the walk that first reached a page
    if first_pcp < 0:
        first_pcp = lists.shape[0]
    for lst in range(lists.shape[0]):
        percpu = lst >= first_pcp
        want = FREE if lst < NAREAS else PCP if percpu else CAPTURED
        order_of_list = lst if lst < NAREAS else (lst - first_pcp) % PCP_ORDERS if percpu else -1
        phase = lists[lst, LS_STATE] & PHASE_MASK
        prev = -1
        p = lists[lst, LS_HEAD]
        walked = 0
        whole = True
        while p != -1:
            if p < 0 or p >= npages:
                if prev < 0:
                    n = _add(out, n, V_HEAD_RANGE, lst, p)
                else:
                    n = _add(out, n, V_NEXT_RANGE, lst, prev, p)
                whole = False
                break
            if seen[p] == lst + 1:
                n = _add(out, n, V_LIST_CYCLE, lst, p, prev)
                whole = False
                break
            if seen[p] != 0:
                n = _add(out, n, V_TWO_LISTS, p, seen[p] - 1, lst)
                whole = False
                break
            seen[p] = lst + 1
            if pages[p, PG_PREV] != prev:
                n = _add(out, n, V_LIST_LINK, lst, p, pages[p, PG_PREV], prev)
            st = pages[p, PG_STATE]
            if st != want:
                n = _add(out, n, V_LIST_STATE, lst, p, st, want)
            else:
                if pages[p, PG_LIST] != lst:
                    n = _add(out, n, V_LIST_FIELD, lst, p, pages[p, PG_LIST])
                if order_of_list >= 0 and pages[p, PG_ORDER] != order_of_list:
                    n = _add(out, n, V_LIST_ORDER, lst, p, pages[p, PG_ORDER])
            if lst >= NAREAS and not percpu and phase != OPEN:
                n = _add(out, n, V_CLOSED_LIST, lst, p, phase)
            walked += 1
            prev = p
            p = pages[p, PG_NEXT]
        if whole and walked != lists[lst, LS_COUNT]:
            n = _add(out, n, V_LIST_COUNT, lst, lists[lst, LS_COUNT], walked)
    # Pages: blocks must tile the zone.  A tail page where a head is due is lost;
    # a head inside a block is an overlap; a head of bad order covers the tail
    # pages after it (its size is unknowable), so it loses none.
    covered = 0
    first_lost = -1
    p = 0
    while p < npages:
        st = pages[p, PG_STATE]
        order = pages[p, PG_ORDER]
        if st == TAIL:
            if first_lost < 0:
                first_lost = p
            p += 1
            continue
        if order < 0 or order > TOP:
            n = _add(out, n, V_BAD_ORDER, p, order)
            q = p + 1
            while q < npages and pages[q, PG_STATE] == TAIL:
                q += 1
            covered += q - p
            p = q
            continue
        size = 1 << order
        aligned = p & (size - 1) == 0
        if not aligned:
            n = _add(out, n, V_MISALIGNED, p, order)
        end = min(p + size, npages)
        for q in range(p + 1, end):
            if pages[q, PG_STATE] != TAIL:
                n = _add(out, n, V_OVERLAP, q, p, order)
        if st == FREE or st == CAPTURED or st == PCP:
            if seen[p] == 0:
                n = _add(out, n, V_NOT_ON_LIST, p, st, pages[p, PG_LIST])
            if st != PCP and aligned and order < TOP:
                buddy = p ^ size
                bst = pages[buddy, PG_STATE]
                if buddy > p and pages[buddy, PG_ORDER] == order and (bst == FREE or bst == CAPTURED) \
                        and not _kept_apart(pages, lists, p, buddy, order):
                    n = _add(out, n, V_UNMERGED, p, buddy, order)
        covered += end - p
        p = end
    if covered != npages:
        n = _add(out, n, V_CONSERVATION, first_lost, covered, npages)
    for lst in range(NAREAS, lists.shape[0]):
        if lists[lst, LS_STATE] & PHASE_MASK == OPEN and _mode(lists, lst) == ISOLATE:
            n = _check_range(pages, lists, lst, out, n)
    return n


@njit(nogil=True, cache=True)
def _mode(lists, lst):
    return (lists[lst, LS_OWNER] >> MODE_SHIFT) & 0xFF


@njit(nogil=True, cache=True)
def _kept_apart(pages, lists, p, buddy, order):
    """Buddies that must not merge: one on an own-only capture list the other is not on,
    or the two sides of an isolated range's boundary."""
    for b in (p, buddy):
        lst = pages[b, PG_LIST]
        if pages[b, PG_STATE] == CAPTURED and NAREAS <= lst < lists.shape[0] and \
                _mode(lists, lst) == OWN_ONLY and pages[p, PG_LIST] != pages[buddy, PG_LIST]:
            return True
    for lst in range(NAREAS, lists.shape[0]):
        if lists[lst, LS_STATE] & PHASE_MASK == OPEN and _mode(lists, lst) == ISOLATE:
            base = lists[lst, LS_OWNER] >> BASE_SHIFT
            if order >= lists[lst, LS_WANTED] and (p >> (order + 1)) == (base >> (order + 1)):
                return True
    return False


@njit(nogil=True, cache=True)
def _check_range(pages, lists, lst, out, n):
    """The range isolated on `lst`: no block crosses its boundary, none inside is free or
    on another list."""
    npages = pages.shape[0]
    order = lists[lst, LS_WANTED]
    base = lists[lst, LS_OWNER] >> BASE_SHIFT
    if order < 0 or order > TOP or base < 0 or base + (1 << order) > npages:
        return n
    for k in range(order + 1, TOP + 1):
        q = base & ~((1 << k) - 1)
        if pages[q, PG_STATE] != TAIL and pages[q, PG_ORDER] >= k:
            return _add(out, n, V_ISO_CROSS, q, pages[q, PG_ORDER], lst)
    p = base
    while p < base + (1 << order):
        st = pages[p, PG_STATE]
        o = pages[p, PG_ORDER]
        if st == TAIL or o < 0 or o > order:
            return _add(out, n, V_ISO_CROSS, p, o, lst)
        if st == FREE or (st == CAPTURED and pages[p, PG_LIST] != lst):
            n = _add(out, n, V_ISO_FREE, p, lst, st)
        p += 1 << o
    return n


def check_zone(z):
    """All invariant violations of a quiescent zone table, as dicts (empty list when clean)."""
    sec = Sections(z)
    out = np.zeros((MAX_REPORTED, WIDTH), np.int64)
    first_pcp = int(sec.pcp[PCP_LIST0]) if sec.cpus else -1
    n = check_kernel(sec.pages, sec.lists, out, first_pcp)
    return [describe(row) for row in out[:min(n, MAX_REPORTED)]] + (
        [{"kind": "truncated", "message": f"{n - MAX_REPORTED} more violations not shown"}]
        if n > MAX_REPORTED else [])


def describe(row):
    """The dict of one kernel row: `kind`, its declared fields (enums by name), `message`."""
    kind = KINDS[int(row[0])]
    v = {"kind": kind.name}
    for name, x in zip(kind.fields, row[1:]):
        x = int(x)
        v[name] = DECODE[name].get(x, str(x)) if name in DECODE else x
    v["message"] = kind.message.format(**v)
    return v


def pages_of(v):
    """The pfns a violation dict involves (its page-valued fields), for traces."""
    return [v[f] for f in PAGE_FIELDS if f in v and v[f] >= 0]
