"""Saved results: the schema, grading attached, atomic unique files, and checked loading.

A stress run produces one result dict (harness.runner collects the counts);
`finalize` attaches the verdict computed by the pure harness.verdict.grade;
`save` writes it as strict JSON (no NaN/Infinity) under a name no other run
can take; `load` reads a saved stress or campaign result back and checks its
schema and version, so every rendering (summary, `report`, campaigns) starts
from the same data.

File discipline in a report folder:
  - final files are created exclusively (`os.link` of a finished temp file),
    so two runs in one second never overwrite each other;
  - temp files are named `.tmp-<pid>-<random>.json`; a later run removes
    those whose process is gone (a run killed mid-write leaves one behind).
"""

import json
import os
import re
import tempfile
import time

from harness.verdict import grade, problems

SCHEMA = "buddy-stress-report"
CAMPAIGN_SCHEMA = "buddy-stress-campaign"
MUTANTS_SCHEMA = "buddy-stress-mutants"
VERSION = 2
MAX_LOAD_BYTES = 256 << 20
TMP_RE = re.compile(r"^\.tmp-(\d+)-.*")


class ResultError(ValueError):
    """A saved result that cannot be read or is not one of ours (one-line message)."""


class WriteError(OSError):
    """A report that could not be written (one-line message)."""


# ---------------------------------------------------------------- building

def finalize(raw):
    """A new dict: `raw` plus its verdict, exit status and problems (raw is not changed)."""
    word, status = grade(raw)
    return {**raw, "verdict": word, "exit_status": status, "problems": problems(raw)}


def totals(threads, wall):
    """Per-role and overall totals of a run's per-thread counters, with rates."""
    def total(key, role=None):
        return sum(t[key] for t in threads if role in (None, t["role"]))

    high = {}
    for t in threads:
        for order, h in t["high_order"].items():
            agg = high.setdefault(order, {"attempts": 0, "successes": 0, "direct": 0})
            for k in agg:
                agg[k] += h[k]
    wall = wall or 1e-9
    def total_new(key):               # counters that results from before issue 13 lack
        return sum(t.get(key, 0) for t in threads)

    reclaims = total("reclaims")
    ok = total_new("reclaims_ok") or total("captures_delivered") + total("retry_successes")
    return {
        "ops": total("ops"), "ops_per_s": round(total("ops") / wall, 1),
        "allocator_ops": total("ops", "allocator"),
        "allocator_ops_per_s": round(total("ops", "allocator") / wall, 1),
        "reclaimer_ops": total("ops", "reclaimer"),
        "reclaimer_ops_per_s": round(total("ops", "reclaimer") / wall, 1),
        "high_attempts": sum(h["attempts"] for h in high.values()),
        "high_successes": sum(h["successes"] for h in high.values()),
        "high_by_order": dict(sorted(high.items(), key=lambda kv: int(kv[0]))),
        "reclaims": reclaims, "captures_delivered": total("captures_delivered"),
        "retry_successes": total("retry_successes"),
        "reclaim_success": round(ok / reclaims, 6) if reclaims else None,
        "captured_own_pages": total("captured_own_pages"),
        "captured_other_pages": total("captured_other_pages"),
        "captured_merged_free_pages": total("captured_merged_free_pages"),
        "pcp_drained_blocks": total("pcp_drained"),
        "reclaim_to_block_ms": round(total_new("reclaims_ok_ns") / 1e6 / total_new("reclaims_ok"),
                                     4) if total_new("reclaims_ok") else None,
        "migration": {k: total_new(k) for k in (
            "isolations", "isolations_refused", "range_no_candidate", "ranges_taken",
            "ranges_released", "migrated_pages", "migrate_busy", "migrate_no_target",
            "isolated_pages_held")},
        "page_refs": {k: total_new(k) for k in (
            "lookups", "lookup_hits", "lookup_misses", "reclaim_skipped_busy")},
    }


# ---------------------------------------------------------------- writing

def to_json(result):
    """Strict JSON text (NaN and infinities are refused, not written)."""
    try:
        return json.dumps(result, indent=1, allow_nan=False) + "\n"
    except ValueError as err:
        raise ResultError(f"result is not valid JSON: {err}") from None


def prepare_dir(folder):
    """Make sure reports can be written to `folder` before any work starts.

    Creates it, writes and removes a probe file, and removes temp files left
    by dead processes.  Raises WriteError with a one-line message.
    """
    if not folder:
        raise WriteError("report folder must not be empty")
    try:
        os.makedirs(folder, exist_ok=True)
        if not os.path.isdir(folder):
            raise WriteError(f"report folder {folder} is not a directory")
        _cleanup_stale(folder)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.getpid()}-", suffix=".probe")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 1024)
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.unlink(probe)
    except WriteError:
        raise
    except OSError as err:
        raise WriteError(f"cannot write to report folder {folder}: {err.strerror or err}") \
            from None


def check_writable_file(path):
    """Fail early (WriteError) if `path` cannot be created later; leaves nothing behind."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise WriteError(f"{path} is a directory")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.getpid()}-", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None


def _cleanup_stale(folder):
    for name in os.listdir(folder):
        m = TMP_RE.match(name)
        if m and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_temp(folder, text):
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.getpid()}-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomic(path, text):
    """Replace `path` with `text` atomically (temp file in the same folder + rename)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = _write_temp(folder, text)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None


def write_new(folder, stem, suffix, text):
    """Create `<folder>/<stem><suffix>` (or `<stem>-2<suffix>`, ...) exclusively; its path."""
    try:
        tmp = _write_temp(folder, text)
        try:
            for k in range(1, 10000):
                path = os.path.join(folder, f"{stem}{'' if k == 1 else f'-{k}'}{suffix}")
                try:
                    os.link(tmp, path)            # fails if the name is taken: never overwrite
                    return path
                except FileExistsError:
                    continue
            raise WriteError(f"no free report name for {stem} in {folder}")
        finally:
            os.unlink(tmp)
    except OSError as err:
        raise WriteError(f"cannot write a report in {folder}: {err.strerror or err}") from None


def save(result, folder, stem="stress"):
    """Write `result` as `<folder>/<stem>-<time>-seed<seed>.json`; returns its path."""
    seed = result.get("config", {}).get("seed", 0)
    name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-seed{seed}"
    return write_new(folder, name, ".json", to_json(result))


# ---------------------------------------------------------------- reading

# Fields a stress result must have, with their JSON types, so renderers can trust them.
STRESS_FIELDS = {"config": dict, "outcome": str, "threads": list, "locks": dict,
                 "duration_s": (int, float), "warmup_s": (int, float), "cpu_s": (int, float),
                 "parallelism": (int, float), "checks": int, "worker_violations": list,
                 "invariant_violations": list, "end": dict, "traces": list,
                 "detection_s": dict, "totals": dict}
CAMPAIGN_FIELDS = {"config": dict, "faults": dict}
MUTANTS_FIELDS = {"config": dict, "control": dict, "mutants": list, "summary": dict,
                  "machine": dict}


def read_json(path, what="report"):
    """The JSON value in `path`, read safely: a regular file of bounded size, strict JSON.

    Raises ResultError with a one-line message naming `what` could not be read.
    """
    try:
        if not os.path.isfile(path):
            raise ResultError(f"cannot read {what} {path}: not a regular file")
        if os.path.getsize(path) > MAX_LOAD_BYTES:
            raise ResultError(f"cannot read {what} {path}: larger than"
                              f" {MAX_LOAD_BYTES >> 20} MiB, not a {what}")
        with open(path, encoding="utf-8") as f:
            return json.loads(f.read(MAX_LOAD_BYTES + 1), parse_constant=_refuse_constant)
    except ResultError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ResultError(f"cannot read {what} {path}: {err}") from None


def load(path):
    """A saved stress, campaign or mutants result, checked; raises ResultError."""
    return check(read_json(path), path)


def _refuse_constant(name):
    raise ValueError(f"non-finite number {name} is not JSON")


def check(data, where="result"):
    """`data` if it is a stress or campaign result of this schema version, else ResultError."""
    if not isinstance(data, dict):
        raise ResultError(f"{where} is not a report (a JSON {type(data).__name__})")
    schema, version = data.get("schema"), data.get("version")
    wanted = {SCHEMA: STRESS_FIELDS, CAMPAIGN_SCHEMA: CAMPAIGN_FIELDS,
              MUTANTS_SCHEMA: MUTANTS_FIELDS}.get(schema)
    if wanted is None:
        raise ResultError(f"{where} is not a report of this tool (schema {schema!r})")
    if version != VERSION:
        raise ResultError(f"{where} has schema version {version!r}; this tool reads"
                          f" version {VERSION}")
    for key, typ in wanted.items():
        if not isinstance(data.get(key), typ) or isinstance(data.get(key), bool):
            raise ResultError(f"{where}: field {key!r} is missing or malformed")
    if schema == MUTANTS_SCHEMA:
        for e in data["mutants"]:
            if not isinstance(e, dict) or not isinstance(e.get("id"), str) \
                    or not isinstance(e.get("runs"), dict):
                raise ResultError(f"{where}: field 'mutants' is malformed")
    if schema == SCHEMA:
        for t in data["threads"]:
            if not isinstance(t, dict) or not isinstance(t.get("ops"), int) \
                    or not isinstance(t.get("high_order"), dict) \
                    or not isinstance(t.get("cpu_s", 0.0), (int, float)) \
                    or isinstance(t.get("cpu_s"), bool):
                raise ResultError(f"{where}: field 'threads' is malformed")
        for name, c in data["locks"].items():
            if not isinstance(c, dict) or not all(isinstance(c.get(k), (int, float))
                                                  for k in ("acquisitions", "contended")):
                raise ResultError(f"{where}: field 'locks' is malformed")
    return data
