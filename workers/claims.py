"""Ownership claims: which thread holds which buddy block, checked on every claim and release.

Two buddy blocks are disjoint or one contains the other.  A claim is all or nothing, and
its cost depends on the order only through the number of 16-page groups it covers:

  small  a block of order 0..3 lies inside one group (the order-4 block around it).
         Its claim adds 1 to the group's count (a locked add, which also reads whether an
         enclosing large block is claimed), CASes its owner word into its head page's
         row (PG_CLAIM), then reads the heads of the small blocks around it (at most 3)
         and the rows of its other pages (at most 7).  Only heads carry words, so a
         block that changes hands in place (below) writes one word whatever its order.
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

Never two overlapping claims silently.  Two small ones with the same head meet on its
word, which only one CAS from 0 can win; otherwise the smaller one's head is a page of
the larger one, other than its head: each CASes its head, then reads the other's (the
larger reads its pages, the smaller the heads around it).  Two blocks that share their
first group (a small one in a large one's first group, or two large ones starting at the
same group) meet on that word: the locked add sees the marker, or the CAS from 0 sees the
count or the other marker.  Otherwise one block lies inside the other and starts at a
group G the outer one covers: the inner claim writes G (add or CAS), then reads the
outer one's first group; the outer claim writes its first group (CAS), then reads G.
Each write is a locked instruction, a full fence, so the reads after it cannot be
served before it (Dekker's protocol): at least one of the two sees the other.  A failed
claim undoes what it took and names the other block and its owner (`claim` returns
(bad, other pfn, other order, other owner word)).

A release completes before the zone free that lets the pages be allocated again, so in
a correct allocator a claim never meets a stale word.

A claimed block's head word is never 0 until its release, so a hand-over in place (one
owner word to another, never through 0) needs no second look: any claim that overlaps
the block meets the word, or is seen by the look that followed the block's own claim.

Parked blocks (harness.pcp: a small block on a per-CPU list) carry a list's word on
their head and count in their group (`park`, a claim like any other, and `unpark`, for
blocks that come from or go back to the buddy).  A block the owner frees onto its own
list, and one it takes off it, changes hands in place (`park_claimed`, `unpark_claimed`):
a plain load and store of the head onto the list (only the owner changes its own word),
one CAS of the head off it, the group's count untouched, where a release and a park (or
an unpark and a claim) would also add to and subtract from the group word twice.  A
release (or a hand-over to a new owner) checks the head's word is the expected owner's
and names whoever else is there.
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
def _small_overlap(z, pfn, order):
    """After the caller's CAS of small block (pfn, order)'s head: a claimed small block
    around it (the heads of the order-(order+1..3) blocks that contain it) or inside it
    (its other pages' rows).  (bad, q, k, w) like `claim`."""
    for j in range(order + 1, GROUP_SHIFT):
        head = (pfn >> j) << j
        if head != pfn:
            word = load_acquire(z, (head, PG_CLAIM))
            if word != 0 and pfn < head + (1 << word_order(word)):
                return _named(pfn, word)
    for p in range(pfn + 1, pfn + (1 << order)):
        word = load_acquire(z, (p, PG_CLAIM))
        if word != 0:
            return _named(p, word)
    return False, pfn, -1, 0


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _claim_small(z, pfn, order, word):
    """Claim small block (pfn, order) with owner word `word`: count it in its group, CAS
    its head from 0, then look around and inside it.  Returns (head's old word, bad, q,
    k, w) like `claim`; when bad, nothing is left taken."""
    row, col = _group(z, pfn >> GROUP_SHIFT)
    old = fetch_add(z, (row, col), 1)
    if old >> LARGE_SHIFT != 0:
        fetch_add(z, (row, col), -1)
        bad, q, k, w = _named(pfn, old >> LARGE_SHIFT)
        return 0, bad, q, k, w
    found, first, large = _enclosing(z, pfn >> GROUP_SHIFT, GROUP_SHIFT)
    if found:
        fetch_add(z, (row, col), -1)
        bad, q, k, w = _named(first << GROUP_SHIFT, large)
        return 0, bad, q, k, w
    head = cas(z, (pfn, PG_CLAIM), 0, word)
    if head != 0:
        fetch_add(z, (row, col), -1)
        bad, q, k, w = _named(pfn, head)
        return head, bad, q, k, w
    bad, q, k, w = _small_overlap(z, pfn, order)
    if bad:
        store_release(z, (pfn, PG_CLAIM), 0)
        fetch_add(z, (row, col), -1)
    return 0, bad, q, k, w


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def claim(z, t, me, pfn, order):
    """Claim block (pfn, order) for slot `me`: all or nothing.  Returns (bad, q, k, w):
    bad when another claim overlaps it, then block (q, k) held by owner word w."""
    mine = owner_word(me, order)
    if order < GROUP_SHIFT:
        head, bad, q, k, w = _claim_small(z, pfn, order, mine)
        return bad, q, k, w
    g0 = pfn >> GROUP_SHIFT
    row, col = _group(z, g0)
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
    (bad, q, k, w) like `claim`, bad when the block's word was not `owner`'s: then block
    (q, k) of owner word w (0: nobody) is there.  Only a word that was `owner`'s changes."""
    expected, new = owner_word(owner, order), owner_word(new_owner, order)
    g0 = pfn >> GROUP_SHIFT
    row, col = _group(z, g0)
    if order < GROUP_SHIFT:
        large = z[row, col] >> LARGE_SHIFT
        if large != 0:
            return _named(pfn, large)           # inside someone's large block
        old = cas(z, (pfn, PG_CLAIM), expected, new)
        if old == expected:
            if new_owner < 0:
                fetch_add(z, (row, col), -1)
            return False, pfn, -1, 0
        return _head_holder(z, pfn, order, old)
    old = z[row, col]
    while old >> LARGE_SHIFT == expected:       # keep a racing small claim's count
        seen = cas(z, (row, col), old, (old & COUNT_MASK) | (new << LARGE_SHIFT))
        if seen == old:
            return False, pfn, -1, 0
        old = seen
    if old != 0:
        return _group_holder(z, g0, old)
    return _holder_around(z, pfn, order)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _head_holder(z, pfn, order, old):
    """(bad, q, k, w) for small block (pfn, order) whose head held `old` where a hand-over
    expected its owner's word: the block of that word, or, the head being unclaimed, who
    holds a page of it (`_holder_around`)."""
    if old != 0:
        return _named(pfn, old)
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
        head = z[pfn, PG_CLAIM]             # read once: the name is the word that was there
        if head != 0:
            return _named(pfn, head)
        bad, q, k, w = _small_overlap(z, pfn, order)
        return True, q, k, w
    return _claimed_inside(z, g0, g0 + (1 << (order - GROUP_SHIFT)))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def park(z, pfn, order, word):
    """A small block from the buddy parks whole on a list (harness.pcp): it is claimed
    with the list's owner word `word` like any small block.  Returns (head's old word, bad,
    q, k, w): 0 expected; bad when another claim overlaps it (block (q, k) of owner word
    w), and then it is not parked."""
    return _claim_small(z, pfn, order, word)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def park_claimed(z, pfn, order, owner, word):
    """A small block claimed by slot `owner`, the caller, parks whole on its list: its
    head passes from the owner's word to `word`; it stays counted in its group (claimed,
    then parked: one count either way).  Returns (bad, q, k, w) like hand_over_claim;
    only a word that was `owner`'s changes.

    A plain load and a release store, no locked instruction: a word that holds the
    caller's owner word changes only by the caller.  Every other thread's CAS expects 0
    (a claim), its own word or the page cache's (a hand-over) or a list's word (a block
    leaving a list), never this one, so between the load and the store nobody else can
    change it."""
    row, col = _group(z, pfn >> GROUP_SHIFT)
    large = z[row, col] >> LARGE_SHIFT
    if large != 0:
        return _named(pfn, large)               # inside someone's large block
    old = z[pfn, PG_CLAIM]
    if old == owner_word(owner, order):
        store_release(z, (pfn, PG_CLAIM), word)
        return False, pfn, -1, 0
    return _head_holder(z, pfn, order, old)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unpark_claimed(z, pfn, order, word, new_owner):
    """Undo `park_claimed` for slot `new_owner`: the head passes from `word` to its owner
    word, one CAS; the group count stays.  Returns the head's old word (`word` expected;
    otherwise nothing changed)."""
    return cas(z, (pfn, PG_CLAIM), word, owner_word(new_owner, order))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unpark(z, pfn, word):
    """Undo `park`.  Returns the head's old word (`word` expected)."""
    old = cas(z, (pfn, PG_CLAIM), word, 0)
    if old == word:
        row, col = _group(z, pfn >> GROUP_SHIFT)
        fetch_add(z, (row, col), -1)
    return old
