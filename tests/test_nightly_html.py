"""The night's HTML page in real headless Chromium: it renders the outcome matrix and the
plots, and logs no console error.

Uses Debian's `chromium` (.ci/run installs it); skipped, with the reason, where no
browser can be had.  The page is rendered from a night.json built here from
synthetic trial records (the renderer reads only the saved night), so this test
runs no trial.
"""

import os
import shutil
import struct
import subprocess
import zlib

import pytest

from harness import nightly as N
from harness import render_html
from harness.render_html import BAR, COLORS, DOT
from harness import trials as T

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser():
    return next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)


def record(tid, cell, kind, status, ops=2.0e6, sigs=(), ttd=None, fault=None,
           detector="ownership"):
    return {"id": tid, "cell": cell, "kind": kind, "status": status, "fault": fault,
            "command": f"python -m harness stress --seed 1 # {tid}", "elapsed_s": 3.0,
            "signatures": [list(s) for s in sigs], "ttd_s": ttd, "problems": [],
            "detection_s": {detector: ttd} if ttd else {}, "allocator_ops_per_s": ops,
            "locks": {"block": {"acquisitions": 10, "contended": 1, "wait_ms": 0.1}},
            "reclaims": 5, "captured_other_pages": 3, "warnings": [], "started": 1.0,
            "config": {"threads": 2, "reclaimers": 1, "capture": True}}


def night(tmp_path):
    sig = ("double_allocation in alloc/free", "double_allocation in alloc/free")
    recs = [record(f"fine-t2/{k}", "fine-t2", "cell", T.CLEAN, 2.0e6 + k) for k in (1, 2)]
    recs += [record("zone-t8/1", "zone-t8", "cell", T.VIOLATIONS, sigs=[sig], ttd=0.01),
             record("zone-t8/2", "zone-t8", "cell", T.CLEAN, 1.1e6)]
    for f in ("stale-buddy-order", "capture-before-block"):
        recs += [record(f"canary-{f}/{k}", f"canary-{f}", "canary", T.VIOLATIONS,
                        ttd=0.001 * k * (3 if f[0] == "c" else 1), fault=f,
                        detector="lockdep" if f[0] == "c" else "ownership") for k in (1, 2)]
    buckets = {sig[0]: {"signature": sig[0], "title": sig[1], "count": 1, "ran": 2,
                        "cells": ["zone-t8"], "kill_rate": 0.5, "kill_rate_ci": [0.09, 0.91],
                        "median_ttd_s": 0.01, "newest": [], "command": recs[2]["command"],
                        "first_trial": "zone-t8/1", "state": "new", "first_seen": 1.7e9,
                        "last_seen": 1.7e9}}
    return {"schema": N.NIGHT_SCHEMA, "version": N.NIGHT_VERSION, "label": "2026-11-26",
            "started": 1.7e9, "elapsed_s": 1800, "budget_s": 1800, "shards": 1,
            "plan": {"how": "synthetic", "all_ids": [r["id"] for r in recs]},
            "matrix": {"cells": ["fine-t2", "zone-t8"],
                       "values": {"fine-t2": [["locking", "fine"], ["threads", "2"]],
                                  "zone-t8": [["locking", "zone"], ["threads", "8"]]}},
            "interrupted": False,
            "records": recs, "buckets": buckets, "canaries": N.canary_summary(recs),
            "vacuity": {}, "history": None, "exit_status": 1,
            "trends": [{"night": f"2026-11-{20 + k} 02:00", "trials": 70, "buckets": k % 3,
                        "failing_trials": k % 4, "mean_allocator_ops_per_s": 1e6,
                        "exit_status": 0} for k in range(6)]}


def png_pixels(path):
    """(width, height, set of RGB colours) of an 8-bit RGB/RGBA non-interlaced PNG."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and not interlace
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride, prev, colours = zlib.decompress(idat), w * bpp, bytearray(w * bpp), set()
    for y in range(h):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
        prev = line
    return w, h, colours


def rgb(hex_colour):
    return bytes.fromhex(hex_colour[1:])


@pytest.mark.timeout(60)
def test_html_page_renders_matrix_and_plots_in_headless_chromium(tmp_path):
    exe = browser()
    if exe is None:
        pytest.skip("no headless Chromium on this machine (Debian package `chromium`; .ci/run"
                    " installs it)")
    page = tmp_path / "report.html"
    page.write_text(render_html.render(night(tmp_path)))
    text = page.read_text()
    assert "<th>threads=2</th>" in text and "<th>zone</th>" in text       # a grid, not a list
    assert "<script" not in text and "http" not in text.replace(
        "http://www.w3.org/2000/svg", "")                        # self-contained
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--window-size=1000,1000",
         page.as_uri()], capture_output=True, text=True, timeout=50,
        env={**os.environ, "HOME": str(tmp_path)})
    assert shot.exists(), proc.stderr[-2000:]
    console = [x for x in proc.stderr.splitlines() if "CONSOLE" in x or "Uncaught" in x]
    assert console == [], console
    w, h, colours = png_pixels(shot)
    assert (w, h) == (1000, 1000)
    for name, colour in (("clean cell", COLORS[T.CLEAN]), ("failing cell", COLORS[T.VIOLATIONS]),
                         ("plot bars", BAR), ("detection-time dots", DOT)):
        assert rgb(colour) in colours, f"the screenshot shows no {name} ({colour})"
