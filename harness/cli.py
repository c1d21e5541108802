"""Command line: `python -m harness {stress,lockorder,faults,mutants,nightly,bench,report,experiment}`.

Every command checks its input and its output paths before any work starts
(bad usage: one line, exit 2), stops within a second on Ctrl-C, SIGTERM or
SIGHUP with what it has (exit 128 + signal), and never prints a traceback for
bad input or a full disk.  Exit statuses live in harness.verdict.
"""

import argparse
import dataclasses
import json
import os
import sys
import time

from harness import bare, signals
from harness.config import MAX_THREADS, POLICIES, ConfigError, RunConfig, add_options, \
    from_args, parse_float, parse_int, parse_mix, refuse_bare
from harness.result import ResultError, WriteError, write_atomic
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


def _policies(text):
    names = tuple(x for x in text.split(",") if x)
    bad = [n for n in names if n not in POLICIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"policies must be a comma list of"
                                         f" {', '.join(POLICIES)}, got {text!r}")
    return names


def _order_ranges(text):
    from harness.experiment import parse_ranges
    try:
        return parse_ranges(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    _engine_options(faults)

    mutants = sub.add_parser("mutants", help="lock mutants generated from the kernel source,"
                             " each compiled and run until a detector kills it")
    mutants.add_argument("--list", action="store_true",
                         help="print the mutants (id, operator, schemes, what) and exit")
    mutants.add_argument("--diff", action="store_true", help="with --list: each mutant's edit")
    mutants.add_argument("--only", type=lambda x: [i for i in x.split(",") if i],
                         help="comma list of mutant ids to run")
    mutants.add_argument("--budget", type=_positive_seconds, default=5.0,
                         help="seconds per trial (default 5)")
    mutants.add_argument("--trials", type=_at_least(1, 1000), default=2,
                         help="trials per mutant and scheme, stopping at the first kill"
                         " (default 2)")
    mutants.add_argument("--chaos", type=_at_least(0.0, 1.0, parse_float), default=0.02,
                         help="delay-injection probability (default 0.02)")
    mutants.add_argument("--threads", type=_at_least(2, MAX_THREADS), default=2)
    mutants.add_argument("--pages", type=parse_int, default=1 << 14)
    mutants.add_argument("--seed", type=_at_least(0), default=1)
    mutants.add_argument("--compile-jobs", type=_at_least(1, 64),
                         default=max(1, os.cpu_count() or 1),
                         help="mutants compiled at once (default: one per core)")
    mutants.add_argument("--work-dir", help="keep each mutant's source tree and kernel cache"
                         " here (default: a temporary folder, removed at the end)")
    mutants.add_argument("--report-dir", default="reports")
    mutants.add_argument("--json", action="store_true")
    _engine_options(mutants)

    nightly = sub.add_parser("nightly", help="time-budgeted race detection over a matrix, with"
                             " canaries, failure buckets and history (also: merge, report)")
    nightly.add_argument("verb", nargs="?", choices=("run", "merge", "report"), default="run",
                         help="run (default) a night or a shard; merge shard outputs; report:"
                         " re-render a night.json")
    nightly.add_argument("paths", nargs="*", help="merge: shard output folders; report: a"
                         " night.json")
    nightly.add_argument("--budget", default="30m",
                         help="wall time for the whole night, e.g. 90s, 30m, 2h (default 30m)")
    nightly.add_argument("--matrix", metavar="TOML", help="the matrix (default: built in)")
    nightly.add_argument("--show-matrix", action="store_true",
                         help="print the matrix's cells and TOML, then exit")
    nightly.add_argument("--shard", default="1/1", help="run slice i of N of the trials (i/N)")
    nightly.add_argument("--seed", type=_at_least(0, 1 << 40), default=None,
                         help="night seed (default: days since 1970, UTC: shards of a night agree)")
    nightly.add_argument("--rounds", type=_at_least(1, 1000), default=None,
                         help="seeds per cell (default: as many as the budget fits)")
    nightly.add_argument("--trial-seconds", type=_positive_seconds, default=None,
                         help="fix each cell trial's length (default: fitted to the budget)")
    nightly.add_argument("--mutants", type=_at_least(0, 100), default=None, metavar="N",
                         help="lock mutants a night, in rotation (default: the matrix's"
                         " [mutants] per_night; the built-in matrix runs 1; 0: none)")
    nightly.add_argument("--repro", type=_at_least(0, 20), default=3,
                         help="re-runs of the first trial of each new bucket (default 3)")
    nightly.add_argument("--out", help="output folder (default reports/nightly-<time>)")
    nightly.add_argument("--history", default=None,
                         help="SQLite history (default reports/history.sqlite)")
    nightly.add_argument("--label", help="the night's name in the history (default: its date)")
    nightly.add_argument("--format", choices=("md", "junit", "html", "json"), default="md",
                         help="report: what to print (default md)")
    _engine_options(nightly)

    exp = sub.add_parser("experiment", help="reclaim policies x wanted-order ranges x seeds:"
                         " success, time to block, pages moved or captured, throughput")
    exp.add_argument("--policies", type=_policies, default=POLICIES,
                     help=f"comma list of reclaim policies (default {','.join(POLICIES)})")
    exp.add_argument("--orders", type=_order_ranges, default=((4, 6), (7, 10)),
                     help="wanted-order ranges, e.g. 4-6,7-10 (default)")
    exp.add_argument("--seeds", type=_at_least(1, 1000), default=5,
                     help="trials (seeds) per cell (default 5)")
    exp.add_argument("--report-dir", default="reports")
    _engine_options(exp)
    add_options(exp)                  # every stress option passes through to each trial
    report = sub.add_parser("report", help="re-render a saved stress, campaign or nightly result")
    report.add_argument("file")

    bench = sub.add_parser("bench", help="allocator throughput: schemes (with and without per-CPU"
                                         " lists) x threads vs plain Python and C")
    bench.add_argument("--seconds", type=_positive_seconds, default=1.5,
                       help="measured seconds per variant (default 1.5)")
    bench.add_argument("--threads", type=_thread_counts, default=None,
                       help="comma-separated thread counts (default 1,2,4,8; with --overhead"
                            " or --capture-table the largest is used, default 2)")
    bench.add_argument("--repeats", type=_at_least(1, 1000), default=3,
                       help="runs per variant (with --overhead: interleaved rounds); the median"
                            " is reported (default 3)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.add_argument("--overhead", action="store_true",
                       help="instead: stress throughput with detectors/lockdep on vs off")
    bench.add_argument("--processes", type=_at_least(1, 100), default=1, metavar="N",
                       help="with --overhead: measure in N fresh processes, one after another,"
                            " and give each slowdown's median over them (slowdowns move from"
                            " one process to the next; default 1: this process)")
    bench.add_argument("--per-detector", action="store_true",
                       help="with --overhead: each detector alone (and lockdep alone)")
    bench.add_argument("--capture-table", action="store_true",
                       help="instead: one stress run with capture off and one on, same seed")
    bench.add_argument("--reclaim-mix", type=parse_mix, default=None,
                       help="with --capture-table: reclaimer wanted-order weights")
    bench.add_argument("--stamps", action="store_true",
                       help="instead: cost per event of flight-recorder timestamp alternatives")
    bench.add_argument("--build", choices=("bare", "full"), default=None,
                       help="the Numba variants' kernels: bare (default: compiled without"
                            " detectors, lockdep, faults, chaos, recorder) or full (every"
                            " flag off)")
    return parser


def _engine_options(parser):
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run trials on a Dask cluster, e.g. tcp://host:8786")
    parser.add_argument("--local-cluster", type=_at_least(1, 256), metavar="N",
                        help="run trials on a new Dask LocalCluster of N worker processes")


def _engine(args, say):
    """(engine factory, slots, close): the local pool, or Dask; UsageError if unreachable."""
    from harness import trials as T
    if args.scheduler and args.local_cluster:
        raise UsageError("choose one of --scheduler and --local-cluster")
    if args.scheduler or args.local_cluster:
        try:
            executor, slots, close, client = T.dask_executor(args.scheduler, args.local_cluster)
        except OSError as err:
            raise UsageError(str(err)) from None
        say(f"engine: Dask {client.scheduler.address}, {slots} worker(s) with machine=1")

        def warm():
            for rec in client.run(T.run_trial, T.warm_trial()).values():
                if rec["status"] != T.CLEAN:
                    say(f"warm-up failed on a worker: {rec['stderr_tail'][-300:]}")
    else:
        executor, slots = T.local_executor()
        close = executor.shutdown
        say(f"engine: local pool, {slots} trial(s) at a time ({os.cpu_count()} cores,"
            f" {T.CORES_PER_TRIAL} per trial)")

        def warm():
            rec = T.run_trial(T.warm_trial())
            if rec["status"] != T.CLEAN:
                raise UsageError(f"warm-up failed: {rec['stderr_tail'][-300:]}")

    def factory(on_record, on_start=None):
        return T.Engine(executor, slots, on_record, on_start=on_start)
    factory.warm = warm
    return factory, slots, close


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
    from harness.runner import interrupted_in_warm_up, run_stress, warm_up
    cfg = from_args(args)
    if args.dot and not cfg.lockdep:
        raise UsageError("--dot needs --lockdep (the graph is what lockdep observed)")
    prepare_dir(args.report_dir)
    if args.dot:
        check_writable_file(args.dot)
    say = _say(args.json)
    say("warm-up: compiling or loading the kernels...")
    t0 = time.monotonic()
    try:
        warm = warm_up()
    except KeyboardInterrupt as exc:    # the report says the run never started, and why
        result = interrupted_in_warm_up(cfg, time.monotonic() - t0, exc)
        return publish(result, args, lambda path: summary(result, path))
    say(f"warm-up: {warm:.2f} s")
    progress = None if args.json else Progress()
    say(f"running {cfg.threads} threads ({cfg.reclaimers} reclaimers) for {cfg.seconds:g} s"
        f" on {cfg.pages} pages, locking={cfg.locking}, reclaim-policy={cfg.policy}")
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
    engine, _, close = _engine(args, say)
    try:
        campaign = run_campaign(names, template, args.trials, args.repro, say, engine)
    finally:
        close()
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


# ---------------------------------------------------------------- mutants

def cmd_mutants(args):
    """Exit 0 when every survivor is declared equivalent and the control is clean, 1 on a
    gap (or a wrong declaration, a killed control, a mutant that does not compile)."""
    from harness import mutants as MU
    from harness import mutants_campaign as MC
    from harness.result import prepare_dir
    try:
        mutants = MU.generate()
    except (OSError, SyntaxError, ValueError) as err:
        raise UsageError(f"cannot generate the mutants from the kernel source: {err}") from None
    try:
        chosen = MC.select(mutants, args.only)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.diff and not args.list:
        raise UsageError("--diff goes with --list")
    if args.list:
        for m in chosen:
            print(f"{m.id:<40} {m.operator:<13} {','.join(m.schemes) or '-':<5}"
                  f" {m.file}:{m.line}  {m.description}" + (f" ({m.note})" if m.note else ""))
            if args.diff:
                print(MU.diff(m))
        print(f"{len(chosen)} mutants: " + ", ".join(f"{op} {n}" for op, n in
                                                      MU.counts(chosen).items()))
        return 0
    try:
        template = MC.template(args.budget, args.seed, args.threads, args.pages, args.chaos)
    except ConfigError as err:
        raise UsageError(str(err)) from None
    if args.scheduler and not args.work_dir:
        raise UsageError("--scheduler needs --work-dir: a folder every worker sees at the same"
                         " path (the mutants' source trees and kernel caches live there)")
    prepare_dir(args.report_dir)
    if args.work_dir:
        prepare_dir(args.work_dir)
    say = _say(args.json)
    engine, slots, close = _engine(args, say)
    try:
        say("warm-up: compiling or loading the unmutated kernels (the control)...")
        engine.warm()
        campaign = MC.Campaign(chosen, template, args.trials, engine, args.compile_jobs,
                               args.work_dir, say, lambda out: None, slots)
        path = MC.claim(args.report_dir, campaign.finish(time.monotonic()))
        campaign.save = MC.saver(path)
        say(f"result (rewritten as mutants finish): {path}")
        out = campaign.run()
    finally:
        close()
    try:
        campaign.save(out)
    except WriteError as err:
        print(json.dumps(out, indent=1) if args.json else MC.render(out))
        print(f"harness: error: the campaign was not saved: {err}", file=sys.stderr)
        return EXIT_WRITE
    print(json.dumps(out, indent=1) if args.json else MC.render(out))
    say(f"campaign saved: {path}")
    return MC.exit_status(out)


# ---------------------------------------------------------------- nightly

def cmd_nightly(args):
    """Exit 0 clean night, 1 new bucket or regression, 5 a canary escaped, 2 bad usage."""
    from harness import history as H
    from harness import matrix as M
    from harness import nightly as N
    from harness.result import prepare_dir
    say = _say(False)
    try:
        if args.verb == "report":
            if len(args.paths) != 1:
                raise UsageError("nightly report takes one night.json")
            night = N.load_night(args.paths[0])
            print(_render_night(night, args.format), end="")
            return 0
        history = args.history or H.default_path()
        if args.verb == "merge":
            if not args.paths:
                raise UsageError("nightly merge needs at least one shard output folder")
            parts = N.find_parts(args.paths)
            [N.load_part(p) for p in parts]
            H.check(history)
            out = args.out or _new_out_dir()
            prepare_dir(out)
            night = N.merge(parts, out, history, label=args.label)
            return _publish_night(night, out, say)     # shards never write the history
        if args.paths:
            raise UsageError(f"unexpected argument {args.paths[0]!r}")
        matrix = M.load(args.matrix)
        if args.mutants is not None:
            matrix = dataclasses.replace(matrix, mutants_per_night=args.mutants)
        if args.show_matrix:
            print(M.show(matrix))
            return 0
        budget = N.parse_budget(args.budget)
        shard = N.parse_shard(args.shard)
        if shard[1] == 1:
            H.check(history)
        out = args.out or _new_out_dir()
        prepare_dir(out)
        engine, slots, close = _engine(args, say)
    except (N.NightlyError, M.MatrixError, H.HistoryError) as err:
        raise UsageError(str(err)) from None
    try:
        from harness.mutants import generate
        mutants = generate() if matrix.mutants_per_night > 0 else None     # once: 0.6 s
        try:
            plan = N.plan(matrix, budget, slots, shard, args.seed, args.rounds,
                          trial_s=args.trial_seconds, mutants=mutants)
        except N.NightlyError as err:
            raise UsageError(str(err)) from None
        say("warm-up: compiling or loading the kernels...")
        started, t0 = time.time(), time.monotonic()
        engine.warm()
        warm = time.monotonic() - t0
        say(f"warm-up: {warm:.1f} s")
        try:        # the trials get what the warm-up left of the budget
            plan = N.plan(matrix, budget - warm, slots, shard, args.seed, args.rounds,
                          trial_s=args.trial_seconds, mutants=mutants)
        except N.NightlyError:
            pass    # keep the first plan: the deadline skips what does not fit
        say(f"nightly: {plan.how}")
        try:
            part = N.run_part(plan, engine, out, history if os.path.exists(history) else None,
                              args.repro, say, matrix, args.label, started, budget)
        except KeyboardInterrupt as exc:
            say(f"interrupted ({signals.signal_name(exc)}): finished trials are kept in {out};"
                " the history is not updated")
            parts = N.find_parts([out])
            night = N.merge(parts, out, history, label=args.label, write_history=False)
            N.render_all(night, out)
            return signals.exit_status(exc)
    finally:
        close()
    if shard[1] > 1:
        say(f"shard {shard[0]}/{shard[1]} written: {part}; merge all shards with"
            " `python -m harness nightly merge DIR...`")
        return 0
    try:
        night = N.merge([part], out, history, label=args.label)
    except (N.NightlyError, H.HistoryError) as err:
        raise UsageError(str(err)) from None
    return _publish_night(night, out, say)


def _new_out_dir():
    base = os.path.join("reports", "nightly-" + time.strftime("%Y%m%d-%H%M%S"))
    out, k = base, 1
    while os.path.exists(out):
        k += 1
        out = f"{base}-{k}"
    return out


def _render_night(night, fmt):
    from harness import render_html, render_junit, render_markdown
    from harness.result import to_json
    return {"md": render_markdown.render, "junit": render_junit.render,
            "html": render_html.render, "json": to_json}[fmt](night)


def _publish_night(night, out, say):
    from harness import nightly as N
    from harness import render_markdown
    paths = N.render_all(night, out)
    print(render_markdown.render(night), end="")
    for fault, c in night["canaries"].items():
        if c["escaped"]:
            say(f"CANARY ESCAPED: {fault} was not caught in {c['escaped']}/{c['runs']} runs:"
                " the harness lost detection power (exit 5)")
    say(f"night written: {os.path.join(out, 'night.json')}, " + ", ".join(paths.values()))
    return night["exit_status"]


# ---------------------------------------------------------------- report

def cmd_report(args):
    from harness.campaign import table
    from harness.mutants_campaign import regrade, render
    from harness.report import summary
    from harness.nightly import NIGHT_SCHEMA, load_night
    from harness.result import CAMPAIGN_SCHEMA, MUTANTS_SCHEMA, check, read_json
    data = read_json(args.file)
    if isinstance(data, dict) and data.get("schema") == NIGHT_SCHEMA:
        print(_render_night(load_night(args.file), "md"), end="")
        return 0
    result = check(data, args.file)
    if result["schema"] == CAMPAIGN_SCHEMA:
        print(table(result))
    elif result["schema"] == MUTANTS_SCHEMA:
        print(render(regrade(result)))
    else:
        print(summary(result, args.file))
    return 0


# ---------------------------------------------------------------- bench

def cmd_bench(args):
    from harness.bench import (format_bench, format_overhead, format_rows, run_bench,
                               run_capture_table, run_overhead)
    if args.reclaim_mix is not None and not args.capture_table:
        raise UsageError("--reclaim-mix applies to --capture-table only")
    if args.per_detector and not args.overhead:
        raise UsageError("--per-detector applies to --overhead only")
    if args.processes > 1 and not args.overhead:
        raise UsageError("--processes applies to --overhead only")
    if args.overhead + args.capture_table + args.stamps > 1:
        raise UsageError("choose one of --overhead, --capture-table and --stamps")
    if args.build and (args.overhead or args.capture_table or args.stamps):
        raise UsageError("--build applies to the throughput table only (the others measure"
                         " stress runs, which need the full build)")
    if args.build and (args.build == "bare") != bare.active():
        raise UsageError(f"--build {args.build}: this process runs the"
                         f" {'bare' if bare.active() else 'full'} build"
                         f" ({bare.ENV}={os.environ.get(bare.ENV, '')!r})")
    threads = max(args.threads) if args.threads else 2
    if args.capture_table:       # check the configuration now, not after the first run
        RunConfig(threads=threads, seconds=args.seconds, capture=True,
                  **({"reclaim_mix": args.reclaim_mix} if args.reclaim_mix else {}))
    if args.overhead and args.processes > 1:
        return _bench_processes(args, threads)
    if not args.json:
        print("warming up (JIT compile or cache load)...", file=sys.stderr, flush=True)
    if args.stamps:
        from harness.tracebench import format_stamps, run as run_stamps
        result = run_stamps(args.repeats)
        text = format_stamps(result)
    elif args.overhead:
        result = run_overhead(args.seconds, threads, rounds=args.repeats,
                              per_detector=args.per_detector)
        text = format_overhead(result)
    elif args.capture_table:
        result = run_capture_table(args.seconds, threads, reclaim_mix=args.reclaim_mix)
        text = format_rows("capture off vs on, without and with per-CPU lists (same seed and"
                           " settings):", result)
    else:
        result = run_bench(args.seconds, args.threads or (1, 2, 4, 8), args.repeats,
                           say=None if args.json else lambda m: print(m, file=sys.stderr))
        text = format_bench(result)
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else text)
    return 0


def _bench_processes(args, threads):
    """`bench --overhead --processes N`: what finished is printed, interrupted or not."""
    from harness.bench import BenchError, format_overhead_across, run_overhead_processes
    say = None if args.json else lambda m: print(m, file=sys.stderr, flush=True)
    if say:
        say(f"overhead in {args.processes} processes, one after another (each warms up first)")
    try:
        result, interrupted = run_overhead_processes(
            args.processes, args.seconds, threads, args.repeats, args.per_detector, say=say)
    except BenchError as err:                # not bad input: a measurement that failed
        print(f"harness: error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else
          format_overhead_across(result), flush=True)
    if interrupted is not None:
        raise interrupted
    return 0


def cmd_experiment(args):
    """Exit 0 when every trial was clean, 1 otherwise; 130/143 interrupted (saved so far)."""
    from harness import experiment as E
    from harness import trials as T
    from harness.result import prepare_dir
    for name in ("reclaim_policy", "reclaim_mix"):
        if getattr(args, name, None) is not None:
            raise UsageError(f"--{name.replace('_', '-')} is what the experiment varies:"
                             " use --policies and --orders")
    defaults = {"seconds": 10.0, "detectors": (), "lockdep": False}
    template = from_args(args, **{k: v for k, v in defaults.items()
                                  if getattr(args, k, None) is None})
    prepare_dir(args.report_dir)
    say = _say(False)
    stem = os.path.join(args.report_dir, f"experiment-{time.strftime('%Y%m%d-%H%M%S')}")
    n = len(args.policies) * len(args.orders) * args.seeds
    say(f"experiment: {len(args.policies)} policies x {len(args.orders)} order ranges x"
        f" {args.seeds} seeds = {n} trials of {template.seconds:g} s; saving to {stem}.json")
    engine, slots, close = _engine(args, say)
    try:
        engine.warm()
        exp = E.run(template, args.policies, args.orders, args.seeds, stem + ".json", engine,
                    log=say)
    except KeyboardInterrupt:
        say(f"experiment interrupted: finished trials kept in {stem}.json"
            if os.path.exists(stem + ".json") else
            "experiment interrupted before a trial finished: nothing was saved")
        raise
    finally:
        close()
    text = E.table(exp)
    write_atomic(stem + ".md", text + "\n")
    try:
        E.plot(exp, stem + ".png")
        say(f"plot: {stem}.png")
    except ImportError:
        say("plot: not drawn (matplotlib is not installed)")
    print(text)
    say(f"saved: {stem}.json, {stem}.md")
    return 0 if all(t["status"] == T.CLEAN for t in exp["trials"]) else 1


COMMANDS = {"stress": cmd_stress, "lockorder": cmd_lockorder, "faults": cmd_faults,
            "nightly": cmd_nightly, "bench": cmd_bench, "report": cmd_report,
            "mutants": cmd_mutants, "experiment": cmd_experiment}


def main(argv=None):
    restore = signals.install()
    try:
        args = build_parser().parse_args(argv)
        if args.command not in ("bench", "report"):
            refuse_bare()
        return COMMANDS[args.command](args)
    except (UsageError, ConfigError, ResultError, WriteError) as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print(f"harness: interrupted ({signals.signal_name(exc)})", file=sys.stderr)
        return signals.exit_status(exc)
    finally:
        restore()
