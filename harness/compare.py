"""Detection power side by side: one fault, the same seeds, under several run modes.

    python -m harness.compare --fault count-outside-lock --trials 10 --budget 5 \\
        --modes plain,chaos,pct [--preset reuse] [--no-pcp]

Modes: plain (no delays), chaos (--chaos 0.02), pct and pct-sites (--schedule pct or
pct-sites with --pct-depth, --pct-steps).  Prints, per mode, how many trials caught the
fault, the median time to detection, and the operations per second of the clean control
in that mode (overhead).  Run in a mutant's tree with its cache (`mutants --work-dir`),
`--fault clean` measures that mutant.
"""

import argparse
import dataclasses
import statistics
import sys

from harness.campaign import CLEAN, trial
from harness.config import PRESETS, RunConfig

MODES = {"plain": {}, "chaos": {"chaos": 0.02}, "pct": {"schedule": "pct"},
         "pct-sites": {"schedule": "pct-sites"}}


def compare(fault, trials, budget, modes, base, depth=RunConfig.pct_depth,
            steps=RunConfig.pct_steps):
    from harness.runner import warm_up
    warm_up()
    out = {}
    for mode in modes:
        extra = dict(MODES[mode])
        if mode.startswith("pct"):
            extra.update(pct_depth=depth, pct_steps=steps)
        rows = []
        for seed in range(1, trials + 1):
            cfg = dataclasses.replace(base, seed=seed, seconds=budget,
                                      fault="" if fault == CLEAN else fault, **extra)
            rows.append(trial(cfg, warm_s=0.0))
        hits = [r for r in rows if r["detected"]]
        ttd = [r["ttd_s"] for r in hits if r["ttd_s"] is not None]
        out[mode] = {"caught": len(hits), "trials": trials,
                     "median_ttd_s": round(statistics.median(ttd), 3) if ttd else None,
                     "ops_per_s": round(statistics.median(r["ops"] / budget for r in rows)),
                     "detectors": sorted({d for r in hits for d in r["detectors"]})}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m harness.compare", description=__doc__)
    p.add_argument("--fault", required=True)
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--budget", type=float, default=5.0)
    p.add_argument("--modes", default="plain,chaos,pct")
    p.add_argument("--preset", choices=sorted(PRESETS))
    p.add_argument("--pct-depth", type=int, default=RunConfig.pct_depth)
    p.add_argument("--pct-steps", type=int, default=RunConfig.pct_steps)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-pcp", action="store_true",
                   help="no per-CPU lists: every free goes through the buddy and its capture lists")
    a = p.parse_args(argv)
    unknown = [m for m in a.modes.split(",") if m not in MODES]
    if unknown:
        p.error(f"unknown mode {unknown[0]!r} (modes: {', '.join(MODES)})")
    base = dict(threads=a.threads, reclaimers=1, pages=16384, check_ms=50, stall_s=2.0,
                pcp=not a.no_pcp)
    if a.preset:
        base.update(PRESETS[a.preset])
    res = compare(a.fault, a.trials, a.budget, a.modes.split(","), RunConfig(**base),
                  a.pct_depth, a.pct_steps)
    print(f"| mode | caught | median time to detection | ops/s | detectors |  ({a.fault},"
          f" {a.trials} trials of {a.budget:g} s{', preset ' + a.preset if a.preset else ''}"
          f"{', no per-CPU lists' if a.no_pcp else ''})")
    print("|---|---|---|---|---|")
    for mode, r in res.items():
        ttd = f"{r['median_ttd_s']:.2f} s" if r["median_ttd_s"] is not None else "-"
        print(f"| {mode} | {r['caught']}/{r['trials']} | {ttd} | {r['ops_per_s']:,} |"
              f" {', '.join(r['detectors']) or '-'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
