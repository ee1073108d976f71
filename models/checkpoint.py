"""One-file checkpoints that a crash cannot corrupt.

A checkpoint is a single `.npz` file holding the architecture config, every model
weight (by Keras path, in `model.weights` order), optionally the optimizer's variables
and a JSON training state. It is written to a temporary file in the same folder,
flushed to disk and then renamed over the old one: a rename is atomic, so a kill at
any moment leaves either the old or the new checkpoint, never half of one. A failed
write (a full disk, say) removes the temporary file and leaves the old checkpoint as
it was.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file."""


def temporary_beside(path: str, suffix: str) -> tuple[int, str]:
    """`(fd, tmp_path)` of a new `.tmp-*` file in `path`'s folder (created if needed),
    with the permissions an ordinary new file gets (mkstemp's are owner-only)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


def write_atomic(path: str, arrays: dict) -> None:
    """`np.savez` to `path` through a temporary file and an atomic rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = temporary_beside(path, ".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(folder)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            kept = " The previous checkpoint is intact." if os.path.exists(path) else ""
            raise CheckpointError(f"could not save checkpoint {path} "
                                  f"({e.strerror or e}).{kept}") from None
        raise


def _sync_folder(folder: str) -> None:
    """Flushes the folder entry, so the rename itself survives a power loss."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders; the rename still stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str) -> list[str]:
    """Deletes the `.tmp-*` files a killed writer left in `folder`; returns their paths.

    Only ever half-written copies: the checkpoints themselves are never temporaries.
    """
    stale = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith(".tmp-"):
                path = os.path.join(folder, name)
                try:
                    os.remove(path)
                    stale.append(path)
                except OSError:
                    pass
    return stale


def save(path: str, config: dict, weights: list, weight_names: list[str],
         optimizer_variables: list | None = None, state: dict | None = None) -> None:
    """Writes a checkpoint; see the module docstring for its content."""
    arrays = {"format_version": np.array(FORMAT_VERSION),
              "config": np.array(json.dumps(config)),
              "weight_names": np.array(weight_names)}
    arrays.update({f"weight_{i}": np.asarray(w) for i, w in enumerate(weights)})
    if optimizer_variables is not None:
        arrays["num_optimizer_variables"] = np.array(len(optimizer_variables))
        arrays.update({f"optimizer_{i}": np.asarray(v)
                       for i, v in enumerate(optimizer_variables)})
    if state is not None:
        arrays["state"] = np.array(json.dumps(state))
    write_atomic(path, arrays)


def load(path: str) -> dict:
    """Reads a checkpoint into a dict: config, weights, weight_names,
    optimizer_variables (or None) and state (or None)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = [str(n) for n in z["weight_names"]]
            ckpt = {"config": json.loads(str(z["config"])), "weight_names": names,
                    "weights": [z[f"weight_{i}"] for i in range(len(names))],
                    "optimizer_variables": None, "state": None}
            if "num_optimizer_variables" in z:
                n = int(z["num_optimizer_variables"])
                ckpt["optimizer_variables"] = [z[f"optimizer_{i}"] for i in range(n)]
            if "state" in z:
                ckpt["state"] = json.loads(str(z["state"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({e}); it may be "
                              f"from an interrupted copy. Use the other checkpoint of "
                              f"the run (best.npz or last.npz).") from None
    return ckpt
