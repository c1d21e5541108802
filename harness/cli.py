"""Command line: `python -m harness {stress,bench,...}`.

Bad usage prints one line and exits 2; nothing here prints a traceback for
bad input.
"""

import argparse
import json
import os
import sys
import time


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _thread_counts(text):
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of ints: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("thread counts must be >= 1")
    return counts


def _int_at_least(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value
    return parse


def _order_mix(text):
    """"0:60,1:20,9:0.5" -> {0: 60.0, 1: 20.0, 9: 0.5}"""
    mix = {}
    try:
        for part in text.split(","):
            order, weight = part.split(":")
            mix[int(order)] = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"order mix must look like 0:60,1:20,9:0.5, got {text!r}") from None
    if not mix or any(not 0 <= o <= 10 for o in mix) or any(w < 0 for w in mix.values()) \
            or sum(mix.values()) <= 0:
        raise argparse.ArgumentTypeError(f"orders must be 0..10 with weights >= 0, got {text!r}")
    return mix


def _detectors(text):
    from harness.runner import DETECTORS
    names = () if text == "none" else tuple(x for x in text.split(",") if x)
    bad = [n for n in names if n not in DETECTORS]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown detector {bad[0]!r}; choose from {','.join(DETECTORS)} or none")
    return names


def _fault_name(text):
    from harness.faults import BY_NAME
    if text not in BY_NAME:
        raise argparse.ArgumentTypeError(
            f"unknown fault {text!r}; choose from {', '.join(BY_NAME)}")
    return text


def _probability(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a probability in 0..1, got {text}")
    return value


def add_run_options(p):
    """Options shared by every command that runs the stress workers."""
    from harness.runner import RunConfig
    d = RunConfig()
    p.add_argument("--threads", type=_int_at_least(1), default=d.threads,
                   help=f"worker threads (default: all cores, {d.threads})")
    p.add_argument("--reclaimers", type=_int_at_least(0), default=d.reclaimers,
                   help=f"how many of them are direct reclaimers (default {d.reclaimers})")
    p.add_argument("--seconds", type=_positive_float, default=d.seconds,
                   help=f"run length (default {d.seconds:g})")
    p.add_argument("--seed", type=_int_at_least(0), default=d.seed, help="run seed (default 1)")
    p.add_argument("--pages", type=_int_at_least(1), default=d.pages,
                   help=f"zone size in pages, a multiple of 1024 (default {d.pages})")
    p.add_argument("--locking", choices=("fine", "zone"), default=d.locking,
                   help="lock scheme (default fine)")
    p.add_argument("--capture", action=argparse.BooleanOptionalAction, default=d.capture,
                   help="reclaimers capture freed pages (default on)")
    p.add_argument("--alloc-mix", type=_order_mix, default=d.alloc_mix,
                   help="allocator order weights, e.g. 0:60,1:20,2:10,3:9.5,9:0.5")
    p.add_argument("--reclaim-mix", type=_order_mix, default=d.reclaim_mix,
                   help="reclaimer wanted-order weights (orders > 3), default 4..10 uniform")
    p.add_argument("--detectors", type=_detectors, default=d.detectors,
                   help="comma list of ownership,poison,invariants,trace, or none (default all)")
    p.add_argument("--check-ms", type=_int_at_least(0), default=d.check_ms,
                   help=f"quiescent invariant checks every N ms, 0 = only at the end"
                        f" (default {d.check_ms})")
    p.add_argument("--stall-seconds", type=_positive_float, default=d.stall_s,
                   help=f"watchdog: a thread without progress this long is a hang"
                        f" (default {d.stall_s:g})")
    p.add_argument("--lockdep", action="store_true",
                   help="validate lock order while running (class graph, cycles, declaration)")
    p.add_argument("--fault", type=_fault_name, default=None,
                   help="switch on a seeded locking fault (see `python -m harness faults --list`)")
    p.add_argument("--chaos", type=_probability, default=0.0,
                   help="delay injection at race windows with this probability, e.g. 0.01")
    p.add_argument("--keep-going", action="store_true",
                   help="do not stop at the first violation")
    p.add_argument("--report-dir", default="reports", help="where reports go (default reports/)")
    p.add_argument("--json", action="store_true", help="print the result JSON to stdout")


def run_config(args):
    """A RunConfig from parsed options; bad combinations raise UsageError."""
    from harness.runner import RunConfig
    if args.reclaimers > args.threads:
        raise UsageError(f"--reclaimers ({args.reclaimers}) cannot exceed --threads"
                         f" ({args.threads})")
    if args.pages % 1024:
        raise UsageError(f"--pages must be a multiple of 1024, got {args.pages}")
    if args.pages > 1 << 24:
        raise UsageError(f"--pages {args.pages} is too large (at most {1 << 24}, 1 GiB of"
                         " page structs)")
    if args.threads > 256:
        raise UsageError(f"--threads {args.threads} is too many (at most 256)")
    if any(o <= 3 for o, w in args.reclaim_mix.items() if w > 0):
        raise UsageError("--reclaim-mix orders must be > 3 (capture is for costly orders)")
    if "invariants" not in args.detectors:
        args.check_ms = 0
    return RunConfig(threads=args.threads, reclaimers=args.reclaimers, seconds=args.seconds,
                     seed=args.seed, pages=args.pages, locking=args.locking, capture=args.capture,
                     alloc_mix=args.alloc_mix, reclaim_mix=args.reclaim_mix,
                     detectors=args.detectors, check_ms=args.check_ms, stall_s=args.stall_seconds,
                     stop_on_violation=not args.keep_going,
                     lockdep=getattr(args, "lockdep", False),
                     fault=getattr(args, "fault", "") or "",
                     chaos=getattr(args, "chaos", 0.0) or 0.0)


def build_parser():
    parser = _Parser(prog="python -m harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    stress = sub.add_parser("stress", help="the stress run: allocators and reclaimers on one zone")
    add_run_options(stress)
    stress.add_argument("--dot", metavar="FILE", help="with --lockdep: write the lock graph for"
                        " Graphviz")

    order = sub.add_parser("lockorder", help="short lockdep runs of each scheme against the"
                           " declared lock order")
    order.add_argument("--seconds", type=_positive_float, default=3.0,
                       help="seconds per scheme (default 3)")
    order.add_argument("--threads", type=_int_at_least(2), default=max(2, os.cpu_count() or 2))
    order.add_argument("--seed", type=_int_at_least(0), default=1)
    order.add_argument("--fault", type=_fault_name, default=None,
                       help="check a seeded fault instead of the clean code")
    order.add_argument("--dot", metavar="PREFIX",
                       help="write PREFIX-<scheme>.dot for each scheme")
    order.add_argument("--json", action="store_true")

    faults = sub.add_parser("faults", help="detection power: every seeded fault, N trials each")
    faults.add_argument("--list", action="store_true", help="list the faults and exit")
    faults.add_argument("--only", type=lambda t: [_fault_name(x) if x != "clean" else x
                                                  for x in t.split(",")],
                        help="comma list of fault names (and/or clean) to run")
    faults.add_argument("--trials", type=_int_at_least(1), default=10)
    faults.add_argument("--budget", type=_positive_float, default=10.0,
                        help="seconds per trial (default 10)")
    faults.add_argument("--chaos", type=_probability, default=0.02,
                        help="delay-injection probability of the chaos mode (default 0.02)")
    faults.add_argument("--repro", type=_int_at_least(0), default=3,
                        help="re-runs of the first detected trial (default 3)")
    faults.add_argument("--threads", type=_int_at_least(2), default=max(2, os.cpu_count() or 2))
    faults.add_argument("--pages", type=_int_at_least(1024), default=1 << 14)
    faults.add_argument("--seed", type=_int_at_least(0), default=1)
    faults.add_argument("--report-dir", default="reports")
    faults.add_argument("--json", action="store_true")

    report = sub.add_parser("report", help="re-render the summary of a saved report")
    report.add_argument("file")

    bench = sub.add_parser("bench", help="allocator throughput: schemes x threads vs plain Python")
    bench.add_argument("--seconds", type=_positive_float, default=1.5,
                       help="measured seconds per variant (default 1.5)")
    bench.add_argument("--threads", type=_thread_counts, default=(1, 2),
                       help="comma-separated thread counts (default 1,2)")
    bench.add_argument("--repeats", type=int, default=5,
                       help="runs per variant; the median is reported (default 5)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--overhead", action="store_true",
                       help="instead: stress throughput with detectors/lockdep on vs off")
    bench.add_argument("--capture-table", action="store_true",
                       help="instead: one stress run with capture off and one on, same seed")
    bench.add_argument("--reclaim-mix", type=_order_mix, default=None,
                       help="with --capture-table: reclaimer wanted-order weights")
    return parser


def cmd_bench(args):
    from harness.bench import format_bench, run_bench
    if args.repeats < 1:
        raise UsageError("--repeats must be >= 1")
    from harness.bench import format_rows, run_capture_table, run_overhead
    if not args.json:
        print("warming up (JIT compile or cache load)...", file=sys.stderr, flush=True)
    threads = max(args.threads)
    if args.overhead:
        result = run_overhead(args.seconds, threads)
        text = "\n".join([f"stress ops/s, {threads} threads, best of 2 interleaved runs:"] +
                          [f"  {k:<10} {v:14,.0f} ops/s   slowdown {result['slowdown'][k]:.2f}x"
                           for k, v in result["ops_per_s"].items()])
    elif args.capture_table:
        result = run_capture_table(args.seconds, threads, reclaim_mix=args.reclaim_mix)
        text = format_rows("capture off vs on (same seed and settings):", result)
    else:
        result = run_bench(args.seconds, args.threads, args.repeats)
        text = format_bench(result)
    print(json.dumps(result, indent=2) if args.json else text)
    return 0


class Progress:
    """A live progress line on a terminal, plain periodic lines otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream, self.tty = stream, stream.isatty()
        self.last_ops, self.last_t = 0, 0.0

    def __call__(self, run, sample):
        dt = sample["t"] - self.last_t
        rate = (sample["ops"] - self.last_ops) / dt if dt > 0 else 0
        self.last_ops, self.last_t = sample["ops"], sample["t"]
        tries, oks = sample["high_attempts"], sample["high_successes"]
        high = f"{100 * oks / tries:.0f}% of {tries}" if tries else "-"
        line = (f"[{sample['t']:6.1f}s / {run.cfg.seconds:g}s] {rate:13,.0f} ops/s  "
                f"high-order ok {high}  violations {sample['violations']}")
        if self.tty:
            self.stream.write("\r" + line + "\033[K")
        elif int(sample["t"]) % 2 == 0 or sample["violations"]:
            self.stream.write(line + "\n")
        self.stream.flush()

    def end(self):
        if self.tty:
            self.stream.write("\n")


def cmd_stress(args):
    from harness.report import save, summary
    from harness.runner import Run, collect, warm_up
    cfg = run_config(args)
    quiet = args.json
    say = (lambda *a: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    say("warm-up: compiling or loading the kernels...")
    warm = warm_up()
    say(f"warm-up: {warm:.2f} s")
    progress = None if quiet else Progress()
    run = Run(cfg, progress)
    say(f"running {cfg.threads} threads ({cfg.reclaimers} reclaimers) for {cfg.seconds:g} s"
        f" on {cfg.pages} pages, locking={cfg.locking}, capture={'on' if cfg.capture else 'off'}")
    wall, cpu = run.execute()
    if progress:
        progress.end()
    result = collect(run, wall, cpu, warm, run.finish())
    path = save(result, args.report_dir)
    result["report_path"] = path
    if args.dot and result["lockdep"]:
        from harness.lockdep import to_dot
        from harness.report import write_atomic
        write_atomic(args.dot, to_dot(result["lockdep"]))
    if args.json:
        print(json.dumps(result, indent=1, default=str))
    else:
        print(summary(result))
    return result["exit_status"]


def cmd_report(args):
    from harness.report import summary
    try:
        with open(args.file) as f:
            result = json.load(f)
        if not isinstance(result, dict):
            raise ValueError("not a report object")
        print(summary(result))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(f"cannot read report {args.file}: {err}") from None
    return 0


def cmd_lockorder(args):
    """Exit 0 when every scheme's observed graph is acyclic and inside the declaration."""
    from harness.lockdep import render, to_dot
    from harness.report import write_atomic
    from harness.runner import RunConfig, run_stress
    status, out = 0, {}
    for scheme in ("fine", "zone"):
        cfg = RunConfig(threads=args.threads, reclaimers=1, seconds=args.seconds, seed=args.seed,
                        pages=1 << 14, locking=scheme, lockdep=True, fault=args.fault or "",
                        stop_on_violation=False, check_ms=0, detectors=())
        result = run_stress(cfg)
        analysis = result["lockdep"]
        out[scheme] = analysis
        if analysis["problems"] or result["outcome"] != "completed":
            status = 1
        if args.dot:
            write_atomic(f"{args.dot}-{scheme}.dot", to_dot(analysis))
        if not args.json:
            print(render(analysis))
            print(f"{scheme}: {'OK' if not analysis['problems'] else 'PROBLEMS'}"
                  f" ({result['outcome']}, {sum(t['ops'] for t in result['threads']):,} ops)\n")
    if args.json:
        print(json.dumps(out, indent=1))
    return status


def cmd_faults(args):
    from harness import faults as F
    from harness.campaign import CLEAN, escaped, run_campaign, table
    from harness.report import write_atomic
    if args.list:
        for f in F.FAULTS:
            print(f"{f.name:<24} caught by {'/'.join(f.detectors):<28} {f.what}")
        return 0
    if args.pages % 1024:
        raise UsageError(f"--pages must be a multiple of 1024, got {args.pages}")
    names = args.only or [CLEAN] + [f.name for f in F.FAULTS]
    log = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    result = run_campaign(names, args.trials, args.budget, args.chaos, args.repro, args.threads,
                          args.pages, args.seed, log)
    text = table(result)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    write_atomic(os.path.join(args.report_dir, f"faults-{stamp}.json"),
                 json.dumps(result, indent=1))
    write_atomic(os.path.join(args.report_dir, f"faults-{stamp}.md"), text + "\n")
    print(json.dumps(result, indent=1) if args.json else text)
    return 1 if escaped(result) else 0


COMMANDS = {"stress": cmd_stress, "lockorder": cmd_lockorder, "faults": cmd_faults, "bench": cmd_bench, "report": cmd_report}


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
