"""Every array in every file a command left in its output folder, named by file and path inside it.

Read inside the cell, where NumPy, TensorFlow and h5py (which comes with Keras) are. A file is read by
what it is, not by what it is called: NumPy's `.npy` and `.npz`, a Keras `.keras` archive (the weights
file inside it), HDF5 (`.h5`, `.weights.h5`: every dataset), a TensorFlow checkpoint (`X.index` with its
`X.data-*` shards, which a SavedModel's `variables/variables` is too: every variable). Anything else is
fingerprinted by its bytes.

Names (the record's outputs):
- `model.keras:dense/kernel`, `model.weights.h5:dense/bias`, `preds.npy`, `ckpt:model/dense/kernel/...`:
  an array a comparison judges. Keras 3 stores a layer's variables as `layers/<layer>/vars/<i>`; when a
  `.keras` model in the folder loads, its layers name them (`dense/kernel`) in every weights file.
- `epoch.03:checkpoints/epoch-03.weights.h5:dense/kernel`: one of a series of files whose names differ
  only in one number (what `ModelCheckpoint(... {epoch} ...)` writes), numbered by it; read for the first
  epoch at which two runs part, sampled in the record like any per-epoch array.
- `bytes:train.log`: a file that holds no array, as its bytes: reported as "also differs", never what
  decides a verdict (a log with a time in it would otherwise make every run differ).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .records import COMMAND_BYTES_PREFIX, COMMAND_EPOCH_PREFIX

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"
# A TF checkpoint's data shards, read through its index file.
SHARD = re.compile(r"^(?P<prefix>.+)\.data-\d+-of-\d+$")
# Keras 3's layout of a layer's own variables in a weights file.
KERAS3_VARS = re.compile(r"^(?:(?P<outer>.*)/)?(?P<layer>[^/]+)/vars/(?P<index>\d+)$")
# Not a variable: the checkpoint's object graph, a serialized proto.
CHECKPOINT_GRAPH = "_CHECKPOINTABLE_OBJECT_GRAPH"
DIGITS = re.compile(r"\d+")


class UnreadableFile(ValueError):
    """A file that claims a format (by its first bytes) but does not read as one."""


@dataclass(frozen=True)
class Unit:
    """One thing that is read as a whole: a file, or a TF checkpoint (its index and data shards)."""

    name: str  # the path under the output folder (a checkpoint: its prefix)
    kind: str  # npy, npz, keras, hdf5, checkpoint, bytes
    files: tuple[str, ...]


@dataclass
class SavedFiles:
    """What a command's output folder held: its arrays by name, and how each file was read."""

    arrays: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)  # unit name → kind
    epochs: dict[str, int] = field(default_factory=dict)  # unit name → its epoch, for the units of a series
    notes: list[str] = field(default_factory=list)  # what could not be read as it claimed, and was read as bytes

    def describe(self) -> dict[str, Any]:
        """What the record says about the files (beside the arrays, which are its outputs)."""
        return {"files": dict(sorted(self.units.items())), "epochs": dict(sorted(self.epochs.items())),
                "notes": self.notes}  # fmt: skip


def units_of(folder: Path) -> list[Unit]:
    """The folder's files grouped into what is read as one: a checkpoint's index and shards together."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    prefixes = {name.removesuffix(".index") for name in names if name.endswith(".index")}
    shards: dict[str, list[str]] = {}
    for name in names:
        match = SHARD.match(name)
        if match and match["prefix"] in prefixes:
            shards.setdefault(match["prefix"], []).append(name)
    in_checkpoints = {name for found in shards.values() for name in found}
    units = []
    for name in names:
        if name.endswith(".index") and name.removesuffix(".index") in prefixes:
            prefix = name.removesuffix(".index")
            units.append(Unit(prefix, "checkpoint", (name, *shards.get(prefix, []))))
        elif name not in in_checkpoints:
            units.append(Unit(name, _kind(folder / name), (name,)))
    return units


def _kind(path: Path) -> str:
    with path.open("rb") as handle:
        head = handle.read(8)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as archive:
                members = archive.namelist()
        except zipfile.BadZipFile:
            return "bytes"
        if "model.weights.h5" in members:
            return "keras"
        if members and all(member.endswith(".npy") for member in members):
            return "npz"
    return "bytes"


def epoch_series(names: list[str]) -> dict[str, int]:
    """Names that differ only in one number, two or more of them: each name's number (its epoch).

    `epoch-01.weights.h5`, `epoch-02.weights.h5` → 1, 2. With more than one number varying
    (`weights.03-0.52.h5`, a loss in the name), the first varying one that tells them all apart.
    """
    groups: dict[str, list[tuple[str, list[int]]]] = {}
    for name in names:
        numbers = [int(n) for n in DIGITS.findall(name)]
        if numbers:
            groups.setdefault(DIGITS.sub("#", name), []).append((name, numbers))
    found: dict[str, int] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        for position in range(len(members[0][1])):
            values = [numbers[position] for _, numbers in members]
            if len(set(values)) == len(values):
                found.update({name: numbers[position] for name, numbers in members})
                break
    return found


def _h5py() -> Any:
    import h5py  # comes with Keras, in the cell

    return h5py


def _h5_arrays(np: Any, handle: Any) -> dict[str, Any]:
    """Every dataset of an open HDF5 file, by its path in the file."""
    h5py = _h5py()
    found: dict[str, Any] = {}

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Dataset):
            value = item[()]
            found[name] = np.frombuffer(value, dtype=np.uint8) if isinstance(value, bytes) else np.asarray(value)

    handle.visititems(visit)
    return found


def read_hdf5(np: Any, source: Any) -> dict[str, Any]:
    try:
        with _h5py().File(source, "r") as handle:
            return _h5_arrays(np, handle)
    except (OSError, ValueError) as exc:
        raise UnreadableFile(f"not a readable HDF5 file ({exc})") from None


def read_keras(np: Any, path: Path) -> dict[str, Any]:
    """The weights inside a `.keras` archive (its config and metadata are JSON: not arrays)."""
    with zipfile.ZipFile(path) as archive:
        return read_hdf5(np, io.BytesIO(archive.read("model.weights.h5")))


def read_checkpoint(np: Any, tf: Any, prefix: Path) -> dict[str, Any]:
    """Every variable of a TF checkpoint (tf.train.load_checkpoint), by its name in the checkpoint."""
    try:
        reader = tf.train.load_checkpoint(str(prefix))
        names = sorted(reader.get_variable_to_shape_map())
        return {name: np.asarray(reader.get_tensor(name)) for name in names if name != CHECKPOINT_GRAPH}
    except Exception as exc:  # TF raises its own error types (DataLossError, NotFoundError, ...)
        raise UnreadableFile(f"not a readable TF checkpoint ({type(exc).__name__}: {exc})") from None


def read_npy(np: Any, path: Path) -> dict[str, Any]:
    try:
        return {"": np.load(path, allow_pickle=False)}
    except ValueError as exc:
        raise UnreadableFile(f"not a readable .npy without pickles ({exc})") from None


def read_npz(np: Any, path: Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except ValueError as exc:
        raise UnreadableFile(f"not a readable .npz without pickles ({exc})") from None


def layer_variables(tf: Any, path: Path) -> dict[str, list[str]]:
    """Layer name → the names of its own variables in the order Keras saves them, from a `.keras`
    model that loads here; {} when it does not (a custom layer the script defines, say)."""
    try:
        model = tf.keras.models.load_model(str(path), compile=False)
        layers = list(model._flatten_layers(include_self=False))
    except Exception:  # a model that does not load without the script's own code: names stay as stored
        return {}
    found: dict[str, list[str]] = {}
    for layer in layers:
        # A layer saves its own variables, trainable first: Keras 3's `_trainable_variables`, Keras 2's
        # (2.13+, whose `.keras` has the same layout) `_trainable_weights`.
        keras3 = hasattr(layer, "_trainable_variables")
        own = getattr(layer, "_trainable_variables" if keras3 else "_trainable_weights", None)
        rest = getattr(layer, "_non_trainable_variables" if keras3 else "_non_trainable_weights", [])
        if own is None:
            return {}
        found[layer.name] = [str(v.name).rsplit("/", 1)[-1].split(":", 1)[0] for v in [*own, *rest]]
    return found


def readable_name(inner: str, names: dict[str, list[str]]) -> str:
    """`layers/dense/vars/0` → `dense/kernel` when the model names it; otherwise as stored."""
    match = KERAS3_VARS.match(inner)
    if not match:
        return inner
    own = names.get(match["layer"], [])
    index = int(match["index"])
    if index >= len(own):
        return inner
    outer = [part for part in (match["outer"] or "").split("/") if part and part != "layers"]  # Keras's nesting
    return "/".join([*outer, match["layer"], own[index]])


def read_folder(folder: Path, np: Any, tf: Any) -> SavedFiles:
    """Every array of every file under `folder`, named as the module's docstring says."""
    saved = SavedFiles()
    units = units_of(folder)
    names: dict[str, list[str]] = {}
    for unit in units:
        if unit.kind == "keras":
            names |= layer_variables(tf, folder / unit.name)
    saved.epochs = epoch_series([unit.name for unit in units if unit.kind != "bytes"])
    for unit in units:
        path = folder / unit.name
        try:
            if unit.kind == "npy":
                found = read_npy(np, path)
            elif unit.kind == "npz":
                found = read_npz(np, path)
            elif unit.kind == "keras":
                found = read_keras(np, path)
            elif unit.kind == "hdf5":
                found = read_hdf5(np, str(path))
            elif unit.kind == "checkpoint":
                found = read_checkpoint(np, tf, path)
            else:
                found = {}
            kind = unit.kind
        except UnreadableFile as exc:
            saved.notes.append(f"{unit.name}: {exc}; compared by its bytes")
            saved.epochs.pop(unit.name, None)
            found, kind = {}, "bytes"
        if not found:  # no array in it (or not a format read here): its bytes
            for file in unit.files:
                saved.arrays[f"{COMMAND_BYTES_PREFIX}{file}"] = np.frombuffer((folder / file).read_bytes(), np.uint8)
            saved.units[unit.name] = "bytes"
            continue
        saved.units[unit.name] = kind
        epoch = saved.epochs.get(unit.name)
        prefix = f"{COMMAND_EPOCH_PREFIX}{epoch:02d}:" if epoch is not None else ""
        for inner, array in found.items():
            label = readable_name(inner, names) if kind in ("keras", "hdf5") else inner
            saved.arrays[f"{prefix}{unit.name}:{label}" if label else f"{prefix}{unit.name}"] = array
    return saved
