"""Keras `.keras` checkpoints that a crash cannot corrupt.

A checkpoint is a Keras v3 archive (`model.save`): the model's config, its weights and,
when the model is compiled, its optimizer state. It is written to a temporary file in
the same folder, flushed to disk and renamed over the old one: a rename is atomic, so
a kill at any moment leaves either the old or the new checkpoint, never half of one.
A failed write (a full disk, say) removes the temporary file and leaves the old
checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile

import keras


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


def write_atomic(path: str, write) -> None:
    """Calls `write(tmp_path)`, flushes the file to disk and renames it to `path`.

    On failure the temporary is removed and `path` is untouched; an OSError becomes
    a `CheckpointError` that says so.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = temporary_beside(path, os.path.splitext(path)[1])
    os.close(fd)
    try:
        write(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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


def save_model(model: keras.Model, path: str) -> None:
    """`keras.saving.save_model` to `path` (a `.keras` file), atomically."""
    if not path.endswith(".keras"):
        raise ValueError(f"a checkpoint file name ends in .keras. Received: {path}")
    write_atomic(path, lambda tmp: keras.saving.save_model(model, tmp))


def load_model(path: str, compile: bool = False) -> keras.Model:
    """`keras.models.load_model(path)` with an error that names the file and the fix."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return keras.models.load_model(path, compile=compile)
    except (OSError, ValueError, KeyError, EOFError, TypeError,
            zipfile.BadZipFile) as e:
        raise CheckpointError(damaged_message(path, e)) from None


def read_config(path: str) -> dict:
    """The `SegNet` config stored in a `.keras` file, without building the model."""
    try:
        with zipfile.ZipFile(path) as z:
            config = json.loads(z.read("config.json"))
        return config["config"]["segnet"]["config"]
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise CheckpointError(damaged_message(path, e)) from None


def damaged_message(path: str, error) -> str:
    return (f"{path} is not a readable checkpoint ({str(error).splitlines()[0]}); it "
            f"may be from an interrupted copy. Use the other checkpoint of the run "
            f"(best.keras or last.keras).")


def write_state(run_dir: str, state: dict, on_disk: int | None) -> None:
    """Writes `state` to `run_dir/state.json` (atomically), keeping the state of the
    `last.keras` now on disk (whose optimizer is at step `on_disk`).

    The training state is written just before `last.keras`, and each records the
    optimizer's step count (`state["iterations"]`): whichever of the two files a kill
    leaves newer, `read_state` finds the state that belongs to `last.keras`.
    """
    try:
        previous = [s for s in _states(run_dir) if s["iterations"] == on_disk][-1:]
    except CheckpointError:
        previous = []  # a damaged state.json is replaced, not fatal
    states = [s for s in previous if s["iterations"] != state["iterations"]] + [state]
    write_atomic(os.path.join(run_dir, "state.json"),
                 lambda tmp: _dump_json(tmp, {"states": states}))


def read_state(run_dir: str, iterations: int) -> dict:
    """The training state saved with a `last.keras` whose optimizer is at step
    `iterations`."""
    match = [s for s in _states(run_dir) if s["iterations"] == iterations]
    if not match:
        raise CheckpointError(f"{run_dir}/state.json holds no training state for "
                              f"last.keras (step {iterations}); the run cannot be "
                              f"resumed exactly")
    return match[-1]


def _states(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, "state.json")
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            return json.load(f)["states"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(damaged_message(path, e)) from None


def _dump_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
