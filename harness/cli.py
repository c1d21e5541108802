"""Command line: `python -m harness {stress,bench,...}`.

Bad usage prints one line and exits 2; nothing here prints a traceback for
bad input.
"""

import argparse
import json
import sys


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


def build_parser():
    parser = _Parser(prog="python -m harness", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    bench = sub.add_parser("bench", help="allocator throughput: schemes x threads vs plain Python")
    bench.add_argument("--seconds", type=_positive_float, default=1.5,
                       help="measured seconds per variant (default 1.5)")
    bench.add_argument("--threads", type=_thread_counts, default=(1, 2),
                       help="comma-separated thread counts (default 1,2)")
    bench.add_argument("--repeats", type=int, default=3,
                       help="runs per variant; the best is kept (default 3)")
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def cmd_bench(args):
    from harness.bench import format_bench, run_bench
    if args.repeats < 1:
        raise UsageError("--repeats must be >= 1")
    if not args.json:
        print("warming up (JIT compile or cache load)...", file=sys.stderr, flush=True)
    result = run_bench(args.seconds, args.threads, args.repeats)
    print(json.dumps(result, indent=2) if args.json else format_bench(result))
    return 0


COMMANDS = {"bench": cmd_bench}


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
