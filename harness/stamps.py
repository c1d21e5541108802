"""The poison detector's page stamps: what a page's 16 bits of contents say (pure Python,
so that readers of results can decode them without the kernels).

A stamp is an owner field (bits 7..15) and a 7-bit sequence.  Owner field 0 is never a
tag's: POISON, the contents of a free page, has it.  Thread slot s stamps its blocks with
owner field s + 1 and its allocation's sequence number; the page cache stamps its pages
with CACHE and 7 bits mixed from the caching thread and its sequence.  So a stamp names
its owner exactly, and the allocation modulo 128.
"""

BITS = 16                               # a stamp's width (harness.layout stores them)
SEQ_BITS = 7
SEQ_MASK = (1 << SEQ_BITS) - 1
CACHE = (1 << (BITS - SEQ_BITS)) - 1    # owner field of the page cache's keys
POISON = 0x6B                           # Linux's POISON_FREE byte; owner field 0
assert POISON >> SEQ_BITS == 0


def describe(stamp):
    """What a page holding `stamp` holds: "poison" (a free page's contents), "thread N's
    stamp", "the page cache's stamp", or the raw value when it is none of these."""
    owner = int(stamp) >> SEQ_BITS
    if owner == 0 or owner > CACHE:
        return "poison" if stamp == POISON else f"{int(stamp):#x} (not a stamp)"
    return "the page cache's stamp" if owner == CACHE else f"thread {owner - 1}'s stamp"
