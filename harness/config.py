"""The run configuration: one declaration for defaults, validation, CLI options and the
reproduction command.

A `RunConfig` is valid by construction (`__post_init__` normalizes and checks
it, raising `ConfigError` with a one-line message), so every caller (CLI,
campaigns, the pytest fixture, benches) shares the same limits.  `OPTIONS`
maps every field to its CLI flag; `to_argv` is generated from it, so
`parse(to_argv(cfg)) == cfg` holds for every config (tested).
"""

import argparse
import math
import os
import shlex
from dataclasses import dataclass, field, fields

from harness import bare

DETECTORS = ("ownership", "poison", "invariants", "trace")
ALLOC_MIX = {0: 60.0, 1: 20.0, 2: 10.0, 3: 9.5, 9: 0.5}
RECLAIM_MIX = {k: 1.0 for k in range(4, 11)}
COSTLY_ORDER = 3                # reclaimers want orders above PAGE_ALLOC_COSTLY_ORDER
MAX_THREADS = 256               # one cap for every command
MAX_PAGES = 1 << 24             # 1 GiB of 64-byte page rows
MAX_SECONDS = 7 * 24 * 3600.0
MIN_STALL_S = 0.5               # below this a busy machine makes a false HANG likely
BATCH_MAX = 4096                # the reclaimer's scratch batch (workers.reclaimer.BATCH_MAX)
PCP_MAX = 1 << 16               # per-CPU batch and high, in blocks
CPUS = os.cpu_count() or 2
# Reclaim policies, in workers.config order: reclaim and retry; capture only the reclaimer's
# own frees; full capture; migrate a range empty; both.
POLICIES = ("off", "capture-own", "capture", "migrate", "migrate+capture")
CAPTURING = ("capture-own", "capture", "migrate+capture")


class ConfigError(ValueError):
    """An invalid setting; the message is one line naming the option."""


def refuse_bare():
    """Stress runs need their seams: ConfigError in a process running the bare build."""
    if bare.active():
        raise ConfigError(f"stress runs need the full build (detectors, lockdep, witness,"
                          f" faults, chaos, flight recorder): unset {bare.ENV}")


@dataclass
class RunConfig:
    threads: int = CPUS
    reclaimers: int = 1
    seconds: float = 10.0
    seed: int = 1
    pages: int = 1 << 16
    locking: str = "fine"
    capture: bool = True
    alloc_mix: dict = field(default_factory=lambda: dict(ALLOC_MIX))
    reclaim_mix: dict = field(default_factory=lambda: dict(RECLAIM_MIX))
    held: int = 2048                 # blocks an allocator holds at most
    reclaimer_held: int = 4          # high-order blocks a reclaimer holds at most
    cache_pct: int = 50              # % of freed order-0 pages that go to the page cache
    pool_fraction: float = 0.85      # page-cache capacity as a fraction of the zone
    batch_mul: int = 2               # a reclaim takes max(batch_min, batch_mul << order) pages
    batch_min: int = 32
    detectors: tuple = DETECTORS
    check_ms: int = 500              # quiescent invariant checks every this many ms (0: end only)
    stall_s: float = 5.0             # watchdog: no heartbeat for this long is a hang
    stop_on_violation: bool = True
    lockdep: bool = True              # about 1.1x; --no-lockdep for raw speed
    fault: str = ""
    chaos: float = 0.0
    schedule: str = "none"           # none, pct or pct-sites: controlled scheduling (harness.sched)
    pct_depth: int = 3               # PCT: bug depth d (d - 1 priority changes a round)
    pct_steps: int = 50000           # PCT: scheduling points a round (k); README: long rounds
    capture_lists: int = 0           # capture-list rows; 0: max(8, 2 * reclaimers)
    boundscheck: bool = False        # run the kernels compiled with bounds checks
    pcp: bool = True                 # per-CPU lists for orders 0..3 (harness.pcp), as in Linux
    pcp_batch: int = 16              # blocks a refill takes / a spill returns
    pcp_high: int = 96               # a free that leaves more blocks on a list spills a batch
    reclaim_policy: str = ""         # one of POLICIES; "" follows --capture/--no-capture

    def __post_init__(self):
        for f in OPTIONS:
            setattr(self, f.name, f.check(getattr(self, f.name)))
        if "invariants" not in self.detectors:
            self.check_ms = 0         # quiescent checks are the invariants detector
        if self.reclaimers > self.threads:
            raise ConfigError(f"--reclaimers ({self.reclaimers}) cannot exceed --threads"
                              f" ({self.threads})")
        if self.pcp_batch > self.pcp_high:
            raise ConfigError(f"--pcp-batch ({self.pcp_batch}) cannot exceed --pcp-high"
                              f" ({self.pcp_high})")
        if self.reclaim_policy:
            self.capture = self.reclaim_policy in CAPTURING
        if self.schedule == "none":
            self.pct_depth, self.pct_steps = RunConfig.pct_depth, RunConfig.pct_steps
        if self.fault:
            from harness.faults import BY_NAME
            where = BY_NAME[self.fault].schemes
            if self.locking not in where:
                raise ConfigError(f"--fault {self.fault} has no effect under --locking"
                                  f" {self.locking} (it acts in: {', '.join(where)})")
            if BY_NAME[self.fault].pcp and not self.pcp:
                raise ConfigError(f"--fault {self.fault} has no effect with --no-pcp"
                                  " (it is a fault of the per-CPU lists)")
            where = BY_NAME[self.fault].policies
            if where and self.policy not in where:
                raise ConfigError(f"--fault {self.fault} has no effect under --reclaim-policy"
                                  f" {self.policy} (it acts in: {', '.join(where)})")

    @property
    def policy(self):
        """The reclaim policy in effect: --reclaim-policy, else what --capture says."""
        return self.reclaim_policy or ("capture" if self.capture else "off")


# ---------------------------------------------------------------- value checks

def _int(low, high=None):
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{name} must be an integer, got {v!r}")
        if v < low or (high is not None and v > high):
            raise ConfigError(f"{name} must be in {low}..{high}, got {v}" if high is not None
                              else f"{name} must be >= {low}, got {v}")
        return v
    return check


def _float(low, high, low_open=False):
    def check(name, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{name} must be a finite number, got {v!r}")
        if v < low or v > high or (low_open and v == low):
            raise ConfigError(f"{name} must be in {'(' if low_open else '['}{low:g}, {high:g}],"
                              f" got {v:g}")
        return float(v)
    return check


def _choice(options):
    def check(name, v):
        if v not in options:
            raise ConfigError(f"{name} must be one of {', '.join(options)}, got {v!r}")
        return v
    return check


def _bool(name, v):
    if not isinstance(v, bool):
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    return v


def _pages(name, v):
    _int(1 << 10, MAX_PAGES)(name, v)
    if v % 1024:
        raise ConfigError(f"{name} must be a multiple of 1024, got {v}")
    return v


def _mix(low_order):
    def check(name, mix):
        if not isinstance(mix, dict) or not mix:
            raise ConfigError(f"{name} must map orders to weights, got {mix!r}")
        out = {}
        for order, w in sorted(mix.items()):
            if isinstance(order, bool) or not isinstance(order, int) or not 0 <= order <= 10:
                raise ConfigError(f"{name}: orders must be 0..10, got {order!r}")
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) \
                    or w < 0:
                raise ConfigError(f"{name}: weights must be finite and >= 0, got {w!r}")
            if w > 0:
                if order < low_order:
                    raise ConfigError(f"{name}: orders must be >= {low_order} (capture is for"
                                      f" costly orders), got {order}")
                out[order] = float(w)
        if not out:
            raise ConfigError(f"{name}: at least one weight must be > 0")
        return out
    return check


def _detectors(name, v):
    if isinstance(v, str):
        raise ConfigError(f"{name} must be a list of detector names, got {v!r}")
    names = tuple(v)
    bad = [n for n in names if n not in DETECTORS]
    if bad:
        raise ConfigError(f"{name}: unknown detector {bad[0]!r}; choose from"
                          f" {','.join(DETECTORS)} or none")
    return tuple(d for d in DETECTORS if d in names)


def _fault(name, v):
    if v in ("", None):
        return ""
    from harness.faults import BY_NAME
    if v not in BY_NAME:
        raise ConfigError(f"{name}: unknown fault {v!r}; choose from {', '.join(BY_NAME)}")
    return v


# ---------------------------------------------------------------- CLI text <-> values

def parse_mix(text):
    """"0:60,1:20,9:0.5" -> {0: 60.0, 1: 20.0, 9: 0.5} (range checks happen in the config)."""
    mix = {}
    try:
        for part in text.split(","):
            order, weight = part.split(":")
            mix[int(order)] = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"order mix must look like 0:60,1:20,9:0.5, got {text!r}") from None
    return mix


def format_mix(mix):
    return ",".join(f"{o}:{format_number(w)}" for o, w in sorted(mix.items()))


def format_number(v):
    """Shortest text that parses back to the same float; integers without '.0'."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def parse_detectors(text):
    if text == "none":
        return ()
    names = tuple(x for x in text.split(",") if x)
    if not names:
        raise argparse.ArgumentTypeError("give detector names, or none")
    return names


def parse_float(text):
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def parse_int(text):
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


@dataclass(frozen=True)
class Option:
    """One RunConfig field as a CLI option."""
    name: str            # RunConfig field
    flag: str            # --flag (for an inverted bool: the flag that sets it False)
    validate: object     # (name, value) -> normalized value, or raises ConfigError
    parse: object = None  # text -> value for argparse; None for a boolean flag
    fmt: object = str    # value -> text for to_argv
    help: str = ""
    inverted: bool = False   # a store_true flag that sets the field to False

    def check(self, value):
        return self.validate(self.flag, value)


OPTIONS = (
    Option("threads", "--threads", _int(1, MAX_THREADS), parse_int,
           help=f"worker threads (default: all cores, {CPUS}; at most {MAX_THREADS})"),
    Option("reclaimers", "--reclaimers", _int(0, MAX_THREADS), parse_int,
           help="how many of them are direct reclaimers (default 1)"),
    Option("seconds", "--seconds", _float(0.0, MAX_SECONDS, low_open=True), parse_float,
           format_number, help="run length in seconds (default 10)"),
    Option("seed", "--seed", _int(0, (1 << 62)), parse_int, help="run seed (default 1)"),
    Option("pages", "--pages", _pages, parse_int,
           help=f"zone size in pages, a multiple of 1024, at most {MAX_PAGES} (default 65536)"),
    Option("locking", "--locking", _choice(("fine", "zone")), str,
           help="lock scheme: fine (per block/list/order) or zone (one lock) (default fine)"),
    Option("capture", "--capture", _bool,
           help="reclaimers capture freed pages (default on)"),
    Option("alloc_mix", "--alloc-mix", _mix(0), parse_mix, format_mix,
           help="allocator order weights (default 0:60,1:20,2:10,3:9.5,9:0.5)"),
    Option("reclaim_mix", "--reclaim-mix", _mix(COSTLY_ORDER + 1), parse_mix, format_mix,
           help="reclaimer wanted-order weights, orders > 3 (default 4..10 uniform)"),
    Option("held", "--held", _int(1, 1 << 20), parse_int,
           help="blocks an allocator holds at most (default 2048)"),
    Option("reclaimer_held", "--reclaimer-held", _int(1, 1 << 10), parse_int,
           help="high-order blocks a reclaimer holds at most (default 4)"),
    Option("cache_pct", "--cache-pct", _int(0, 100), parse_int,
           help="%% of freed order-0 pages that go to the page cache (default 50)"),
    Option("pool_fraction", "--pool-fraction", _float(0.0, 1.0, low_open=True), parse_float,
           format_number, help="page-cache capacity as a fraction of the zone (default 0.85)"),
    Option("batch_mul", "--batch-mul", _int(0, 1 << 10), parse_int,
           help="a reclaim takes max(batch-min, batch-mul << order) pages (default 2)"),
    Option("batch_min", "--batch-min", _int(1, BATCH_MAX), parse_int,
           help="smallest reclaim batch in pages (default 32)"),
    Option("detectors", "--detectors", _detectors, parse_detectors,
           lambda v: ",".join(v) or "none",
           help="comma list of ownership,poison,invariants,trace, or none (default all)"),
    Option("check_ms", "--check-ms", _int(0, 1 << 30), parse_int,
           help="quiescent invariant checks every N ms, 0 = only at the end (default 500;"
                " needs the invariants detector)"),
    Option("stall_s", "--stall-seconds", _float(MIN_STALL_S, 3600.0), parse_float,
           format_number, help=f"watchdog: a thread without progress this long is a hang"
                               f" (default 5, at least {MIN_STALL_S:g})"),
    Option("stop_on_violation", "--keep-going", _bool, inverted=True,
           help="do not stop at the first violation"),
    Option("lockdep", "--lockdep", _bool,
           help="validate lock order while running (class graph, cycles, declaration);"
                " on by default (about 1.1x), --no-lockdep to switch it off"),
    Option("fault", "--fault", _fault, str,
           help="switch on a seeded locking fault (see `python -m harness faults --list`)"),
    Option("chaos", "--chaos", _float(0.0, 1.0), parse_float, format_number,
           help="delay injection at race windows with this probability, e.g. 0.01"),
    Option("schedule", "--schedule", _choice(("none", "pct", "pct-sites")), str,
           help="controlled scheduling at the race-window points: pct (priority changes at"
                " random points, one thread at a time through the points), pct-sites (the"
                " changes at the first point of random sites, so rare windows get them as"
                " often as common ones) or none (default)"),
    Option("pct_depth", "--pct-depth", _int(1, 16), parse_int,
           help="with --schedule pct[-sites]: the bug depth d, d - 1 priority changes a round"
                " (default 3)"),
    Option("pct_steps", "--pct-steps", _int(1, 1 << 40), parse_int,
           help="with --schedule pct[-sites]: scheduling points a round, k (default 50000: a"
                " demoted thread waits to the end of its round, so the other side of a race"
                " needs a long round to get there)"),
    Option("capture_lists", "--capture-lists", _int(0, 4096), parse_int,
           help="capture-list rows in the zone; 0: max(8, 2 x reclaimers) (default 0)"),
    Option("reclaim_policy", "--reclaim-policy", _choice(POLICIES + ("",)), str,
           help="what a reclaimer does for its block: off (reclaim, retry), capture-own"
                " (capture its own frees only), capture (full capture), migrate (also"
                " migrate an aligned range empty), migrate+capture (default: capture, or"
                " what --capture/--no-capture says)"),
    Option("boundscheck", "--boundscheck", _bool,
           help="run the kernels compiled with bounds checks (own cache; a stray index is"
                " reported with its kernel; about 2x slower, a first run compiles again)"),
    Option("pcp", "--pcp", _bool,
           help="per-CPU lists for orders 0..3 with batched refill/spill and remote drains"
                " (default on, as in Linux; --no-pcp: every operation goes to the buddy)"),
    Option("pcp_batch", "--pcp-batch", _int(1, PCP_MAX), parse_int,
           help="blocks a per-CPU list refills or spills at once (default 16)"),
    Option("pcp_high", "--pcp-high", _int(1, PCP_MAX), parse_int,
           help="a per-CPU list holding more blocks than this spills a batch (default 96;"
                " at least --pcp-batch)"),
)

# Workload presets (--preset NAME): defaults for other options; options given explicitly win.
PRESETS = {
    "reuse": {"threads": 4, "reclaimers": 2, "pages": 4096, "capture_lists": 2,
              "reclaimer_held": 2},
}
BY_FIELD = {o.name: o for o in OPTIONS}
assert set(BY_FIELD) == {f.name for f in fields(RunConfig)}, "every field needs a CLI option"

# Always written into a reproduction command, defaults or not: the default thread count
# depends on the machine, and these are what a reader looks for first.
ALWAYS = ("threads", "reclaimers", "seconds", "seed", "pages", "locking")


def add_options(parser):
    """Add one option per RunConfig field; values stay raw until `from_args` validates them."""
    for o in OPTIONS:
        if o.parse is None and o.inverted:
            parser.add_argument(o.flag, dest=o.name, action="store_false", default=None,
                                help=o.help)
        elif o.parse is None:
            parser.add_argument(o.flag, dest=o.name, action=argparse.BooleanOptionalAction,
                                default=None, help=o.help)
        else:
            parser.add_argument(o.flag, dest=o.name, type=o.parse, default=None,
                                metavar=o.name.upper(), help=o.help)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="workload preset: reuse = 2 capture-list rows, 2 reclaimers of"
                             " 4 threads, 4096 pages (explicit options win)")


def from_args(args, **overrides):
    """A RunConfig from parsed options (unset ones take their defaults)."""
    values = {o.name: getattr(args, o.name) for o in OPTIONS
              if getattr(args, o.name, None) is not None}
    preset = getattr(args, "preset", None)
    if preset:
        values = {**PRESETS[preset], **values}
    if values.get("check_ms") and "invariants" not in values.get("detectors", DETECTORS):
        raise ConfigError("--check-ms needs the invariants detector (see --detectors)")
    if values.get("reclaim_policy") and values.get("capture") is not None and \
            values["capture"] != (values["reclaim_policy"] in CAPTURING):
        raise ConfigError(f"--{'' if values['capture'] else 'no-'}capture contradicts"
                          f" --reclaim-policy {values['reclaim_policy']}")
    values.update(overrides)
    return RunConfig(**values)


def to_argv(cfg):
    """The stress options that rebuild `cfg`: ALWAYS fields plus every non-default one."""
    default = RunConfig(threads=cfg.threads, reclaimers=min(1, cfg.threads))
    argv = []
    for o in OPTIONS:
        value = getattr(cfg, o.name)
        if o.name not in ALWAYS and value == getattr(default, o.name):
            continue
        if o.name == "check_ms" and "invariants" not in cfg.detectors:
            continue                  # normalized to 0: the checks are off with the detector
        if o.name == "capture" and cfg.reclaim_policy:
            continue                  # the policy decides it
        if o.parse is None and o.inverted:
            if not value:
                argv.append(o.flag)
        elif o.parse is None:
            argv.append(o.flag if value else "--no-" + o.flag[2:])
        else:
            argv += [o.flag, o.fmt(value)]
    return argv


def repro_command(cfg):
    """The command line that re-runs `cfg` (real threads never replay exactly)."""
    return " ".join(shlex.quote(a) for a in
                    ["python", "-m", "harness", "stress", *to_argv(cfg)])


def from_dict(d):
    """A RunConfig from its saved form (JSON lists become tuples, keys of mixes ints)."""
    if not isinstance(d, dict):
        raise ConfigError(f"config must be an object, got {type(d).__name__}")
    unknown = set(d) - set(BY_FIELD)
    if unknown:
        raise ConfigError(f"unknown config field {sorted(unknown)[0]!r}")
    values = dict(d)
    for key in ("alloc_mix", "reclaim_mix"):
        if isinstance(values.get(key), dict):
            try:
                values[key] = {int(k): v for k, v in values[key].items()}
            except ValueError:
                raise ConfigError(f"{key} keys must be orders") from None
    if isinstance(values.get("detectors"), list):
        values["detectors"] = tuple(values["detectors"])
    return RunConfig(**values)


def to_dict(cfg):
    """JSON-ready form: mixes keyed by order text, tuples as lists."""
    out = {}
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else \
            {str(k): w for k, w in v.items()} if isinstance(v, dict) else v
    return out
