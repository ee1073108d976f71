"""The run folder train.py writes, and reading it back.

    RUN/config.json    every flag of the run, the model's config, the data used
    RUN/last.keras     the model and its optimizer state, every epoch end
    RUN/best.keras     the model that scored best on validation (no optimizer state)
    RUN/state.json     what the callbacks need to continue exactly (`write_state`)
    RUN/history.csv    one row per epoch;  RUN/learning_curve.png  the curves
    RUN/tensorboard/   epoch-level logs for TensorBoard

Every file is written whole or not at all (`common.files`). `last.keras` and
`state.json` are a pair: the state is written just before the checkpoint, and each
records the optimizer's step count, so whichever of the two a kill leaves newer,
`read_state` finds the state that belongs to the `last.keras` on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import zipfile

import keras

from common.files import (atomic_path, recover_folder, staging_folder, swap_in_folder,
                          write_json)

STATE_FILE, CONFIG_FILE, LOCK_FILE = "state.json", "config.json", ".lock"
# What a finished or interrupted run has that a new one would lose (config.json alone
# is a run that never saved a checkpoint: nothing to lose).
RUN_FILES = ("last.keras", "best.keras", STATE_FILE, "history.csv", "metrics.json")


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read; the message names the file."""


def save_checkpoint(model: keras.Model, path: str) -> None:
    """`model.save(path)` (a `.keras` file), atomically: a failed write leaves the
    previous checkpoint as it was and says so."""
    if not path.endswith(".keras"):
        raise ValueError(f"a checkpoint file name ends in .keras. Received: {path}")
    try:
        with atomic_path(path) as tmp:
            keras.saving.save_model(model, tmp)
    except OSError as e:
        kept = " The previous checkpoint is intact." if os.path.exists(path) else ""
        raise CheckpointError(f"could not save checkpoint {path} "
                              f"({e.strerror or e}).{kept}") from None


def load_checkpoint(path: str, compile: bool = False) -> keras.Model:
    """`keras.models.load_model(path)`, with an error that names the file and the fix
    when it is missing or damaged."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return keras.models.load_model(path, compile=compile)
    except (OSError, ValueError, KeyError, EOFError, TypeError,
            zipfile.BadZipFile) as e:
        raise CheckpointError(damaged_message(path, e)) from None


def checkpoint_config(path: str) -> dict:
    """The model config stored in a `.keras` file (`{"class_name", "config", ...}`),
    read without building the model."""
    try:
        with zipfile.ZipFile(path) as z:
            return json.loads(z.read("config.json"))
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise CheckpointError(damaged_message(path, e)) from None


def damaged_message(path: str, error) -> str:
    """What to say of a checkpoint Keras cannot read, and which file to use instead."""
    other = {"best.keras": "last.keras", "last.keras": "best.keras"}.get(
        os.path.basename(path))
    other = os.path.join(os.path.dirname(path), other) if other else None
    offer = (f"--checkpoint {other}" if other and os.path.isfile(other)
             else "best.keras or last.keras")
    reason = str(error).splitlines()[0]
    if os.path.isfile(path) and (not zipfile.is_zipfile(path) or "not found" in reason):
        # Keras says "File not found" of a file that is there but not a whole archive
        reason = "not a whole Keras archive: damaged, truncated or another kind of file"
    return (f"{path} is not a readable checkpoint ({reason}); it may be from an "
            f"interrupted copy. Use the other checkpoint of the run ({offer}).")


def checkpoint_path(run_dir: str | None, checkpoint: str | None) -> str:
    """`--checkpoint FILE.keras`, else `RUN/best.keras` (falling back to
    `RUN/last.keras`)."""
    if checkpoint:
        if not os.path.isfile(checkpoint):
            raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
        return checkpoint
    if not run_dir:
        raise ValueError("give --run RUN_DIR or --checkpoint FILE")
    for name in ("best.keras", "last.keras"):
        path = os.path.join(run_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no checkpoint in {run_dir} (expected best.keras or "
                            f"last.keras written by train.py --out {run_dir})")


def read_run_config(run_dir: str | None) -> dict:
    """The `config.json` train.py saved beside its checkpoints ({} if none)."""
    path = os.path.join(run_dir or "", CONFIG_FILE)
    if not run_dir or not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


# --------------------------------------------------------------------------- folder


def holds_run(path: str) -> list[str]:
    """The files of a run that `path` holds (none: a new or empty folder)."""
    return [f for f in RUN_FILES if os.path.exists(os.path.join(path, f))]


def check_out(path: str, resume: bool = False, overwrite: bool = False) -> None:
    """Fails, naming the fix, on a run folder this run may not write: a file, another
    run (without --resume or --overwrite), one another process trains into."""
    if resume and overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces "
                         "it: give one of them")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path} is a file; give a folder")
    recover_folder(path)
    found = holds_run(path)
    if found and not (resume or overwrite):
        raise ValueError(f"--out {path} already holds a run ({', '.join(found)}); add "
                         f"--resume to continue it, --overwrite to replace it (the old "
                         f"run stays until the new one has saved its first checkpoint), "
                         f"or choose another --out")
    if resume and "last.keras" not in found:
        raise FileNotFoundError(f"--resume: no {path}/last.keras to continue from")
    holder = lock_holder(path)
    if holder:
        raise ValueError(f"--out {path} is in use by another training run ({holder}); "
                         f"wait for it to end or choose another --out")


class RunFolder:
    """The folder a run writes, locked for the run's life (`RUN/.lock`, released on
    exit and by the system when the process dies, so a crash leaves no stale lock).

    With `overwrite` an existing run stays whole until the new one has saved its
    first checkpoint: until then the run writes into a staging folder beside it
    (`path`), which `commit` swaps in (`common.files.swap_in_folder`). `scratch()` is
    the private folder a non-chief worker writes and forgets.
    """

    def __init__(self, path: str, resume: bool = False, overwrite: bool = False):
        check_out(path, resume, overwrite)
        os.makedirs(path, exist_ok=True)
        self.final = self.path = path
        self.locks = [acquire_lock(path)]
        self.scratch_dir = None
        if overwrite and holds_run(path):
            self.path = staging_folder(path)
            self.locks.append(acquire_lock(self.path))

    @classmethod
    def scratch(cls) -> "RunFolder":
        folder = cls.__new__(cls)
        folder.final = folder.path = folder.scratch_dir = tempfile.mkdtemp(
            prefix="worker_run_")
        folder.locks = []
        return folder

    def commit(self) -> None:
        """Swaps a staged run in for the old one (after its first checkpoint)."""
        if self.path != self.final:
            swap_in_folder(self.path, self.final)
            self.path = self.final
            old, (staged, _) = self.locks  # the old run's lock went with it
            release_lock(old)
            self.locks = [(staged, os.path.join(self.final, LOCK_FILE))]

    def close(self) -> None:
        """Unlocks; a staged run that never reached its first checkpoint (nothing to
        keep) and a worker's scratch folder are deleted."""
        for lock in self.locks:
            release_lock(lock)
        self.locks = []
        if self.scratch_dir or self.path != self.final:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def acquire_lock(folder: str) -> tuple[int, str]:
    """Locks `folder` for this process; the lock file says who holds it. Returns the
    open lock file and its path, for `release_lock`."""
    import fcntl
    path = os.path.join(folder, LOCK_FILE)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ValueError(f"--out {folder} is in use by another training run "
                             f"({lock_holder(folder) or 'unknown process'}); wait for "
                             f"it to end or choose another --out") from None
        try:  # the file we locked may have been removed by its previous holder
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
    return fd, path


def release_lock(lock: tuple[int, str]) -> None:
    """Removes the lock file, then unlocks (a process that opened the old file
    meanwhile sees it is gone: `acquire_lock` checks)."""
    import fcntl
    fd, path = lock
    try:
        if os.fstat(fd).st_ino == os.stat(path).st_ino:
            os.remove(path)
    except OSError:
        pass
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def lock_holder(folder: str) -> str | None:
    """Who holds `folder`'s lock ("pid 123 on host, since ..."), or None if free."""
    import fcntl
    path = os.path.join(folder, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None  # a lock file nobody holds: left by a process that died
    except BlockingIOError:
        try:
            info = json.loads(os.read(fd, 1000) or b"{}")
        except ValueError:
            info = {}
        return (f"train.py, pid {info.get('pid', '?')} on {info.get('host', '?')}, "
                f"since {info.get('since', '?')}")
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- state


def write_state(run_dir: str, state: dict, on_disk: int | None) -> None:
    """Writes `state` to `RUN/state.json`, keeping the state of the `last.keras` now on
    disk (whose optimizer is at step `on_disk`), so the pair on disk always matches."""
    try:
        previous = [s for s in _states(run_dir) if s["iterations"] == on_disk][-1:]
    except CheckpointError:
        previous = []  # a damaged state.json is replaced, not fatal
    states = [s for s in previous if s["iterations"] != state["iterations"]] + [state]
    write_json(os.path.join(run_dir, STATE_FILE), {"states": states})


def read_state(run_dir: str, iterations: int) -> dict:
    """The training state saved with a `last.keras` whose optimizer is at step
    `iterations`."""
    match = [s for s in _states(run_dir) if s["iterations"] == iterations]
    if not match:
        raise CheckpointError(f"{run_dir}/{STATE_FILE} holds no training state for "
                              f"last.keras (step {iterations}); the run cannot be "
                              f"resumed exactly")
    return match[-1]


def _states(run_dir: str) -> list[dict]:
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(path):
        return []
    try:
        with open(path) as f:
            return json.load(f)["states"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(damaged_message(path, e)) from None
