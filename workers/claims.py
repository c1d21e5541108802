"""Ownership claims: which thread holds which buddy block, checked on every claim and release.

Two buddy blocks are disjoint or one contains the other.  A claim is all or nothing, and
its cost depends on the order only through the number of 16-page groups it covers:

  small  a block of order 0..3 lies inside one group (the order-4 block around it).
         Its claim adds 1 to the group's count (a locked add, which also reads whether an
         enclosing large block is claimed), then CASes the owner word into each of its
         pages' rows (PG_CLAIM: at most 8 rows, which the allocator has just touched).
  large  a block of order 4..10 is 1..64 whole groups.  Its claim CASes its first
         group's word from 0 to hold its owner word (the marker), then reads the words
         of its other groups (is anything inside claimed?) and of the first groups of
         the blocks around it (is it inside a claimed block?): one locked instruction
         and at most 64 + 6 plain reads, where marking every group took 64 CASes for
         a 1024-page block; its release is one CAS.  The group words are an array of
         their own (harness.layout `group_row0`), 8 to a cache line.

    group word   count of small claims inside (low 32 bits) | large owner word << 32
                 (the marker of the large block whose first group it is)
    owner word   (owner slot + 1) << 4 | order; 0: nobody

Never two overlapping claims silently.  Two small ones share a page (the smaller block's
pages), whose word only one CAS from 0 can win.  Two blocks that share their first group
(a small one in a large one's first group, or two large ones starting at the same
group) meet on that word: the locked add sees the marker, or the CAS from 0 sees the
count or the other marker.  Otherwise one block lies inside the other and starts at a
group G the outer one covers: the inner claim writes G (add or CAS), then reads the
outer one's first group; the outer claim writes its first group (CAS), then reads G.
Each write is a locked instruction, a full fence, so the reads after it cannot be
served before it (Dekker's protocol): at least one of the two sees the other.  A failed
claim undoes what it took and names the other block and its owner (`claim` returns
(bad, other pfn, other order, other owner word)).

A release completes before the zone free that lets the pages be allocated again, so in
a correct allocator a claim never meets a stale word.

Parked blocks (harness.pcp: a small block on a per-CPU list) carry a list's word on
their head and count in their group (`park`, `unpark` for blocks that come from or go
back to the buddy).  A block the owner frees onto its own list, and one it takes off
it, changes hands in place (`park_claimed`, `unpark_claimed`): plain stores onto the
list (only the owner changes its own words), one CAS a page off it, the group's count
untouched, where a release and a park (or an unpark and a claim) would
also add to and subtract from the group word twice.  A release (or a hand-over to a
new owner) checks the words are the expected owner's and names whoever else is there.
"""

from numba import njit, uint64

from harness.atomics import cas, fetch_add, load_acquire, store_release
from harness.flatview import flat_view
from harness.layout import GROUP_SHIFT, PG_CLAIM, TOP, W, group_row0
from harness.outline import out_of_line

SMALL = 1 << GROUP_SHIFT                # pages of a group; blocks below this order are small
LARGE_SHIFT = 32
COUNT_MASK = (1 << LARGE_SHIFT) - 1
ORDER_MASK = 15
SCAN_TRIES = 1000                       # rescans for a small claim whose page words are not
                                        # written yet (its count was seen first)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def owner_word(owner, order):
    """The owner word of block (., order) claimed by slot `owner`; 0 for owner -1 (none)."""
    return ((owner + 1) << 4) | order if owner >= 0 else 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def word_owner(word):
    return (word >> 4) - 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def word_order(word):
    return word & ORDER_MASK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _group(z, g):
    """(row, column) of group g's word (g >= 0: shifts, not a signed division)."""
    return group_row0(z) + (g >> 3), g & (W - 1)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _named(page, word):
    """(bad, pfn, order, word) naming the block of `word` that contains `page`."""
    k = word_order(word)
    return True, (page >> k) << k, k, word


@njit(nogil=True, cache=True, _nrt=False)
def _small_inside(z, g):
    """Name a small claim inside group g (its count is not zero): its first page word."""
    base = g << GROUP_SHIFT
    for _ in range(SCAN_TRIES):
        for p in range(base, base + SMALL):
            w = z[p, PG_CLAIM]
            if w != 0:
                return _named(p, w)
    return True, base, -1, 0                # counted, but its words came and went


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _group_holder(z, g, word):
    """Name whoever group word `word` (of group g) says holds a page of it."""
    large = word >> LARGE_SHIFT
    if large != 0:
        return _named(g << GROUP_SHIFT, large)
    if word & COUNT_MASK != 0:
        return _small_inside(z, g)
    return True, g << GROUP_SHIFT, -1, 0    # nobody


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _enclosing(z, g, order):
    """The marker of a large block of order > `order` whose block covers group g but which
    starts at another group: (found, first group, its large owner word).  At most six
    reads of the first groups of the blocks around g (the caller has written a word of
    its own before: see the protocol above)."""
    seen = g
    for j in range(max(order, GROUP_SHIFT) + 1, TOP + 1):
        first = g & ~((1 << (j - GROUP_SHIFT)) - 1)
        if first == seen:
            continue
        seen = first
        large = load_acquire(z, _group(z, first)) >> LARGE_SHIFT
        if large != 0 and g < first + (1 << (word_order(large) - GROUP_SHIFT)):
            return True, first, large
    return False, g, 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _any_claimed(z, lo, hi):
    """Whether any of group words lo..hi-1 is not 0: one OR over consecutive words, which
    LLVM vectorizes.  Plain loads: the caller's CAS before them is a locked instruction
    with acquire semantics, so neither the compiler nor the CPU serves them earlier."""
    words = flat_view(z)
    base = uint64(group_row0(z) * W)
    seen = 0
    for i in range(base + uint64(lo), base + uint64(hi)):
        seen |= words[i]
    return seen != 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _claimed_inside(z, lo, hi):
    """Name a claim in groups lo..hi-1 (none: nobody, at group lo's first page): one that
    `_any_claimed` saw, or one inside a block a hand-over found unclaimed."""
    for g in range(lo, hi):
        word = load_acquire(z, _group(z, g))
        if word != 0:
            return _group_holder(z, g, word)
    return True, lo << GROUP_SHIFT, -1, 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def claim(z, t, me, pfn, order):
    """Claim block (pfn, order) for slot `me`: all or nothing.  Returns (bad, q, k, w):
    bad when another claim overlaps it, then block (q, k) held by owner word w."""
    mine = owner_word(me, order)
    g0 = pfn >> GROUP_SHIFT
    row, col = _group(z, g0)
    if order < GROUP_SHIFT:
        old = fetch_add(z, (row, col), 1)
        if old >> LARGE_SHIFT != 0:
            fetch_add(z, (row, col), -1)
            return _named(pfn, old >> LARGE_SHIFT)
        found, first, large = _enclosing(z, g0, GROUP_SHIFT)
        if found:
            fetch_add(z, (row, col), -1)
            return _named(first << GROUP_SHIFT, large)
        for p in range(pfn, pfn + (1 << order)):
            old = cas(z, (p, PG_CLAIM), 0, mine)
            if old != 0:
                for q in range(pfn, p):
                    z[q, PG_CLAIM] = 0
                fetch_add(z, (row, col), -1)
                return _named(p, old)
        return False, 0, 0, 0
    large = mine << LARGE_SHIFT
    old = cas(z, (row, col), 0, large)
    if old != 0:
        return _group_holder(z, g0, old)
    if order > GROUP_SHIFT and _any_claimed(z, g0 + 1, g0 + (1 << (order - GROUP_SHIFT))):
        fetch_add(z, (row, col), -large)        # atomic: a racing small claim may add
        return _claimed_inside(z, g0 + 1, g0 + (1 << (order - GROUP_SHIFT)))
    found, first, other = _enclosing(z, g0, order)
    if found:
        fetch_add(z, (row, col), -large)
        return _named(first << GROUP_SHIFT, other)
    return False, 0, 0, 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def hand_over_claim(z, t, me, pfn, order, owner, new_owner):
    """Block (pfn, order) passes from slot `owner` to `new_owner` (-1: released).  Returns
    (bad, q, k, w) like `claim`, bad when a word was not `owner`'s: then block (q, k) of
    owner word w (0: nobody) is there.  Only words that were `owner`'s change."""
    expected, new = owner_word(owner, order), owner_word(new_owner, order)
    bad, q, k, w = False, pfn, -1, 0
    g0 = pfn >> GROUP_SHIFT
    row, col = _group(z, g0)
    if order < GROUP_SHIFT:
        large = z[row, col] >> LARGE_SHIFT
        if large != 0:
            return _named(pfn, large)           # inside someone's large block
        for p in range(pfn + (1 << order) - 1, pfn - 1, -1):   # head last
            old = cas(z, (p, PG_CLAIM), expected, new)
            if old != expected and (not bad or (w == 0 and old != 0)):
                bad, q, k, w = _named(p, old) if old != 0 else (True, pfn, -1, 0)
        if not bad and new_owner < 0:
            fetch_add(z, (row, col), -1)
        if bad and w == 0:
            return _holder_around(z, pfn, order)
        return bad, q, k, w
    old = z[row, col]
    while old >> LARGE_SHIFT == expected:       # keep a racing small claim's count
        seen = cas(z, (row, col), old, (old & COUNT_MASK) | (new << LARGE_SHIFT))
        if seen == old:
            return False, pfn, -1, 0
        old = seen
    if old != 0:
        return _group_holder(z, g0, old)
    return _holder_around(z, pfn, order)


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def _holder_around(z, pfn, order):
    """A hand-over found the block unclaimed where it starts: name who holds a page of it
    (a block around it, or one inside it), or nobody.  Only after a failed hand-over."""
    g0 = pfn >> GROUP_SHIFT
    found, first, large = _enclosing(z, g0, order)
    if found:
        return _named(first << GROUP_SHIFT, large)
    if order < GROUP_SHIFT:
        for p in range(pfn, pfn + (1 << order)):
            if z[p, PG_CLAIM] != 0:
                return _named(p, z[p, PG_CLAIM])
        return True, pfn, -1, 0
    return _claimed_inside(z, g0, g0 + (1 << (order - GROUP_SHIFT)))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def park(z, pfn, word):
    """A small block parked whole on a list (harness.pcp) carries `word` on its head and
    counts in its group.  Returns the head's old word (0 expected)."""
    old = cas(z, (pfn, PG_CLAIM), 0, word)
    if old == 0:
        row, col = _group(z, pfn >> GROUP_SHIFT)
        fetch_add(z, (row, col), 1)
    return old


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def park_claimed(z, pfn, order, owner, word):
    """A small block claimed by slot `owner`, the caller, parks whole on its list: its
    tail pages are released and its head passes from the owner's word to `word`; it stays
    counted in its group (claimed, then parked: one count either way).  Returns (bad, q,
    k, w) like hand_over_claim; only words that were `owner`'s change.

    Plain loads and stores, no locked instruction: a word that holds the caller's owner
    word changes only by the caller.  Every other thread's CAS expects 0 (a claim), its
    own word or the page cache's (a hand-over) or a list's word (a block leaving a list),
    never this one, so between the load and the store nobody else can change it.  Release
    stores, the head last."""
    expected = owner_word(owner, order)
    bad, q, k, w = False, pfn, -1, 0
    row, col = _group(z, pfn >> GROUP_SHIFT)
    large = z[row, col] >> LARGE_SHIFT
    if large != 0:
        return _named(pfn, large)               # inside someone's large block
    for p in range(pfn + (1 << order) - 1, pfn - 1, -1):
        old = z[p, PG_CLAIM]
        if old == expected:
            store_release(z, (p, PG_CLAIM), word if p == pfn else 0)
        elif not bad or (w == 0 and old != 0):
            bad, q, k, w = _named(p, old) if old != 0 else (True, pfn, -1, 0)
    return bad, q, k, w


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unpark_claimed(z, pfn, order, word, new_owner):
    """Undo `park_claimed` for slot `new_owner`: the head passes from `word` to its owner
    word (head first), the tail pages are claimed from 0; the group count stays.
    Returns (head's old word, bad, q, k, w): `word` expected; bad when a tail page was
    someone else's (block (q, k) of owner word w), and then that tail is left as it was."""
    mine = owner_word(new_owner, order)
    head = cas(z, (pfn, PG_CLAIM), word, mine)
    if head != word:
        return head, False, pfn, -1, 0
    for p in range(pfn + 1, pfn + (1 << order)):
        old = cas(z, (p, PG_CLAIM), 0, mine)
        if old != 0:
            bad, q, k, w = _named(p, old)
            return head, bad, q, k, w
    return head, False, pfn, -1, 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unpark(z, pfn, word):
    """Undo `park`.  Returns the head's old word (`word` expected)."""
    old = cas(z, (pfn, PG_CLAIM), word, 0)
    if old == word:
        row, col = _group(z, pfn >> GROUP_SHIFT)
        fetch_add(z, (row, col), -1)
    return old
