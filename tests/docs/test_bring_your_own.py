"""docs/bring-your-own.md: its Python blocks run, and what they register works."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

import consortium.data
import consortium.models
from consortium.data import DataConfig

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "own_data"


def test_the_guide_blocks_register_a_working_model_and_datasets(run_page, monkeypatch, tmp_path):
    # The example plugin (for its site folders) registers for real, before the recording below.
    monkeypatch.syspath_prepend(str(EXAMPLE))
    make = importlib.import_module("hospitals").make_example_sites
    models, data = {}, {}
    # Record what the page registers instead of adding it to the process-wide registries.
    monkeypatch.setattr(consortium.models, "register_model", lambda n, b: models.update({n: b}))
    monkeypatch.setattr(consortium.data, "register_dataset", lambda n, **kw: data.update({n: kw}))
    ns = run_page("bring-your-own.md")
    assert set(models) == {"risk_net"} and set(data) == {"blobs", "hospitals"}
    net = models["risk_net"]((8,), 2, hidden=4)
    assert net(torch.zeros(3, 8)).shape == (3, 2)
    splits = data["blobs"]["load"](None)
    assert splits.train.x.shape == (400, 6) and splits.test is None
    # The page's builder reads the example's site folders, one member at a time.
    root = make(tmp_path / "sites", sites=2)
    cfg = DataConfig(dataset="digits", path=str(root), num_clients=2)
    built = data["hospitals"]["build"](cfg, ns["HospitalOptions"](), 0)
    assert len(built.test_y) == 200 and built.client(1).num_train > 0
