"""Checkpoints hold data only: every state a workflow keeps round-trips exactly, and a
crafted, corrupted or old pickled checkpoint is a one-line error that runs nothing."""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

from consortium.algorithms.base.supervised import supervised_client_app
from consortium.algorithms.fedavg import FedAvg, FedAvgConfig
from consortium.cli import main
from consortium.core import Message, load_checkpoint, run_workflow
from consortium.core.checkpoint import _SEAL, CheckpointError, read_checkpoint, save_checkpoint
from consortium.models import build_model
from consortium.runtime import LocalRuntime
from consortium.training import LocalTrainConfig


def same(a, b):
    """Equal in type and value, arrays bit for bit (dtype, shape, memory order)."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.flags.c_contiguous or a.flags.f_contiguous:  # a strided view comes back compact
            assert a.flags.f_contiguous == b.flags.f_contiguous
        assert a.tobytes() == b.tobytes()
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            same(x, y)
    elif isinstance(a, Message):
        assert (a.kind, a.config, a.metrics) == (b.kind, b.config, b.metrics)
        same(a.arrays, b.arrays)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


STATE = {
    # what the workflows and runtimes in src/ keep (grep state_dict): weights, int-keyed
    # dicts of dicts, sets turned lists, tuples in histories, messages, None, NaN summaries
    "weights": {
        "conv.weight": np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7,
        "bn.num_batches_tracked": np.array(5, np.int64),
        "big_endian": np.arange(3, dtype=">f8"),
        "fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        "strided": np.arange(20, dtype=np.int16)[::3],
        "empty": np.zeros((0, 3), np.float16),
        "mask": np.array([True, False]),
        "complex": np.array([1 + 2j], np.complex64),
    },
    "client_states": {0: {"model": {"w": np.ones(2)}, "pending_round": 3}, 7: {}},
    "history": [(1, 0.5, 0), (2, None, 1)],
    "initialised": {1, 2, 3},
    "frozen": frozenset({"a"}),
    "scalars": [np.float64(0.1), np.int32(-4), np.bool_(True), 1e-320, -0.0, 2**70],
    "odd_floats": [float("nan"), float("inf"), float("-inf")],
    "tuple_keys": {(1, "x"): "t", "$not_a_tag": 1, 3.5: None},
    "replies": {2: Message("fit", {"w": np.ones(3, np.float32)}, {"lr": 0.1}, {"loss": 0.5})},
    "bytes": b"\x00\xff",
    "text": "ünïcode",
    "flag": False,
    "nothing": None,
}


def test_every_kind_of_state_round_trips_exactly(tmp_path):
    save_checkpoint(tmp_path / "c.npz", STATE)
    same(STATE, read_checkpoint(tmp_path / "c.npz"))


def test_state_a_checkpoint_cannot_hold_is_refused_when_saving(tmp_path):
    class Thing:
        pass

    with pytest.raises(TypeError, match=r"state\['x'\]\[0\] is a Thing"):
        save_checkpoint(tmp_path / "c.npz", {"x": [Thing()]})
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.array([None])})
    with pytest.raises(TypeError, match="MaskedArray"):
        save_checkpoint(tmp_path / "c.npz", {"x": np.ma.masked_array([1.0])})
    assert not (tmp_path / "c.npz").exists()


def sealed_zip(entries):
    """A zip of ``.npy`` entries (pickles allowed) sealed as a checkpoint is: the forger's tool."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in entries.items():
            with archive.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, value, allow_pickle=True)
        archive.comment = _SEAL + b"0" * 64
    sealed = buffer.getvalue()[:-64]
    return sealed + hashlib.sha256(sealed).hexdigest().encode()


class Boom:
    """Unpickling this would create a file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path, tiny_federation, capsys):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(pickle.dumps({"version": 1, "x": Boom(marker)}))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(run)
    assert "\n" not in str(err.value) and "a pickle" in str(err.value)
    # an npz whose entry is a pickled object array, with a valid checksum, is refused too
    (run / "checkpoint.npz").write_bytes(
        sealed_zip({"manifest": np.array([Boom(marker)]), "data": np.zeros(1, np.uint8)})
    )
    with pytest.raises(CheckpointError, match="Object arrays cannot be loaded"):
        load_checkpoint(run)
    # the old pickled checkpoint.pkl is never opened
    (run / "checkpoint.npz").unlink()
    (run / "checkpoint.pkl").write_bytes(pickle.dumps(Boom(marker)))
    with pytest.raises(CheckpointError, match="unpickling can run code"):
        load_checkpoint(run)
    assert not marker.exists()


def _checkpointed_run(tiny_federation, run_dir, rounds=2):
    x, y, views = tiny_federation
    model_fn = lambda: build_model("mlp", (1, 4, 4), 2, hidden=[8])  # noqa: E731
    cfg = FedAvgConfig(rounds=rounds, local=LocalTrainConfig(lr=0.1, batch_size=8))
    wf = FedAvg(cfg, model_fn, x[:20], y[:20], device="cpu")
    grid = LocalRuntime(supervised_client_app(model_fn, "cpu"), lambda c: views[c], 4, seed=1)
    return wf, grid


def test_every_flipped_byte_is_detected(tmp_path, tiny_federation):
    run = tmp_path / "run"
    run_workflow(*_checkpointed_run(tiny_federation, run), run_dir=run, progress=False)
    good = (run / "checkpoint.npz").read_bytes()
    assert load_checkpoint(run)["finished"] is True
    rng = np.random.default_rng(0)
    # every byte of the zip headers and of the seal, and random bytes elsewhere
    positions = sorted({*range(0, 128), *range(len(good) - 256, len(good))})
    positions += rng.choice(len(good), size=300, replace=False).tolist()
    for pos in positions:
        bad = bytearray(good)
        bad[pos] ^= 0x01
        (run / "checkpoint.npz").write_bytes(bytes(bad))
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(run)
        assert "\n" not in str(err.value)


def test_a_consistent_forgery_of_the_layout_is_refused(tmp_path):
    """A rewritten manifest with a matching checksum still cannot smuggle in object dtypes,
    out-of-range slices or unknown tags."""
    from consortium.core.checkpoint import FORMAT, VERSION, _pack

    def forge(arrays, state, data=b"\x00" * 16):
        manifest = json.dumps(
            {"format": FORMAT, "version": VERSION, "arrays": arrays, "state": state}
        ).encode()
        path = tmp_path / "forged.npz"
        sealed, digest = _pack([memoryview(manifest)], [memoryview(data)])
        path.write_bytes(bytes(sealed) + digest)
        return path

    cases = {
        "not allowed": ([["|O", [2], "C", 0, 16]], {"a": {"$array": 0}}),
        "does not fit": ([["<f8", [4], "C", 0, 32]], {"a": {"$array": 0}}),
        "out of range": ([], {"a": {"$array": 3}}),
        "unknown tag": ([], {"a": {"$eval": "os.system('x')"}}),
        "malformed tagged": ([], {"a": {"$tuple": [], "b": 1}}),
    }
    for reason, (arrays, state) in cases.items():
        with pytest.raises(CheckpointError, match=reason):
            read_checkpoint(forge(arrays, state))
    with pytest.raises(CheckpointError, match="not a consortium checkpoint"):
        np.savez(tmp_path / "other.npz", weights=np.ones(2))
        read_checkpoint(tmp_path / "other.npz")


def test_a_truncated_checkpoint_is_an_error(tmp_path, tiny_federation):
    run = tmp_path / "run"
    run_workflow(*_checkpointed_run(tiny_federation, run), run_dir=run, progress=False)
    data = (run / "checkpoint.npz").read_bytes()
    (run / "checkpoint.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="no checksum"):
        load_checkpoint(run)
    (run / "checkpoint.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no checksum"):
        load_checkpoint(run)


def test_resume_from_a_tampered_checkpoint_is_one_line_with_exit_code_2(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--no-progress", "--set", "federation.rounds=1"]
    args += ["--set", "data.max_samples=300", "--set", "data.num_clients=3"]
    args += ["--set", 'methods=["fedavg"]']
    assert main(args) == 0
    path = out / "fedavg" / "checkpoint.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("consortium: error:") and "checkpoint" in err
    assert len(err.splitlines()) == 1
