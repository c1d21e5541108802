"""`Workers`: the worker side of one run, which the runner drives.

It owns the workers' arrays (held blocks, reclaim batches, the page-cache
pool, the worker config array), seeds each thread's RNG rows, poisons the
pages when the poison detector is on, runs each thread's role loop, and
drains everything back into the zone at the end of a clean run.
"""

import numpy as np

from harness import layout as L
from harness.pcp import drain_all_pages
from harness.rng import seed_state
from workers.config import worker_config
from workers.detectors import POISON
from workers.drain import drain_held, drain_pool
from workers.held import new_held
from workers.pagecache import check_pagecache, new_pool
from workers.reclaimer import BATCH_MAX
from workers.roles import assign


class Workers:
    """The worker threads' state for run config `cfg` (harness.runner.RunConfig) on zone
    table `z` and thread table `t`."""

    def __init__(self, cfg, z, t):
        self.cfg, self.z, self.t = cfg, z, t
        self.roles = assign(cfg)
        for i in range(cfg.threads):
            t[i, L.T_STATE, L.T_RNG] = seed_state(cfg.seed, i)
            t[i, L.T_AUX, L.A_CHAOS_RNG] = seed_state(cfg.seed, 1000 + i)
        sec = L.Sections(z)
        if sec.flags[L.F_POISON]:
            sec.stamps[:] = POISON
            sec.contents[:] = POISON
        self.pool = new_pool(max(1, int(cfg.pages * cfg.pool_fraction)), cfg.pages)
        self.config = worker_config(cfg)
        self.held = [new_held(r.held(cfg)) for r in self.roles]
        self.nheld = [0] * cfg.threads
        self.batches = [np.zeros(BATCH_MAX if r.reclaims else 1, np.int64) for r in self.roles]

    def role(self, i):
        """The name of thread slot `i`'s role: "reclaimer" or "allocator"."""
        return self.roles[i].name

    def body(self, i):
        """Thread `i`'s body: one long nogil call of its role's loop."""
        self.nheld[i] = self.roles[i].run(self.z, self.t, i, self.pool, self.held[i],
                                          self.config, self.batches[i])

    def check(self):
        """Quiescent invariants of the page cache (reference counts, contents)."""
        return check_pagecache(self.z, self.pool)

    def drain(self):
        """Free every held block, page-cache page and per-CPU list (single-threaded, after
        the run);
        returns the number of frees the zone rejected."""
        rejected = 0
        for i in range(self.cfg.threads):
            rejected += drain_held(self.z, self.t, i, self.held[i], self.nheld[i])
        rejected += drain_pool(self.z, self.t, 0, self.pool)
        drain_all_pages(self.z, self.t, 0)          # the per-CPU lists, through the buddy
        return int(rejected)
