"""Command line: `python -m harness {stress,lockorder,faults,bench,report}`.

Every command checks its input and its output paths before any work starts
(bad usage: one line, exit 2), stops within a second on Ctrl-C, SIGTERM or
SIGHUP with what it has (exit 128 + signal), and never prints a traceback for
bad input or a full disk.  Exit statuses live in harness.verdict.
"""

import argparse
import json
import os
import sys

from harness import signals
from harness.config import MAX_THREADS, ConfigError, RunConfig, add_options, from_args, \
    parse_float, parse_int, parse_mix
from harness.result import ResultError, WriteError
from harness.verdict import EXIT_HANG, EXIT_USAGE, EXIT_VIOLATION, EXIT_WRITE


class UsageError(Exception):
    """Bad input: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def _at_least(low, high=None, kind=parse_int):
    """argparse type: a number (int or finite float) in low..high."""
    def parse(text):
        value = kind(text)
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(
                f"must be in {low:g}..{high:g}, got {text}" if high is not None
                else f"must be >= {low:g}, got {text}")
        return value
    return parse


def _positive_seconds(text):
    value = _at_least(0.0, 7 * 24 * 3600.0, parse_float)(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _thread_counts(text):
    counts = tuple(_at_least(1, MAX_THREADS)(x) for x in text.split(","))
    return counts


def _fault_names(text):
    from harness.faults import BY_NAME
    from harness.campaign import CLEAN
    names = [x for x in text.split(",") if x]
    bad = [n for n in names if n != CLEAN and n not in BY_NAME]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown fault {bad[0] if bad else text!r}; choose from clean, {', '.join(BY_NAME)}")
    return names


def build_parser():
    parser = _Parser(prog="python -m harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    stress = sub.add_parser("stress", help="the stress run: allocators and reclaimers on one zone")
    add_options(stress)
    stress.add_argument("--report-dir", default="reports", help="where reports go (default reports/)")
    stress.add_argument("--json", action="store_true",
                        help="print the saved result (JSON) to stdout instead of the summary")
    stress.add_argument("--dot", metavar="FILE", help="with --lockdep: write the lock graph for"
                        " Graphviz")

    order = sub.add_parser("lockorder", help="short lockdep runs of each scheme against the"
                           " declared lock order")
    order.add_argument("--seconds", type=_positive_seconds, default=3.0,
                       help="seconds per scheme (default 3)")
    order.add_argument("--threads", type=_at_least(2, MAX_THREADS),
                       default=max(2, os.cpu_count() or 2))
    order.add_argument("--seed", type=_at_least(0), default=1)
    order.add_argument("--fault", default="", help="check a seeded fault instead of the clean code")
    order.add_argument("--dot", metavar="PREFIX", help="write PREFIX-<scheme>.dot for each scheme")
    order.add_argument("--json", action="store_true")

    faults = sub.add_parser("faults", help="detection power: every seeded fault, N trials each")
    faults.add_argument("--list", action="store_true", help="list the faults and exit")
    faults.add_argument("--only", type=_fault_names,
                        help="comma list of fault names (and/or clean) to run")
    faults.add_argument("--trials", type=_at_least(1, 10000), default=10)
    faults.add_argument("--budget", type=_positive_seconds, default=10.0,
                        help="seconds per trial (default 10)")
    faults.add_argument("--chaos", type=_at_least(0.0, 1.0, parse_float), default=0.02,
                        help="delay-injection probability of the chaos mode (default 0.02)")
    faults.add_argument("--repro", type=_at_least(0, 100), default=3,
                        help="re-runs of the first detected trial (default 3)")
    faults.add_argument("--threads", type=_at_least(2, MAX_THREADS),
                        default=max(2, os.cpu_count() or 2))
    faults.add_argument("--pages", type=parse_int, default=1 << 14)
    faults.add_argument("--seed", type=_at_least(0), default=1)
    faults.add_argument("--report-dir", default="reports")
    faults.add_argument("--json", action="store_true")

    report = sub.add_parser("report", help="re-render a saved stress or campaign result")
    report.add_argument("file")

    bench = sub.add_parser("bench", help="allocator throughput: schemes x threads vs plain Python")
    bench.add_argument("--seconds", type=_positive_seconds, default=1.5,
                       help="measured seconds per variant (default 1.5)")
    bench.add_argument("--threads", type=_thread_counts, default=(1, 2),
                       help="comma-separated thread counts (default 1,2)")
    bench.add_argument("--repeats", type=_at_least(1, 1000), default=5,
                       help="runs per variant; the median is reported (default 5)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--overhead", action="store_true",
                       help="instead: stress throughput with detectors/lockdep on vs off")
    bench.add_argument("--capture-table", action="store_true",
                       help="instead: one stress run with capture off and one on, same seed")
    bench.add_argument("--reclaim-mix", type=parse_mix, default=None,
                       help="with --capture-table: reclaimer wanted-order weights")
    return parser


def _say(quiet):
    return (lambda m: None) if quiet else (lambda m: print(m, file=sys.stderr, flush=True))


# ---------------------------------------------------------------- stress

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
    from harness.report import summary
    from harness.result import check_writable_file, prepare_dir
    from harness.runner import run_stress, warm_up
    cfg = from_args(args)
    if args.dot and not cfg.lockdep:
        raise UsageError("--dot needs --lockdep (the graph is what lockdep observed)")
    prepare_dir(args.report_dir)
    if args.dot:
        check_writable_file(args.dot)
    say = _say(args.json)
    say("warm-up: compiling or loading the kernels...")
    warm = warm_up()
    say(f"warm-up: {warm:.2f} s")
    progress = None if args.json else Progress()
    say(f"running {cfg.threads} threads ({cfg.reclaimers} reclaimers) for {cfg.seconds:g} s"
        f" on {cfg.pages} pages, locking={cfg.locking}, capture={'on' if cfg.capture else 'off'}")
    result = run_stress(cfg, progress, warm_s=warm)
    if progress:
        progress.end()
    return publish(result, args, lambda path: summary(result, path))


def publish(result, args, render):
    """Save the result, then print it (JSON or `render(path)`); the exit status.

    When the report cannot be written the summary is still printed, with one
    error line and EXIT_WRITE, so a full disk never loses what the run saw.
    """
    from harness.result import save, to_json
    status, error = result["exit_status"], None
    path = None
    try:
        path = save(result, args.report_dir, result.get("kind", "stress"))
        if getattr(args, "dot", None) and result.get("lockdep"):
            from harness.lockdep import to_dot
            from harness.result import write_atomic
            write_atomic(args.dot, to_dot(result["lockdep"]))
    except WriteError as err:
        error = err
    print(to_json(result) if args.json else render(path), end="\n" if not args.json else "")
    if error:
        print(f"harness: error: the report was not saved: {error}", file=sys.stderr)
        return EXIT_WRITE if status in (0, EXIT_VIOLATION, EXIT_HANG) else status
    return status


# ---------------------------------------------------------------- lockorder

def cmd_lockorder(args):
    """Exit 0 when every scheme's observed graph is acyclic and inside the declaration,
    1 on a lock-order problem, 3 on a hang (a real deadlock), 128+signal when interrupted."""
    from harness.config import ConfigError
    from harness.faults import BY_NAME
    from harness.lockdep import render, to_dot
    from harness.result import check_writable_file, write_atomic
    from harness.runner import run_stress, warm_up
    if args.fault and args.fault not in BY_NAME:
        raise UsageError(f"--fault: unknown fault {args.fault!r}; choose from"
                         f" {', '.join(BY_NAME)}")
    if args.dot:
        for scheme in ("fine", "zone"):
            check_writable_file(f"{args.dot}-{scheme}.dot")
    warm = warm_up()
    status, out = 0, {}
    for scheme in ("fine", "zone"):
        try:
            cfg = RunConfig(threads=args.threads, reclaimers=1, seconds=args.seconds,
                            seed=args.seed, pages=1 << 14, locking=scheme, lockdep=True,
                            fault=args.fault, stop_on_violation=False, detectors=())
        except ConfigError as err:            # the fault has no site in this scheme
            out[scheme] = {"skipped": str(err)}
            if not args.json:
                print(f"{scheme}: skipped ({err})\n")
            continue
        _say(args.json)(f"lockorder: checking the {scheme} scheme for {args.seconds:g} s...")
        result = run_stress(cfg, warm_s=warm)
        analysis = result["lockdep"]
        out[scheme] = {"outcome": result["outcome"], "verdict": result["verdict"], **analysis}
        if result["outcome"] == "interrupted":
            status = result["exit_status"]
        elif result["outcome"] == "hang":
            status = max(status, EXIT_HANG)
        elif analysis["problems"]:
            status = max(status, EXIT_VIOLATION)
        if args.dot:
            write_atomic(f"{args.dot}-{scheme}.dot", to_dot(analysis))
        if not args.json:
            print(render(analysis))
            word = "OK" if not analysis["problems"] and result["outcome"] == "completed" else \
                "PROBLEMS" if result["outcome"] == "completed" else result["outcome"].upper()
            print(f"{scheme}: {word} ({result['outcome']},"
                  f" {result['totals']['ops']:,} ops)\n")
        if result["outcome"] == "interrupted":
            break
    if args.json:
        print(json.dumps(out, indent=1))
    return status


# ---------------------------------------------------------------- faults

def cmd_faults(args):
    from harness import faults as F
    from harness.campaign import CLEAN, exit_status, run_campaign, save_campaign, table
    from harness.result import prepare_dir
    if args.list:
        for f in F.FAULTS:
            print(f"{f.name:<24} caught by {'/'.join(f.detectors):<28} {f.what}")
        return 0
    names = args.only or [CLEAN] + [f.name for f in F.FAULTS]
    try:      # the trial configuration, checked once before anything runs
        template = RunConfig(threads=args.threads, reclaimers=1, seconds=args.budget,
                             seed=args.seed, pages=args.pages, lockdep=True,
                             chaos=args.chaos, check_ms=50, stall_s=2.0)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    prepare_dir(args.report_dir)
    say = _say(args.json)
    campaign = run_campaign(names, template, args.trials, args.repro, say)
    text = table(campaign)
    try:
        paths = save_campaign(campaign, text, args.report_dir)
        say(f"campaign saved: {paths[0]}")
    except WriteError as err:
        print(json.dumps(campaign, indent=1) if args.json else text)
        print(f"harness: error: the campaign was not saved: {err}", file=sys.stderr)
        return EXIT_WRITE
    print(json.dumps(campaign, indent=1) if args.json else text)
    return exit_status(campaign)


# ---------------------------------------------------------------- report

def cmd_report(args):
    from harness.campaign import table
    from harness.report import summary
    from harness.result import CAMPAIGN_SCHEMA, load
    result = load(args.file)
    if result["schema"] == CAMPAIGN_SCHEMA:
        print(table(result))
    else:
        print(summary(result, args.file))
    return 0


# ---------------------------------------------------------------- bench

def cmd_bench(args):
    from harness.bench import (format_bench, format_rows, run_bench, run_capture_table,
                               run_overhead)
    if args.reclaim_mix is not None and not args.capture_table:
        raise UsageError("--reclaim-mix applies to --capture-table only")
    if args.overhead and args.capture_table:
        raise UsageError("choose one of --overhead and --capture-table")
    threads = max(args.threads)
    if args.capture_table:       # check the configuration now, not after the first run
        RunConfig(threads=threads, seconds=args.seconds, capture=True,
                  **({"reclaim_mix": args.reclaim_mix} if args.reclaim_mix else {}))
    if not args.json:
        print("warming up (JIT compile or cache load)...", file=sys.stderr, flush=True)
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
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else text)
    return 0


COMMANDS = {"stress": cmd_stress, "lockorder": cmd_lockorder, "faults": cmd_faults,
            "bench": cmd_bench, "report": cmd_report}


def main(argv=None):
    restore = signals.install()
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, ResultError, WriteError) as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"harness: interrupted ({signals.signal_name(exc)})", file=sys.stderr)
        return signals.exit_status(exc)
    finally:
        restore()
