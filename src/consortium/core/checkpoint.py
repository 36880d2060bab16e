"""Checkpoints that are data, never code.

A checkpoint holds what a workflow's and a runtime's ``state_dict()`` return: nested dicts,
lists, tuples and sets of numpy arrays and scalars, Python numbers, strings, bytes, ``None``
and :class:`~consortium.core.message.Message` values. Unpickling a file can run any code its
writer chose, so a run folder someone else could write to must never be unpickled; this
format is read with ``numpy.load(..., allow_pickle=False)`` and ``json`` only.

The file is a ``.npz`` (a zip of ``.npy`` files, readable with numpy alone) with two uint8
entries:

* ``manifest``: UTF-8 JSON: the state as a tree of plain JSON values in which every non-JSON
  value is a one-key object tagged with ``$`` (``{"$array": 3}``, ``{"$tuple": [...]}``,
  ``{"$dict": [[key, value], ...]}`` for dicts whose keys are not all strings, ...), plus the
  dtype, shape and byte range of every array;
* ``data``: the arrays' bytes, one after another (each array exactly as it was: dtype, byte
  order, shape and memory order are kept, so a resumed run is bit-identical);

and the zip's comment, at the very end of the file, holds the SHA-256 of every byte before
it. A flipped byte anywhere or a truncated file is an error, never a silently different
model. The checksum detects damage, not a deliberate rewrite by someone who can write the run
folder (such a person can also replace ``model.npz``); what the format guarantees is that
loading a crafted file runs no code.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from consortium.core.message import Message

FORMAT = "consortium-checkpoint"
VERSION = 2
_ENTRIES = {"manifest", "data"}
#: The zip comment that ends every checkpoint: this prefix, then the SHA-256 (hex) of every
#: byte of the file before the digest itself.
_SEAL = b"consortium-checkpoint sha256="
_DIGEST_LEN = 64
#: dtype kinds a checkpoint may hold: numbers, booleans, fixed-width text and times.
_KINDS = "biufcSUmM"
_MESSAGE_FIELDS = {"kind", "arrays", "config", "metrics"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (corrupted, tampered with, foreign); one line."""


class _Encoder:
    """Turns a state tree into JSON-ready values plus a list of arrays."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []

    def array(self, value: np.ndarray, where: str) -> int:
        if type(value) is not np.ndarray:
            raise TypeError(f"checkpoint: {where} is a {type(value).__name__}, not a plain array")
        if value.dtype.kind not in _KINDS or value.dtype.fields is not None:
            raise TypeError(f"checkpoint: {where} has dtype {value.dtype}, which it cannot hold")
        self.arrays.append(value)
        return len(self.arrays) - 1

    def __call__(self, value: Any, where: str = "state") -> Any:
        kind = type(value)
        if value is None or kind in (bool, int, str):
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$float": repr(value)}
        if isinstance(value, np.ndarray):
            return {"$array": self.array(value, where)}
        if isinstance(value, np.generic):
            return {"$scalar": self.array(np.asarray(value), where)}
        if isinstance(value, dict):
            items = list(value.items())
            if all(type(k) is str and not k.startswith("$") for k, _ in items):
                return {k: self(v, f"{where}[{k!r}]") for k, v in items}
            return {"$dict": [[self(k, where), self(v, f"{where}[{k!r}]")] for k, v in items]}
        if kind is list:
            return [self(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if kind is tuple:
            return {"$tuple": [self(v, f"{where}[{i}]") for i, v in enumerate(value)]}
        if kind in (set, frozenset):
            try:
                members = sorted(value)
            except TypeError:
                members = list(value)
            tag = "$set" if kind is set else "$frozenset"
            return {tag: [self(v, where) for v in members]}
        if kind is bytes:
            return {"$bytes": base64.b64encode(value).decode("ascii")}
        if isinstance(value, Message):
            fields = {
                "kind": value.kind,
                "arrays": dict(value.arrays),
                "config": dict(value.config),
                "metrics": dict(value.metrics),
            }
            return {"$message": self(fields, where)}
        raise TypeError(f"checkpoint: {where} is a {kind.__name__}, which a checkpoint cannot hold")


def decode_tree(node: Any, arrays: list[np.ndarray]) -> Any:
    """Inverse of :func:`encode_tree`; every malformed part raises :class:`CheckpointError`."""

    def array(index: Any) -> np.ndarray:
        if type(index) is not int or not 0 <= index < len(arrays):
            raise CheckpointError(f"array reference {index!r} out of range")
        return arrays[index]

    def tagged(tag: str, body: Any) -> Any:
        if tag == "$array":
            return array(body)
        if tag == "$scalar":
            value = array(body)
            if value.ndim != 0:
                raise CheckpointError("a scalar entry refers to an array")
            return value[()]
        if tag == "$float" and body in ("nan", "inf", "-inf"):
            return float(body)
        if tag == "$bytes" and type(body) is str:
            try:
                return base64.b64decode(body.encode("ascii"), validate=True)
            except ValueError:
                raise CheckpointError("malformed $bytes entry") from None
        if tag == "$message":
            fields = walk(body)
            if not isinstance(fields, dict) or set(fields) != _MESSAGE_FIELDS:
                raise CheckpointError("malformed $message entry")
            return Message(fields["kind"], fields["arrays"], fields["config"], fields["metrics"])
        if type(body) is not list:
            raise CheckpointError(f"malformed or unknown tagged value {tag!r}")
        if tag == "$tuple":
            return tuple(walk(v) for v in body)
        if tag in ("$set", "$frozenset"):
            values = [_hashable(walk(v)) for v in body]
            return set(values) if tag == "$set" else frozenset(values)
        if tag == "$dict":
            if not all(type(p) is list and len(p) == 2 for p in body):
                raise CheckpointError("malformed $dict entry")
            return {_hashable(walk(k)): walk(v) for k, v in body}
        raise CheckpointError(f"unknown tag {tag!r}")

    def walk(n: Any) -> Any:
        if n is None or type(n) in (bool, int, float, str):
            return n
        if type(n) is list:
            return [walk(v) for v in n]
        if type(n) is not dict:
            raise CheckpointError(f"unexpected {type(n).__name__} in the manifest")
        if any(k.startswith("$") for k in n):
            if len(n) != 1:
                raise CheckpointError(f"malformed tagged value {sorted(n)[:3]}")
            tag = next(iter(n))
            return tagged(tag, n[tag])
        return {k: walk(v) for k, v in n.items()}

    return walk(node)


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        raise CheckpointError(
            f"a {type(value).__name__} cannot be a dict key or set member"
        ) from None
    return value


def encode_tree(state: Any) -> tuple[Any, list[np.ndarray]]:
    """A state tree as JSON-ready values plus the arrays they refer to by index."""
    encoder = _Encoder()
    return encoder(state), encoder.arrays


def _order(array: np.ndarray) -> str:
    fortran = array.ndim > 1 and array.flags.f_contiguous and not array.flags.c_contiguous
    return "F" if fortran else "C"


def save_checkpoint(path: str | Path, state: Mapping[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (a crash never leaves half a checkpoint)."""
    tree, arrays = encode_tree(dict(state))
    layout, chunks, offset = [], [], 0
    for array in arrays:
        order = _order(array)
        raw = _raw_bytes(array, order)
        layout.append([array.dtype.str, list(array.shape), order, offset, raw.nbytes])
        chunks.append(raw)
        offset += raw.nbytes
    manifest = json.dumps(
        {"format": FORMAT, "version": VERSION, "arrays": layout, "state": tree},
        allow_nan=False,
        separators=(",", ":"),
    ).encode()
    sealed, digest = _pack([memoryview(manifest)], chunks)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(sealed)
        fh.write(digest)
    os.replace(tmp, path)


def _raw_bytes(array: np.ndarray, order: str) -> memoryview:
    """The array's bytes in ``order`` without a copy when its memory already is in order."""
    source = array.T if order == "F" else array
    if not source.flags.c_contiguous:
        source = np.ascontiguousarray(source)
    return source.reshape(-1).view(np.uint8).data


def _pack(manifest: list[memoryview], data: list[memoryview]) -> tuple[memoryview, bytes]:
    """A zip of the two entries (each one ``.npy`` of uint8, written chunk by chunk), and the
    SHA-256 (hex) of all of it, which ends the zip's comment: the file is ``sealed + digest``.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, chunks in (("manifest", manifest), ("data", data)):
            with archive.open(f"{name}.npy", "w", force_zip64=True) as fh:
                total = sum(c.nbytes for c in chunks)
                header = {"descr": "|u1", "fortran_order": False, "shape": (total,)}
                np.lib.format.write_array_header_2_0(fh, header)
                for chunk in chunks:
                    fh.write(chunk)
        archive.comment = _SEAL + b"0" * _DIGEST_LEN
    sealed = buffer.getbuffer()[:-_DIGEST_LEN]
    return sealed, hashlib.sha256(sealed).hexdigest().encode()


def _arrays(layout: Any, data: np.ndarray) -> list[np.ndarray]:
    if type(layout) is not list:
        raise CheckpointError("malformed array table")
    out = []
    for entry in layout:
        try:
            dtype_str, shape, order, offset, size = entry
            dtype = np.dtype(str(dtype_str))
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"malformed array entry: {err}") from None
        if dtype.kind not in _KINDS or dtype.fields is not None or dtype.hasobject:
            raise CheckpointError(f"array dtype {dtype} is not allowed in a checkpoint")
        if order not in ("C", "F") or any(s < 0 for s in shape):
            raise CheckpointError(f"malformed array entry {entry!r}")
        count = math.prod(shape)
        if (
            type(offset) is not int
            or type(size) is not int
            or size != count * dtype.itemsize
            or not 0 <= offset <= data.nbytes - size
        ):
            raise CheckpointError(f"array entry {entry!r} does not fit the data")
        flat = np.frombuffer(data, dtype, count, offset) if count else np.empty(0, dtype)
        out.append(flat.reshape(shape, order=order).copy(order=order))
    return out


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; never runs code from the file.

    Raises :class:`CheckpointError` with a one-line reason for anything else: a pickle, a
    foreign or truncated file, a checksum that does not match, a malformed manifest.
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:1] == b"\x80":  # a pickle's protocol byte: refused before anything parses it
        raise CheckpointError(f"{path}: a pickle, not a consortium checkpoint; it is never loaded")
    sealed, digest = raw[:-_DIGEST_LEN], raw[-_DIGEST_LEN:]
    if not sealed.endswith(_SEAL):
        raise CheckpointError(f"{path}: not a consortium checkpoint (no checksum)")
    if hashlib.sha256(sealed).hexdigest().encode() != digest:
        raise CheckpointError(
            f"{path}: checksum mismatch: the checkpoint is corrupted or was changed"
        )
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            if not isinstance(npz, np.lib.npyio.NpzFile) or set(npz.files) != _ENTRIES:
                raise CheckpointError(f"{path}: not a consortium checkpoint")
            entries = {name: npz[name] for name in _ENTRIES}
    except CheckpointError:
        raise
    except Exception as err:  # any failure to parse an untrusted file means: unreadable
        reason = " ".join(str(err).split()) or type(err).__name__
        raise CheckpointError(f"{path}: not a readable consortium checkpoint ({reason})") from None
    for name, value in entries.items():
        if value.dtype != np.uint8 or value.ndim != 1:
            raise CheckpointError(f"{path}: not a consortium checkpoint (entry {name!r})")
    manifest, data = entries["manifest"].tobytes(), entries["data"]
    try:
        head = json.loads(manifest.decode())
    except (UnicodeDecodeError, ValueError) as err:
        raise CheckpointError(f"{path}: malformed manifest ({err})") from None
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a consortium checkpoint")
    if head.get("version") != VERSION:
        version = head.get("version")
        raise CheckpointError(f"{path}: checkpoint version {version!r} is not supported")
    try:
        state = decode_tree(head.get("state"), _arrays(head.get("arrays"), data))
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: malformed checkpoint state")
    return state
