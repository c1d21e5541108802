"""The nightly matrix: axes of stress settings whose product is the cells a night runs.

A matrix is a TOML file (read with `tomllib`) or the built-in default:

    [axes]                       # every combination of these is one cell
    locking = ["fine", "zone"]
    threads = [2, "4x"]          # "Nx": N times this machine's cores (oversubscribed)
    reclaimers = [1, "half"]     # the role mix: one reclaimer, or half the threads
    chaos = [0.0, 0.02]
    lockdep = [true, false]
    capture = [true, false]

    [base]                       # any other stress option, for every cell
    pages = 16384

    [[exclude]]                  # drop cells matching every key given
    locking = "zone"
    chaos = 0.02

    [canaries]                   # each seeded fault, this many runs a night
    runs = 2
    faults = "all"               # or a list of names

    [mutants]                    # lock mutants (harness.mutants), in rotation
    per_night = 1                # how many a night: each is a build of its own
    trials = 2                   # per mutant and scheme, stopping at the first kill

Without a [mutants] table a matrix runs none; the built-in one runs one a
night, so the whole set comes round every few weeks (`nightly.pick_mutants`).

Keys are RunConfig field names.  A cell's name is built from the declared
values ("fine-t4x-r1-chaos0.02-lockdep-capture"), never from a seed or a
time, so it is stable across nights, machines and shards.
"""

import dataclasses
import itertools
import os
import tomllib

from harness.config import ConfigError, RunConfig, from_dict
from harness.faults import BY_NAME, FAULTS, workload_settings

AXES = ("locking", "threads", "reclaimers", "chaos", "lockdep", "capture")
DEFAULT_TOML = """\
# The built-in nightly matrix (python -m harness nightly --show-matrix).
[axes]
locking = ["fine", "zone"]
threads = [2, "4x"]          # "4x": four threads per core, oversubscribed
reclaimers = [1, "half"]     # one direct reclaimer, or half the threads
chaos = [0.0, 0.02]          # delay injection at race windows
lockdep = [true, false]
capture = [true, false]

[base]
pages = 16384
check_ms = 100
stall_s = 3.0

[canaries]
runs = 2
faults = "all"

[mutants]
per_night = 1                # one lock mutant a night, in rotation (about 6 min to compile)
trials = 2
"""
BASE_DEFAULTS = {"pages": 16384, "check_ms": 100, "stall_s": 3.0}


class MatrixError(ValueError):
    """A malformed matrix (one-line message)."""


@dataclasses.dataclass(frozen=True)
class Cell:
    name: str
    values: tuple               # (axis, declared value) pairs
    settings: dict              # RunConfig fields for this machine (without seed/seconds)


@dataclasses.dataclass(frozen=True)
class Matrix:
    cells: tuple
    canary_faults: tuple
    canary_runs: int
    mutants_per_night: int
    mutant_trials: int
    base: dict
    source: str                 # "built-in" or the file path
    text: str


def load(path=None, cores=None):
    """The matrix from `path` (TOML) or the built-in one; MatrixError on any problem."""
    if path is None:
        text, source = DEFAULT_TOML, "built-in"
    else:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as err:
            raise MatrixError(f"cannot read matrix {path}: {err}") from None
        source = path
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise MatrixError(f"matrix {source} is not valid TOML: {err}") from None
    return build(data, source, text, cores or os.cpu_count() or 2)


def build(data, source, text, cores):
    unknown = set(data) - {"axes", "base", "exclude", "canaries", "mutants"}
    if unknown:
        raise MatrixError(f"matrix {source}: unknown table {sorted(unknown)[0]!r}"
                          " (use axes, base, exclude, canaries, mutants)")
    axes = data.get("axes", {})
    base = {**(BASE_DEFAULTS if source == "built-in" else {}), **data.get("base", {})}
    if not isinstance(axes, dict) or not axes:
        raise MatrixError(f"matrix {source}: [axes] must name at least one setting")
    fields = {f.name for f in dataclasses.fields(RunConfig)} - {"seed", "seconds"}
    for key, values in axes.items():
        if key not in fields:
            raise MatrixError(f"matrix {source}: unknown axis {key!r}")
        if not isinstance(values, list) or not values:
            raise MatrixError(f"matrix {source}: axis {key!r} must be a non-empty list")
    for key in base:
        if key not in fields:
            raise MatrixError(f"matrix {source}: unknown base setting {key!r}")
    excludes = data.get("exclude", [])
    if not isinstance(excludes, list) or not all(isinstance(e, dict) for e in excludes):
        raise MatrixError(f"matrix {source}: [[exclude]] entries must be tables")
    names = list(axes)
    cells, seen = [], set()
    for combo in itertools.product(*(axes[k] for k in names)):
        values = tuple(zip(names, combo))
        if any(all(dict(values).get(k) == v for k, v in e.items()) for e in excludes):
            continue
        settings = {**base}
        for k, v in values:
            settings[k] = resolve(k, v, settings, cores, source)
        if "reclaimers" in settings and settings.get("reclaimers") == "half":
            settings["reclaimers"] = max(1, settings.get("threads", cores) // 2)
        name = cell_name(values)
        if name in seen:
            raise MatrixError(f"matrix {source}: two cells are named {name!r}")
        seen.add(name)
        try:
            from_dict({**settings, "seconds": 1.0, "seed": 1})
        except (ConfigError, TypeError) as err:
            raise MatrixError(f"matrix {source}: cell {name}: {err}") from None
        cells.append(Cell(name, values, settings))
    if not cells:
        raise MatrixError(f"matrix {source}: every cell is excluded")
    canaries = data.get("canaries", {})
    runs = _count(canaries.get("runs", 2), 0, 100, "canaries.runs", source)
    faults = canaries.get("faults", "all")
    faults = [f.name for f in FAULTS] if faults == "all" else faults
    if not isinstance(faults, list) or any(f not in BY_NAME for f in faults):
        bad = [f for f in faults if f not in BY_NAME] if isinstance(faults, list) else [faults]
        raise MatrixError(f"matrix {source}: unknown canary fault {bad[0]!r}")
    mutants = data.get("mutants", {})
    if not isinstance(mutants, dict) or set(mutants) - {"per_night", "trials"}:
        raise MatrixError(f"matrix {source}: [mutants] takes per_night and trials")
    per_night = _count(mutants.get("per_night", 0), 0, 100, "mutants.per_night", source)
    mutant_trials = _count(mutants.get("trials", 2), 1, 100, "mutants.trials", source)
    return Matrix(tuple(cells), tuple(faults) if runs else (), runs, per_night, mutant_trials,
                  base, source, text)


def _count(value, lo, hi, what, source):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise MatrixError(f"matrix {source}: {what} must be an integer in {lo}..{hi}")
    return value


def resolve(key, value, settings, cores, source):
    """A declared axis value as a RunConfig value on this machine."""
    if key == "threads" and isinstance(value, str) and value.endswith("x"):
        try:
            return max(2, int(value[:-1]) * cores)
        except ValueError:
            raise MatrixError(f"matrix {source}: threads {value!r}: use an integer or"
                              " \"Nx\" (N times the cores)") from None
    if key == "reclaimers" and value == "half":
        return "half"
    return value


def cell_name(values):
    parts = []
    for k, v in values:
        if k == "locking":
            parts.append(str(v))
        elif k == "threads":
            parts.append(f"t{v}")
        elif k == "reclaimers":
            parts.append(f"r{v}")
        elif isinstance(v, bool):
            parts.append(k if v else f"no{k}")
        else:
            parts.append(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}")
    return "-".join(parts).replace("/", "_")


def canary_settings(matrix, fault):
    """A canary's settings: fine locking, lockdep on, chaos where the window is narrow,
    per-CPU lists for their own faults only (harness.faults.Fault.pcp), and the fault's
    declared workload and reclaim policy (harness.faults.workload_settings)."""
    f = BY_NAME[fault]
    out = {**BASE_DEFAULTS, **matrix.base, "threads": 2, "reclaimers": 1,
           "locking": "fine" if "fine" in f.schemes else f.schemes[0], "lockdep": True,
           "fault": fault, "chaos": 0.02 if f.narrow else 0.0, "check_ms": 50,
           "stall_s": 2.0, "pcp": f.pcp}
    policy = out.get("reclaim_policy") or ("capture" if out.get("capture", True) else "off")
    return {**out, **workload_settings(f, policy)}


def show(matrix):
    lines = [f"matrix: {matrix.source}, {len(matrix.cells)} cells;"
             f" canaries: {len(matrix.canary_faults)} faults x {matrix.canary_runs} runs;"
             f" lock mutants: {matrix.mutants_per_night} a night, in rotation", ""]
    for c in matrix.cells:
        s = c.settings
        lines.append(f"  {c.name:<44} threads {s.get('threads', '-')}"
                     f"  reclaimers {s.get('reclaimers', '-')}")
    lines += ["", matrix.text.rstrip()]
    return "\n".join(lines)
