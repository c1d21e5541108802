"""Structural invariants: every violation kind, provoked alone on a hand-made table.

`base()` builds a clean 2048-page zone with free, allocated and captured blocks
of several orders; each case writes one corruption into it with NumPy and states
the exact violation dicts `check_zone` must return.
"""

import numpy as np
import pytest

from harness import Zone
from harness import invariants as I
from harness import layout as L
from harness.layout import ALLOC, CAPTURED, FREE, TAIL

PAGES = 2048
CAP0 = L.NAREAS                  # list index of the first capture list

# (pfn, order, state, list); lists are LIFO, as if the blocks were added in this order.
BLOCKS = (
    (0, 9, ALLOC, -1),
    (512, 8, FREE, 8),
    (768, 7, ALLOC, -1),
    (896, 7, FREE, 7),
    (1024, 6, FREE, 6),
    (1088, 6, ALLOC, -1),
    (1152, 7, ALLOC, -1),
    (1280, 8, CAPTURED, CAP0),
    (1536, 8, ALLOC, -1),
    (1792, 8, FREE, 8),
)
LIST8 = (1792, 512)              # free list 8, head first


def table(blocks, open_lists=(CAP0,)):
    """A zone table holding exactly `blocks`; the capture lists in `open_lists` are open."""
    z = L.new_zone_table(PAGES, "fine", 4)
    sec = L.Sections(z)
    pg, ls = sec.pages, sec.lists
    pg[:, L.PG_STATE], pg[:, L.PG_ORDER] = TAIL, 0
    pg[:, L.PG_LIST] = pg[:, L.PG_NEXT] = pg[:, L.PG_PREV] = -1
    ls[:, L.LS_HEAD], ls[:, L.LS_COUNT] = -1, 0
    for lst in open_lists:
        ls[lst, L.LS_STATE] = L.OPEN
    members = {}
    for pfn, order, state, lst in blocks:
        pg[pfn, L.PG_STATE], pg[pfn, L.PG_ORDER], pg[pfn, L.PG_LIST] = state, order, lst
        if lst >= 0:
            members.setdefault(lst, []).insert(0, pfn)
    for lst, pfns in members.items():
        ls[lst, L.LS_HEAD], ls[lst, L.LS_COUNT] = pfns[0], len(pfns)
        for prev, p, nxt in zip([-1] + pfns[:-1], pfns, pfns[1:] + [-1]):
            pg[p, L.PG_PREV], pg[p, L.PG_NEXT] = prev, nxt
    return z, sec


def base():
    z, sec = table(BLOCKS)
    return z, sec.pages, sec.lists


def test_base_table_is_clean_and_as_described():
    z, pg, ls = base()
    assert I.check_zone(z) == []
    assert Zone(pages=PAGES).check() == []
    p, walk = int(ls[8, L.LS_HEAD]), []
    while p >= 0:
        walk.append(p)
        p = int(pg[p, L.PG_NEXT])
    assert tuple(walk) == LIST8


def violation(kind, message, **fields):
    return dict(kind=kind, **fields, message=message)


# --- one case per cause: (id, corruption, expected violations) ------------------------

def two_lists(z, pg, ls):
    pg[896, L.PG_NEXT] = 1024        # free list 7 runs on into free list 6's only block


def two_lists_cap(z, pg, ls):
    pg[1280, L.PG_NEXT] = 512        # the capture list runs on into free list 8


def cycle(z, pg, ls):
    pg[512, L.PG_NEXT] = 1792        # list 8's tail links back to its head


def self_cycle(z, pg, ls):
    pg[896, L.PG_NEXT] = 896


def count(z, pg, ls):
    ls[8, L.LS_COUNT] = 3


def lost(z, pg, ls):
    pg[768, L.PG_STATE] = TAIL       # allocated block 768..895 forgotten: its pages are lost


def overlap(z, pg, ls):
    pg[768, L.PG_ORDER] = 8          # 768..1023 now covers the free block 896


def misaligned(z, pg, ls):
    pg[1088, L.PG_ORDER] = 7         # 1088..1215, then 1216..1279 as its own order-6 block
    pg[1152, L.PG_STATE] = TAIL
    pg[1216, L.PG_STATE], pg[1216, L.PG_ORDER] = ALLOC, 6


def bad_order_high(z, pg, ls):
    pg[0, L.PG_ORDER] = 11


def bad_order_negative(z, pg, ls):
    pg[1536, L.PG_ORDER] = -1


def prev_link(z, pg, ls):
    pg[512, L.PG_PREV] = 0


def head_prev_link(z, pg, ls):
    pg[1792, L.PG_PREV] = 512


def allocated_on_free_list(z, pg, ls):
    pg[512, L.PG_STATE] = ALLOC


def free_on_capture_list(z, pg, ls):
    pg[1280, L.PG_STATE] = FREE


def list_field(z, pg, ls):
    pg[512, L.PG_LIST] = 7


def order_on_list(z, pg, ls):
    pg[512, L.PG_ORDER] = 7          # and 640..767 becomes an allocated block, so no page is lost
    pg[640, L.PG_STATE], pg[640, L.PG_ORDER] = ALLOC, 7


def free_on_no_list(z, pg, ls):
    ls[7, L.LS_HEAD], ls[7, L.LS_COUNT] = -1, 0


def captured_on_no_list(z, pg, ls):
    ls[CAP0, L.LS_HEAD], ls[CAP0, L.LS_COUNT] = -1, 0


def unmerged_free(z, pg, ls):
    pg[768, L.PG_STATE], pg[768, L.PG_LIST] = FREE, 7      # 768 joins list 7 ahead of 896
    pg[768, L.PG_NEXT], pg[896, L.PG_PREV] = 896, 768
    ls[7, L.LS_HEAD], ls[7, L.LS_COUNT] = 768, 2


def unmerged_captured(z, pg, ls):
    pg[1536, L.PG_STATE], pg[1536, L.PG_LIST] = CAPTURED, CAP0   # 1536 captured after 1280,
    pg[1280, L.PG_NEXT], pg[1536, L.PG_PREV] = 1536, 1280          # its buddy 1792 is free
    ls[CAP0, L.LS_COUNT] = 2


def closed(z, pg, ls):
    ls[CAP0, L.LS_STATE] = 3 * L.GENERATION + L.CLOSED     # a closed, reused list


def unused(z, pg, ls):
    ls[CAP0, L.LS_STATE] = L.UNUSED


def head_range(z, pg, ls):
    ls[5, L.LS_HEAD] = 5000          # an empty list whose head points past the zone


def next_range(z, pg, ls):
    pg[512, L.PG_NEXT] = -7          # only -1 ends a list


def isolated(base_pfn, order):
    """CAP0 becomes the list of an isolated range (harness.isolate) at base_pfn."""
    from harness.isolate import ISOLATE, owner_word

    def corrupt(z, pg, ls):
        ls[CAP0, L.LS_OWNER] = owner_word(0, ISOLATE, base_pfn)
        ls[CAP0, L.LS_WANTED] = order
    return corrupt


CASES = [
    ("free_block_inside_an_isolated_range", isolated(1024, 6), [violation(
        "free_in_isolated_range", f"block 1024 is free inside the range isolated on list {CAP0}:"
        " every free there must be held on that list", pfn=1024, list=CAP0, state="free")]),
    ("block_across_an_isolated_range", isolated(1024, 5), [violation(
        "crosses_isolated_range", f"block 1024 of order 6 crosses the boundary of the range"
        f" isolated on list {CAP0}", pfn=1024, order=6, list=CAP0)]),
    ("page_on_two_lists", two_lists, [violation(
        "on_two_lists", "block 1024 is on lists 6 and 7 (list 6 reached it first)",
        pfn=1024, first_list=6, second_list=7)]),
    ("free_block_also_on_capture_list", two_lists_cap, [violation(
        "on_two_lists", f"block 512 is on lists 8 and {CAP0} (list 8 reached it first)",
        pfn=512, first_list=8, second_list=CAP0)]),
    ("cycle_in_one_list", cycle, [violation(
        "list_cycle", "list 8 has a cycle: block 512 links back to block 1792, "
        "already walked on this list", list=8, pfn=1792, linked_from=512)]),
    ("block_linked_to_itself", self_cycle, [violation(
        "list_cycle", "list 7 has a cycle: block 896 links back to block 896, "
        "already walked on this list", list=7, pfn=896, linked_from=896)]),
    ("wrong_count", count, [violation(
        "list_count", "list 8: its count says 3 blocks, walking it finds 2",
        list=8, counted=3, walked=2)]),
    ("lost_pages", lost, [violation(
        "conservation", "pages not conserved: blocks hold 1920 of the zone's 2048 pages; "
        "page 768 is the first tail page that no block covers",
        pfn=768, pages_in_blocks=1920, zone_pages=2048)]),
    ("overlap", overlap, [violation(
        "overlap", "page 896 is a block head inside block 768 of order 8: blocks overlap",
        pfn=896, block=768, order=8)]),
    ("misaligned_block", misaligned, [violation(
        "misaligned", "block 1088 of order 7 is not aligned to its size (1088 % 2**7 != 0)",
        pfn=1088, order=7)]),
    ("order_above_10", bad_order_high, [violation(
        "bad_order", "block 0 has order 11, outside 0..10", pfn=0, order=11)]),
    ("negative_order", bad_order_negative, [violation(
        "bad_order", "block 1536 has order -1, outside 0..10", pfn=1536, order=-1)]),
    ("broken_prev_link", prev_link, [violation(
        "list_link", "list 8: block 512 has prev 0, but the walk reached it from 1792 "
        "(-1: the list head)", list=8, pfn=512, prev_found=0, prev_expected=1792)]),
    ("head_with_a_prev", head_prev_link, [violation(
        "list_link", "list 8: block 1792 has prev 512, but the walk reached it from -1 "
        "(-1: the list head)", list=8, pfn=1792, prev_found=512, prev_expected=-1)]),
    ("allocated_block_on_free_list", allocated_on_free_list, [violation(
        "wrong_state_on_list",
        "list 8: block 512 is allocated, but blocks on this list must be free",
        list=8, pfn=512, state="allocated", expected_state="free")]),
    ("free_block_on_capture_list", free_on_capture_list, [violation(
        "wrong_state_on_list",
        f"list {CAP0}: block 1280 is free, but blocks on this list must be captured",
        list=CAP0, pfn=1280, state="free", expected_state="captured")]),
    ("list_field_names_another_list", list_field, [violation(
        "wrong_list_field", "list 8: block 512 is on it, but its list field names list 7",
        list=8, pfn=512, list_field=7)]),
    ("order_differs_from_free_list", order_on_list, [violation(
        "wrong_order_on_list", "free or per-CPU list 8: block 512 has order 7",
        list=8, pfn=512, order=7)]),
    ("free_block_on_no_list", free_on_no_list, [violation(
        "not_on_list", "free block 896 is on no list (its list field names list 7)",
        pfn=896, state="free", list_field=7)]),
    ("captured_block_on_no_list", captured_on_no_list, [violation(
        "not_on_list", f"captured block 1280 is on no list (its list field names list {CAP0})",
        pfn=1280, state="captured", list_field=CAP0)]),
    ("unmerged_free_buddies", unmerged_free, [violation(
        "unmerged_buddies", "blocks 768 and 896 are buddies of order 7, both free or captured, "
        "yet unmerged", pfn=768, buddy=896, order=7)]),
    ("unmerged_captured_buddies", unmerged_captured, [violation(
        "unmerged_buddies", "blocks 1536 and 1792 are buddies of order 8, both free or captured, "
        "yet unmerged", pfn=1536, buddy=1792, order=8)]),
    ("block_on_closed_capture_list", closed, [violation(
        "closed_list", f"capture list {CAP0} is closed, yet still holds block 1280",
        list=CAP0, pfn=1280, phase="closed")]),
    ("block_on_unused_capture_list", unused, [violation(
        "closed_list", f"capture list {CAP0} is unused, yet still holds block 1280",
        list=CAP0, pfn=1280, phase="unused")]),
    ("head_out_of_range", head_range, [violation(
        "head_out_of_range", "list 5: head 5000 is not a pfn of the zone", list=5, head=5000)]),
    ("next_out_of_range", next_range, [violation(
        "next_out_of_range", "list 8: block 512 links to next -7, which is not a pfn of the zone",
        list=8, pfn=512, next=-7)]),
]


@pytest.mark.parametrize("corrupt,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_corruption_is_reported_as_exactly_its_kind(corrupt, expected):
    z, pg, ls = base()
    corrupt(z, pg, ls)
    assert I.check_zone(z) == expected


def test_every_kind_has_a_case():
    assert {v["kind"] for _, _, vs in CASES for v in vs} == set(I.CODES)


def test_kind_table_is_one_consistent_declaration():
    assert len(I.CODES) == len(I.KINDS)                 # names are unique
    for code, kind in enumerate(I.KINDS):
        assert kind.message and kind.fields
        assert I.CODES[kind.name] == code
        assert {"kind", "message"}.isdisjoint(kind.fields)
        # the template uses every field and nothing else
        names = {f for f in kind.fields if "{" + f + "}" in kind.message}
        assert names == set(kind.fields), kind
        assert kind.message.format(**{f: 7 for f in kind.fields})
        # describe round-trips a row of this kind
        row = np.array([code] + list(range(1, len(kind.fields) + 1)) + [0] * (I.WIDTH - 1
                                                                            - len(kind.fields)))
        v = I.describe(row)
        assert list(v) == ["kind", *kind.fields, "message"]
    assert len({k.message for k in I.KINDS}) == len(I.KINDS)


def test_pfn_only_where_a_page_is_involved():
    for _, _, vs in CASES:
        for v in vs:
            assert I.pages_of(v) == [v[f] for f in I.PAGE_FIELDS if f in v and v[f] >= 0]
    without = {k.name for k in I.KINDS if "pfn" not in k.fields}
    assert without == {"list_count", "head_out_of_range"}
    unmerged = [v for _, _, vs in CASES for v in vs if v["kind"] == "unmerged_buddies"][0]
    assert I.pages_of(unmerged) == [768, 896]


def test_kernel_emits_only_declared_kinds_on_random_corruption():
    rng = np.random.default_rng(7)
    seen = set()
    for trial in range(300):
        z, pg, ls = base()
        for _ in range(rng.integers(1, 6)):
            if rng.random() < 0.7:
                p, f = rng.integers(0, PAGES), rng.integers(0, 5)   # state, order, list, next, prev
                pg[p, f] = rng.choice([-1, 0, 1, 2, 3, 7, 8, 11, 512, 896, 1024, 1280, 1792,
                                       rng.integers(-3, PAGES + 3)])
            else:
                lst, f = rng.integers(0, len(ls)), rng.integers(0, 3)  # head, count, state
                ls[lst, f] = rng.choice([-1, 0, 1, 2, 512, 896, 1280, PAGES])
        out = np.zeros((I.MAX_REPORTED, I.WIDTH), np.int64)
        n = I.check_kernel(pg, ls, out)
        assert ((out[:min(n, I.MAX_REPORTED), 0] >= 0)
                & (out[:min(n, I.MAX_REPORTED), 0] < len(I.KINDS))).all()
        for v in I.check_zone(z):
            assert v["message"] and v["kind"] in I.CODES or v["kind"] == "truncated"
            seen.add(v["kind"])
    assert len(seen) >= 8, seen


def test_more_than_max_reported_is_truncated():
    z, pg, ls = base()
    pg[:, L.PG_STATE], pg[:, L.PG_ORDER], pg[:, L.PG_LIST] = FREE, 0, -1    # 2048 stray free pages
    ls[:, L.LS_HEAD], ls[:, L.LS_COUNT] = -1, 0
    found = I.check_zone(z)
    assert len(found) == I.MAX_REPORTED + 1
    assert found[-1]["kind"] == "truncated"
    total = PAGES + PAGES // 2                       # every page off-list, every pair unmerged
    assert found[-1]["message"] == f"{total - I.MAX_REPORTED} more violations not shown"
    assert {v["kind"] for v in found[:-1]} == {"not_on_list", "unmerged_buddies"}


def test_fresh_zone_table_is_clean():
    for pages in (1024, 2048, 8192):
        for scheme in ("zone", "fine"):
            assert I.check_zone(L.new_zone_table(pages, scheme, 4)) == []


@pytest.mark.parametrize("locking", ["zone", "fine"])
def test_zone_after_alloc_free_capture_is_clean(locking):
    z = Zone(pages=4096, locking=locking, capture_lists=8)
    assert z.check() == []
    held = [(z.alloc(o), o) for o in (0, 3, 0, 5, 1, 10, 2, 0, 7)]
    held = [(p, o) for p, o in held if p is not None]
    assert z.check() == []
    c = z.capture_start(6)
    for p, o in held[:4]:
        z.free(p, o, capture=c)
    assert z.check() == []
    for p, o in held[4:]:
        z.free(p, o)
    assert z.check() == []
    got = z.capture_finish(c)
    assert z.check() == []
    if got is not None:
        z.free(got, 6)
    assert z.check() == []
    assert z.free_counts() == [0] * 10 + [4]


def test_zone_check_reports_a_corrupted_zone():
    z = Zone(pages=2048)
    p = z.alloc(0)
    z.sections.pages[p, L.PG_STATE] = FREE          # freed behind the allocator's back
    assert z.check() == [
        violation("not_on_list", f"free block {p} is on no list (its list field names list -1)",
                  pfn=p, state="free", list_field=-1),
        violation("unmerged_buddies", f"blocks {p} and {p + 1} are buddies of order 0, both free "
                  "or captured, yet unmerged", pfn=p, buddy=p + 1, order=0)]
