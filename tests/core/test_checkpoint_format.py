"""The checkpoint format in detail: what the manifest looks like, how the file is written, and
the exact one-line reason for every way a file can be malformed (crafted with a valid
checksum, so each check is reached on its own)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import numpy as np
import pytest

from consortium.core import Message
from consortium.core.checkpoint import (
    _SEAL,
    FORMAT,
    VERSION,
    CheckpointError,
    _pack,
    decode_tree,
    encode_tree,
    read_checkpoint,
    save_checkpoint,
)


class Thing:
    """A value no checkpoint can hold (hashable, so it can also be a set member or key)."""


MASKED = np.ma.masked_array([1.0])

# -- writing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "reason"),
    [
        ({"a": {"b": MASKED}}, r"state\['a'\]\['b'\] is a MaskedArray, not a plain array"),
        ({"a": [np.void(b"ab")]}, r"state\['a'\]\[0\] has dtype \|V2, which it cannot hold"),
        ({"a": np.zeros(2, "V4")}, r"state\['a'\] has dtype \|V4, which it cannot hold"),
        ({"a": {1: Thing()}}, r"state\['a'\]\[1\] is a Thing, which a checkpoint cannot hold"),
        ({"a": {(0, Thing()): 1}}, r"state\['a'\]\[1\] is a Thing"),  # in a key
        ({"a": (0, Thing())}, r"state\['a'\]\[1\] is a Thing"),
        ({"a": {Thing()}}, r"state\['a'\] is a Thing"),
        ({"a": Message("k", {"w": MASKED})}, r"state\['a'\]\['arrays'\]\['w'\] is a MaskedArray"),
    ],
)
def test_a_value_that_cannot_be_saved_is_named_by_where_it_is(tmp_path, state, reason):
    with pytest.raises(TypeError, match=rf"^checkpoint: {reason}"):
        save_checkpoint(tmp_path / "c.npz", state)
    assert not (tmp_path / "c.npz").exists()


def test_the_manifest_keeps_plain_values_plain():
    """String-keyed dicts stay JSON objects (the manifest is readable as it is); only keys that
    could be mistaken for a tag, and non-string keys, take the ``$dict`` form."""
    tree, arrays = encode_tree({"a": {"b": [1, "x", None]}, "c": 0.5})
    assert tree == {"a": {"b": [1, "x", None]}, "c": 0.5} and arrays == []
    assert encode_tree({"$a": 1})[0] == {"$dict": [["$a", 1]]}
    assert encode_tree({1: "x"})[0] == {"$dict": [[1, "x"]]}


@pytest.mark.parametrize("state", [{"$a": 1}, {"$array": 0}, {"k": {"$tuple": [1]}}])
def test_keys_that_look_like_tags_round_trip(tmp_path, state):
    save_checkpoint(tmp_path / "c.npz", state)
    assert read_checkpoint(tmp_path / "c.npz") == state


def test_sets_are_written_sorted_so_equal_states_give_equal_files(tmp_path):
    # CPython iterates {8, 1} as 8, 1 (its hash table order); the file must not depend on it
    assert encode_tree({8, 1})[0] == {"$set": [1, 8]}
    assert encode_tree(frozenset({"b", "a", "c"}))[0] == {"$frozenset": ["a", "b", "c"]}
    save_checkpoint(tmp_path / "a.npz", {"s": {8, 1}})
    save_checkpoint(tmp_path / "b.npz", {"s": {1, 8}})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_a_set_of_values_that_cannot_be_ordered_still_round_trips(tmp_path):
    state = {"s": {1, "a", None}, "f": frozenset({(1,), 2.5})}
    save_checkpoint(tmp_path / "c.npz", state)
    assert read_checkpoint(tmp_path / "c.npz") == state


def test_a_strided_matrix_comes_back_in_c_order(tmp_path):
    """Like ``numpy.save``: an array that is neither C- nor F-contiguous is stored in C order."""
    view = np.arange(20.0).reshape(4, 5)[::2, ::2]
    assert not view.flags.c_contiguous and not view.flags.f_contiguous
    save_checkpoint(tmp_path / "c.npz", {"v": view})
    back = read_checkpoint(tmp_path / "c.npz")["v"]
    assert np.array_equal(back, view) and back.flags.c_contiguous and not back.flags.f_contiguous


def test_the_manifest_is_compact_json(tmp_path):
    save_checkpoint(tmp_path / "c.npz", {"a": [1, 2, {"b": None}], "w": np.ones(2)})
    with np.load(tmp_path / "c.npz") as npz:
        manifest = npz["manifest"].tobytes()
    assert json.loads(manifest)["format"] == FORMAT
    assert b" " not in manifest  # no padding after separators


def test_a_leftover_temporary_file_of_a_crashed_save_is_replaced(tmp_path):
    (tmp_path / "c.npz.tmp").write_bytes(b"half a checkpoint")
    save_checkpoint(tmp_path / "c.npz", {"x": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]
    assert read_checkpoint(tmp_path / "c.npz") == {"x": 1}


def test_entries_beyond_the_zip32_limit_are_written(tmp_path, monkeypatch):
    """Weights over 4 GiB need zip64 entries; the limit is lowered so a small array crosses it."""
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 1024)
    weights = np.arange(1000, dtype=np.float64)
    save_checkpoint(tmp_path / "c.npz", {"w": weights})
    assert np.array_equal(read_checkpoint(tmp_path / "c.npz")["w"], weights)


# -- reading: every malformed part is a one-line CheckpointError --------------------------------


def write_sealed(path, manifest: bytes, data: bytes = b"\x00" * 16):
    """A file with these manifest and data bytes and a valid checksum."""
    sealed, digest = _pack([memoryview(manifest)], [memoryview(data)])
    path.write_bytes(bytes(sealed) + digest)
    return path


def forge(tmp_path, arrays, state, data=b"\x00" * 16):
    head = {"format": FORMAT, "version": VERSION, "arrays": arrays, "state": state}
    return write_sealed(tmp_path / "forged.npz", json.dumps(head).encode(), data)


def refused(path, reason: str) -> None:
    with pytest.raises(CheckpointError, match=f"^{re.escape(str(path))}: {reason}$"):
        read_checkpoint(path)


ONE = [["<f8", [], "C", 0, 8]]  # one float64 scalar array, index 0
PAIR = [["<f8", [2], "C", 0, 16]]  # one array of two float64


@pytest.mark.parametrize(
    ("arrays", "state", "reason"),
    [
        (ONE, {"a": {"$array": 1}}, "array reference 1 out of range"),
        (ONE, {"a": {"$array": -1}}, "array reference -1 out of range"),
        (ONE, {"a": {"$array": True}}, "array reference True out of range"),
        (PAIR, {"a": {"$scalar": 0}}, "a scalar entry refers to an array"),
        ([], {"a": {"$tuple": "nan"}}, "malformed or unknown tagged value '\\$tuple'"),
        ([], {"a": {"$float": "1.5"}}, "malformed or unknown tagged value '\\$float'"),
        ([], {"a": {"$bytes": "AAAA!"}}, "malformed \\$bytes entry"),
        ([], {"a": {"$bytes": "AAA"}}, "malformed \\$bytes entry"),
        ([], {"a": {"$message": {"kind": "k"}}}, "malformed \\$message entry"),
        ([], {"a": {"$message": [1]}}, "malformed \\$message entry"),
        ([], {"a": {"$dict": [[1, 2, 3]]}}, "malformed \\$dict entry"),
        ([], {"a": {"$dict": [5]}}, "malformed \\$dict entry"),
        ([], {"a": {"$eval": []}}, "unknown tag '\\$eval'"),
        ([], {"$a": 1, "b": 2, "c": 3, "d": 4}, r"malformed tagged value \['\$a', 'b', 'c'\]"),
        ([], {"a": {"$set": [[1, 2]]}}, "a list cannot be a dict key or set member"),
        ([], {"a": {"$dict": [[{"k": 1}, 2]]}}, "a dict cannot be a dict key or set member"),
    ],
)
def test_a_malformed_state_is_refused_with_its_reason(tmp_path, arrays, state, reason):
    refused(forge(tmp_path, arrays, state), reason)


def test_well_formed_tagged_values_are_read(tmp_path):
    state = {
        "s": {"$scalar": 0},
        "b": {"$bytes": "AAAA"},
        "f": {"$float": "-inf"},
        "m": {"$message": {"kind": "k", "arrays": {}, "config": {"lr": 0.1}, "metrics": {}}},
    }
    got = read_checkpoint(forge(tmp_path, ONE, state))
    assert got["s"] == 0.0 and got["b"] == b"\x00\x00\x00" and got["f"] == float("-inf")
    assert got["m"] == Message("k", {}, {"lr": 0.1}, {})


def test_decode_tree_refuses_what_json_cannot_hold():
    with pytest.raises(CheckpointError, match=r"^unexpected bytes in the manifest$"):
        decode_tree({"a": b"x"}, [])


@pytest.mark.parametrize(
    ("arrays", "reason"),
    [
        ({}, "malformed array table"),
        ([["<f8", [2]]], "malformed array entry: not enough values to unpack .*"),
        ([["<f8", ["x"], "C", 0, 16]], "malformed array entry: invalid literal .*"),
        ([["|V8", [2], "C", 0, 16]], re.escape("array dtype |V8 is not allowed in a checkpoint")),
        ([["<f8", [2], "X", 0, 16]], "malformed array entry {}"),
        ([["<f8", [-2], "C", 0, 16]], "malformed array entry {}"),
        ([["<f8", [2], "C", 0, 8]], "array entry {} does not fit the data"),  # size
        ([["<f8", [2], "C", 8, 16]], "array entry {} does not fit the data"),  # offset
        ([["<f8", [2], "C", 0.0, 16]], "array entry {} does not fit the data"),
        ([["<f8", [2], "C", 0, 16.0]], "array entry {} does not fit the data"),
    ],
)
def test_a_malformed_array_table_is_refused_with_its_reason(tmp_path, arrays, reason):
    """``{}`` in the reason stands for the entry as the manifest holds it."""
    if "{}" in reason:
        reason = re.escape(reason.format(arrays[0]))
    refused(forge(tmp_path, arrays, {}), reason)


def test_an_empty_array_is_read_from_an_empty_data_entry(tmp_path):
    path = forge(tmp_path, [["<f4", [0, 3], "F", 0, 0]], {"e": {"$array": 0}}, data=b"")
    empty = read_checkpoint(path)["e"]
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def sealed_npz(tmp_path, entries):
    """An ``.npz`` of these entries sealed as a checkpoint is: right checksum, wrong content."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, value in entries.items():
            with archive.open(f"{name}.npy", "w") as fh:
                np.lib.format.write_array(fh, value)
        archive.comment = _SEAL + b"0" * 64
    sealed = buffer.getvalue()[:-64]
    path = tmp_path / "sealed.npz"
    path.write_bytes(sealed + hashlib.sha256(sealed).hexdigest().encode())
    return path


def manifest_bytes(**head) -> np.ndarray:
    head = {"format": FORMAT, "version": VERSION, "arrays": [], "state": {}, **head}
    return np.frombuffer(json.dumps(head).encode(), np.uint8)


def test_a_sealed_archive_with_the_wrong_entries_is_refused(tmp_path):
    good = {"manifest": manifest_bytes(), "data": np.zeros(0, np.uint8)}
    assert read_checkpoint(sealed_npz(tmp_path, good)) == {}
    extra = {**good, "extra": np.zeros(1, np.uint8)}
    refused(sealed_npz(tmp_path, extra), "not a consortium checkpoint")
    refused(sealed_npz(tmp_path, {"manifest": good["manifest"]}), "not a consortium checkpoint")
    as_float = {**good, "manifest": good["manifest"].astype(np.float64)}
    refused(sealed_npz(tmp_path, as_float), "not a consortium checkpoint \\(entry 'manifest'\\)")
    as_matrix = {**good, "data": np.zeros((2, 2), np.uint8)}
    refused(sealed_npz(tmp_path, as_matrix), "not a consortium checkpoint \\(entry 'data'\\)")


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        (b"\xff\xfe", "malformed manifest \\(.*\\)"),
        (b"{", "malformed manifest \\(.*\\)"),
        (b"[1]", "not a consortium checkpoint"),
        (b'{"format": "other", "version": 2}', "not a consortium checkpoint"),
        (b'{"version": 2}', "not a consortium checkpoint"),
        ({"format": FORMAT, "version": 1}, "checkpoint version 1 is not supported"),
        (
            {"format": FORMAT, "version": VERSION, "arrays": [], "state": [1]},
            "malformed checkpoint state",
        ),
    ],
)
def test_a_malformed_manifest_is_refused_with_its_reason(tmp_path, manifest, reason):
    if isinstance(manifest, dict):
        manifest = json.dumps(manifest).encode()
    refused(write_sealed(tmp_path / "c.npz", manifest), reason)


def test_a_parse_error_without_a_message_is_named_by_its_type(tmp_path, monkeypatch):
    save_checkpoint(tmp_path / "c.npz", {"x": 1})

    def fail(*args, **kwargs):
        raise MemoryError()

    monkeypatch.setattr(np, "load", fail)
    refused(tmp_path / "c.npz", "not a readable consortium checkpoint \\(MemoryError\\)")
