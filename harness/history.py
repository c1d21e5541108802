"""Night-to-night history in one SQLite file, written by the merge step only.

Schema version 1 (`meta.schema_version`):

    nights(id, label, started, budget_s, trials, exit_status)
    trials(night, id, cell, kind, status, seed, seconds, ttd_s, ops_per_s,
           allocator_ops_per_s, command)                  one row per trial
    buckets(signature, title, first_night, last_night, first_seen, last_seen,
            command, repro)                               one row per bucket ever seen
    bucket_nights(night, signature, count, ran, kill_rate, ci_low, ci_high,
                  median_ttd_s, state, cells)             one row per bucket per night

A night is written in one transaction (`record`), so a failed or interrupted
night leaves the history as it was.  Rules, applied by `compare`:

  - a bucket is **new** when no earlier night saw it, **still open** when one
    did; a bucket marked fixed that comes back is **reopened** (new again);
  - a bucket is **fixed** when it was not seen in the last FIXED_AFTER nights
    that ran at least one trial of a cell where it had been seen;
  - a cell's throughput (median allocator ops/s of its trials that ran to the
    end) is a **performance regression** when it lies below the one-sided 99%
    prediction bound of the earlier nights' values (log scale, Student t,
    at least MIN_NIGHTS earlier nights, the last 20) and is at least
    MIN_DROP below their mean.
"""

import math
import os
import sqlite3
import statistics

SCHEMA_VERSION = 1
FIXED_AFTER = 5
MIN_NIGHTS = 5
MIN_DROP = 0.10
WINDOW = 20
# One-sided 99% quantiles of Student's t for 1..30 degrees of freedom; the normal beyond.
T99 = (31.821, 6.965, 4.541, 3.747, 3.365, 3.143, 2.998, 2.896, 2.821, 2.764, 2.718, 2.681,
       2.650, 2.624, 2.602, 2.583, 2.567, 2.552, 2.539, 2.528, 2.518, 2.508, 2.500, 2.492,
       2.485, 2.479, 2.473, 2.467, 2.462, 2.457)

DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE nights (id INTEGER PRIMARY KEY, label TEXT NOT NULL UNIQUE, started REAL NOT NULL,
    budget_s REAL, trials INTEGER NOT NULL, exit_status INTEGER NOT NULL);
CREATE TABLE trials (night INTEGER NOT NULL REFERENCES nights(id), id TEXT NOT NULL,
    cell TEXT NOT NULL, kind TEXT NOT NULL, status TEXT NOT NULL, seed INTEGER, seconds REAL,
    ttd_s REAL, ops_per_s REAL, allocator_ops_per_s REAL, command TEXT,
    PRIMARY KEY (night, id));
CREATE TABLE buckets (signature TEXT PRIMARY KEY, title TEXT NOT NULL,
    first_night INTEGER NOT NULL, last_night INTEGER NOT NULL, first_seen REAL NOT NULL,
    last_seen REAL NOT NULL, command TEXT, repro TEXT);
CREATE TABLE bucket_nights (night INTEGER NOT NULL REFERENCES nights(id),
    signature TEXT NOT NULL REFERENCES buckets(signature), count INTEGER NOT NULL,
    ran INTEGER NOT NULL, kill_rate REAL, ci_low REAL, ci_high REAL, median_ttd_s REAL,
    state TEXT NOT NULL, cells TEXT NOT NULL, PRIMARY KEY (night, signature));
CREATE INDEX trials_cell ON trials (cell, night);
"""


class HistoryError(Exception):
    """A history database that cannot be used (one-line message)."""


def default_path(report_dir="reports"):
    return os.path.join(report_dir, "history.sqlite")


def _connect(path):
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def check(path):
    """Fail early (HistoryError) if `path` cannot be read and written as our history.

    Nothing is created: a missing database only needs a writable folder.
    """
    if os.path.isdir(path):
        raise HistoryError(f"history {path} is a directory")
    if not os.path.exists(path):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise HistoryError(f"cannot create history {path}: folder {folder} is not writable")
        return
    try:
        conn = _connect(path)
        try:
            ok = conn.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise HistoryError(f"history {path} is damaged: {ok}")
            version = _version(conn, path)
            if version != SCHEMA_VERSION:
                raise HistoryError(f"history {path} has schema version {version}; this tool"
                                   f" writes version {SCHEMA_VERSION}")
            conn.execute("BEGIN IMMEDIATE")      # can we take the write lock?
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise HistoryError(f"history {path} cannot be used: {err}") from None


def _version(conn, path):
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.DatabaseError as err:
        raise HistoryError(f"history {path} is not a history database: {err}") from None
    if row is None:
        raise HistoryError(f"history {path} has no schema version")
    return int(row[0])


def open_history(path):
    """A connection to the history at `path`, created with the schema if new."""
    check(path)
    try:
        conn = _connect(path)
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            conn.execute("BEGIN IMMEDIATE")
            for stmt in DDL.strip().split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("COMMIT")
        return conn
    except sqlite3.Error as err:
        raise HistoryError(f"history {path} cannot be used: {err}") from None


def known_buckets(path):
    """{signature: row} from an existing history (read only), {} if there is none."""
    if not path or not os.path.exists(path):
        return {}
    conn = _connect(path)
    try:
        return {r["signature"]: dict(r) for r in conn.execute("SELECT * FROM buckets")}
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


# ---------------------------------------------------------------- comparing

def t99(df):
    return T99[df - 1] if 1 <= df <= len(T99) else 2.326


def throughput(records):
    """{cell: median allocator ops/s} over trials that ran to the end of their time."""
    per = {}
    for r in records:
        v = r.get("allocator_ops_per_s")
        if v and r.get("status") == "clean" and r.get("kind") == "cell":
            per.setdefault(r["cell"], []).append(v)
    return {c: statistics.median(v) for c, v in per.items()}


def regression(tonight, earlier):
    """(is a regression, detail dict) for one cell: tonight's value vs earlier nights'."""
    if len(earlier) < MIN_NIGHTS or not tonight:
        return False, {"earlier_nights": len(earlier), "test": "too few earlier nights"}
    logs = [math.log(v) for v in earlier if v > 0]
    n = len(logs)
    mean, sd = statistics.fmean(logs), statistics.stdev(logs)
    bound = mean - t99(n - 1) * sd * math.sqrt(1 + 1 / n)
    drop = 1 - tonight / math.exp(mean)
    bad = math.log(tonight) < bound and drop >= MIN_DROP
    return bad, {"earlier_nights": n, "earlier_mean": round(math.exp(mean), 1),
                 "bound": round(math.exp(bound), 1), "tonight": round(tonight, 1),
                 "drop": round(drop, 4), "test": "one-sided 99% t prediction bound (log)"}


def compare(conn, buckets, records, fixed_after=FIXED_AFTER):
    """Tonight against the history: bucket states, fixed buckets, cells that regressed."""
    known = {r["signature"]: dict(r) for r in conn.execute("SELECT * FROM buckets")}
    nights = [r["id"] for r in conn.execute("SELECT id FROM nights ORDER BY id")]
    states = {}
    for sig in buckets:
        row = known.get(sig)
        if row is None:
            states[sig] = "new"
        elif _is_fixed(conn, row, nights, fixed_after):
            states[sig] = "reopened"
        else:
            states[sig] = "still open"
    tonight_cells = {r["cell"] for r in records if r.get("kind") == "cell"}
    fixed, quiet = [], []
    for sig, row in known.items():
        if sig in buckets:
            continue
        cells = _cells(conn, sig)
        ran_tonight = bool(cells & tonight_cells) or not cells
        since = _nights_since(conn, row, cells) + (1 if ran_tonight else 0)
        entry = {"signature": sig, "title": row["title"], "last_seen": row["last_seen"],
                 "quiet_nights": since}
        (fixed if since >= fixed_after else quiet).append(entry)
    perf = {}
    for cell, value in throughput(records).items():
        earlier = _medians(conn, cell)
        bad, detail = regression(value, earlier)
        perf[cell] = {**detail, "regression": bad}
    return {"states": states, "fixed": fixed, "not_seen": quiet, "perf": perf,
            "earlier_nights": len(nights), "fixed_after": fixed_after}


def _medians(conn, cell):
    rows = conn.execute("SELECT night, allocator_ops_per_s FROM trials WHERE cell = ? AND"
                        " kind = 'cell' AND status = 'clean' AND allocator_ops_per_s > 0"
                        " ORDER BY night", (cell,)).fetchall()
    per = {}
    for night, v in rows:
        per.setdefault(night, []).append(v)
    return [statistics.median(v) for _, v in sorted(per.items())][-WINDOW:]


def _nights_since(conn, row, cells):
    """Nights after the bucket's last night that ran a trial of one of its cells."""
    if not cells:
        return conn.execute("SELECT COUNT(*) FROM nights WHERE id > ?",
                            (row["last_night"],)).fetchone()[0]
    marks = ",".join("?" * len(cells))
    return conn.execute(f"SELECT COUNT(DISTINCT night) FROM trials WHERE night > ? AND cell IN"
                        f" ({marks})", (row["last_night"], *cells)).fetchone()[0]


def _cells(conn, sig):
    """The cells in which a bucket was ever seen."""
    out = set()
    for (text,) in conn.execute("SELECT cells FROM bucket_nights WHERE signature = ?", (sig,)):
        out.update(c for c in (text or "").split(",") if c)
    return out


def _is_fixed(conn, row, nights, fixed_after):
    cells = _cells(conn, row["signature"])
    return _nights_since(conn, row, cells) >= fixed_after


# ---------------------------------------------------------------- writing

def record(conn, night, records, buckets, states, exit_status):
    """Write one night (nights, trials, buckets, bucket_nights) in one transaction; its id."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        label, k = night["label"], 1
        while conn.execute("SELECT 1 FROM nights WHERE label = ?", (label,)).fetchone():
            k += 1                                  # two nights in one minute: keep both
            label = f"{night['label']} ({k})"
        cur = conn.execute("INSERT INTO nights (label, started, budget_s, trials, exit_status)"
                           " VALUES (?, ?, ?, ?, ?)",
                           (label, night["started"], night.get("budget_s"),
                            len(records), exit_status))
        nid = cur.lastrowid
        for r in records:
            conn.execute("INSERT INTO trials VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         (nid, r["id"], r["cell"], r["kind"], r["status"], r.get("seed"),
                          r.get("seconds"), r.get("ttd_s"), r.get("ops_per_s"),
                          r.get("allocator_ops_per_s"), r.get("command")))
        for sig, b in buckets.items():
            conn.execute(
                "INSERT INTO buckets VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(signature) DO UPDATE"
                " SET last_night = excluded.last_night, last_seen = excluded.last_seen,"
                " repro = COALESCE(excluded.repro, buckets.repro)",
                (sig, b["title"], nid, nid, night["started"], night["started"], b["command"],
                 b.get("reproduced")))
            lo, hi = b["kill_rate_ci"]
            conn.execute("INSERT INTO bucket_nights VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (nid, sig, b["count"], b.get("ran", 0), b["kill_rate"], lo, hi,
                          b["median_ttd_s"], states.get(sig, "new"), ",".join(b["cells"])))
        conn.execute("COMMIT")
        return nid
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise


def bucket_history(conn, signatures):
    """{signature: {first_seen, last_seen, nights}} for tonight's buckets (after recording)."""
    out = {}
    for sig in signatures:
        row = conn.execute("SELECT first_seen, last_seen, repro FROM buckets WHERE signature ="
                           " ?", (sig,)).fetchone()
        n = conn.execute("SELECT COUNT(*) FROM bucket_nights WHERE signature = ?",
                         (sig,)).fetchone()[0]
        if row:
            out[sig] = {"first_seen": row[0], "last_seen": row[1], "nights": n}
    return out


def trends(conn, last=14):
    """Per night (oldest first): label, trials, buckets seen, failing trials, exit status."""
    rows = conn.execute("SELECT id, label, trials, exit_status FROM nights ORDER BY id DESC"
                        " LIMIT ?", (last,)).fetchall()
    out = []
    for r in reversed(rows):
        nb = conn.execute("SELECT COUNT(*) FROM bucket_nights WHERE night = ?",
                          (r["id"],)).fetchone()[0]
        bad = conn.execute("SELECT COUNT(*) FROM trials WHERE night = ? AND kind = 'cell' AND"
                           " status NOT IN ('clean', 'not-run', 'interrupted', 'lost')",
                           (r["id"],)).fetchone()[0]
        ops = conn.execute("SELECT AVG(allocator_ops_per_s) FROM trials WHERE night = ? AND"
                           " kind = 'cell' AND status = 'clean'", (r["id"],)).fetchone()[0]
        out.append({"night": r["label"], "trials": r["trials"], "buckets": nb,
                    "failing_trials": bad, "mean_allocator_ops_per_s": ops,
                    "exit_status": r["exit_status"]})
    return out
