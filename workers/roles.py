"""The worker roles as a table: the first `count(cfg)` threads take the first role, and so on.

A role is its loop kernel (one long nogil call that runs until the stop word
is set and returns the number of blocks still held) and how many blocks a
thread of that role may hold.
"""

from dataclasses import dataclass
from typing import Callable

from workers.allocator import allocator_loop
from workers.reclaimer import reclaimer_loop


@dataclass(frozen=True)
class Role:
    name: str
    run: Callable        # (z, t, me, pool, held, cfg array, batch) -> blocks still held
    count: Callable      # RunConfig -> threads of this role (None: all the remaining threads)
    held: Callable       # RunConfig -> blocks a thread of this role holds at most
    reclaims: bool       # needs a reclaim batch array


ROLES = (
    Role("reclaimer", lambda z, t, me, pool, held, c, batch:
         reclaimer_loop(z, t, me, pool, held, c, batch),
         lambda cfg: cfg.reclaimers, lambda cfg: cfg.reclaimer_held, True),
    Role("allocator", lambda z, t, me, pool, held, c, batch:
         allocator_loop(z, t, me, pool, held, c),
         None, lambda cfg: cfg.held, False),
)
BY_NAME = {r.name: r for r in ROLES}


def assign(cfg):
    """The role of each of cfg.threads thread slots, in table order."""
    out = []
    for role in ROLES:
        n = cfg.threads - len(out) if role.count is None else role.count(cfg)
        out += [role] * max(0, min(n, cfg.threads - len(out)))
    assert len(out) == cfg.threads, "the last role takes the remaining threads"
    return out
