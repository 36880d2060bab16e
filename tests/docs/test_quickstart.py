"""docs/quickstart.md: every Python block runs, in order, and does what the page says."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_the_quickstart_page_runs(run_page, tmp_path):
    pytest.importorskip("flwr")
    ns = run_page("quickstart.md")
    run = tmp_path / "runs" / "quickstart"
    assert (run / "fedavg" / "model.npz").exists() and (run / "data.json").exists()
    assert [r for m, r in ns["seen"] if m == "fedavg"] == [1, 2, 3] and len(ns["curve"]) == 3
    assert set(ns["unlearned"]) == {"original", "selective", "finetune"}
    assert ns["forgetful"].training is False
    assert ns["flower_result"].summaries["fedavg"]["rounds"] == 3
    assert Path(ns["flower_result"].run_dir, "fedavg", "metrics.jsonl").exists()
