"""`python -m harness.compare`: the options reach the trials' configuration (no trial runs here)."""

import pytest

from harness import compare as CMP
from harness.config import RunConfig


@pytest.fixture
def seen(monkeypatch):
    calls = []

    def fake(fault, trials, budget, modes, base, depth, steps):
        calls.append((fault, trials, budget, modes, base, depth, steps))
        return {m: {"caught": 0, "trials": trials, "median_ttd_s": None, "ops_per_s": 0,
                    "detectors": []} for m in modes}
    monkeypatch.setattr(CMP, "compare", fake)
    return calls


def test_no_pcp_and_the_pct_defaults_reach_the_base_configuration(seen, capsys):
    assert CMP.main(["--fault", "clean", "--trials", "3", "--modes", "plain,pct-sites",
                     "--no-pcp"]) == 0
    fault, trials, _, modes, base, depth, steps = seen[0]
    assert (fault, trials, modes, base.pcp) == ("clean", 3, ["plain", "pct-sites"], False)
    assert (depth, steps) == (RunConfig.pct_depth, RunConfig.pct_steps) == (3, 50000)
    out = capsys.readouterr().out
    assert "no per-CPU lists" in out and "| pct-sites | 0/3 |" in out


def test_per_cpu_lists_stay_on_by_default_also_with_a_preset(seen):
    CMP.main(["--fault", "clean", "--preset", "reuse"])
    base = seen[0][4]
    assert base.pcp and (base.threads, base.reclaimers) == (4, 2)
    assert (base.check_ms, base.stall_s) == (50, 2.0)


def test_an_unknown_mode_is_a_usage_error(seen):
    with pytest.raises(SystemExit) as exc:
        CMP.main(["--fault", "clean", "--modes", "plain,bogus"])
    assert exc.value.code == 2 and not seen
