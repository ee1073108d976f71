"""The project's one atomic writer: a file (or a folder) appears whole, or not at all.

Everything that must survive a kill (checkpoints, `state.json`, `config.json`,
`metrics.json`, history files, dataset annotations) is written to a temporary file in
the same folder, flushed to disk and renamed over the old file. A rename within one
folder is atomic, so a reader, or a run resumed after a power cut, sees either the
old file or the new one, never half of one. A failed write removes the temporary and
leaves the old file as it was.

    >>> with atomic_path("runs/x/metrics.json") as tmp:
    ...     with open(tmp, "w") as f:
    ...         f.write("{}")
    >>> write_json("runs/x/config.json", {"epochs": 5})
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile

TEMPORARY_PREFIX = ".tmp-"


def temporary_beside(path: str, suffix: str = "") -> str:
    """The path of a new, empty `.tmp-*` file in `path`'s folder (made if needed),
    with the permissions an ordinary new file gets (mkstemp's are owner-only)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside `path` to write to; on success flushes it to
    disk and renames it over `path`, on failure removes it (`path` untouched)."""
    tmp = temporary_beside(path, os.path.splitext(path)[1])
    try:
        yield tmp
        sync_file(tmp)
        os.replace(tmp, path)
        sync_folder(os.path.dirname(os.path.abspath(path)))
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path: str, obj) -> None:
    """Writes `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def sync_file(path: str) -> None:
    """Flushes a file's content to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(folder: str) -> None:
    """Flushes a folder's entries, so a rename in it survives a power loss."""
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
    """Deletes the `.tmp-*` files a killed writer left in `folder`; returns their
    paths. Only ever half-written copies: no finished file is a temporary."""
    stale = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(TEMPORARY_PREFIX) and os.path.isfile(path):
                try:
                    os.remove(path)
                    stale.append(path)
                except OSError:
                    pass
    return stale


# --------------------------------------------------------------------------- folders
# A folder (an export, a run) is replaced in three renames, each atomic:
#
#     .tmp-NAME-<pid>-*   written by process <pid>; incomplete until renamed to
#     .NAME.new           complete, waiting to go in
#     NAME -> .NAME.old   the old one aside;  .NAME.new -> NAME;  .NAME.old deleted
#
# A kill between two of them leaves a state `recover_folder` recognises and finishes
# on the next run, so NAME ends up as the whole old folder or the whole new one.


def staging_folder(dest: str) -> str:
    """A new, empty folder beside `dest` to write its replacement into."""
    parent, name = os.path.split(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    path = tempfile.mkdtemp(prefix=f"{TEMPORARY_PREFIX}{name}-{os.getpid()}-", dir=parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o777 & ~umask)  # mkdtemp's folders are owner-only
    return path


def swap_in_folder(staged: str, dest: str) -> None:
    """Puts the finished folder `staged` (from `staging_folder`) where `dest` is,
    deleting the old `dest`; see the renames above."""
    ready = _ready(dest)
    os.replace(staged, ready)
    sync_folder(os.path.dirname(ready))
    recover_folder(dest)


def recover_folder(dest: str) -> list[str]:
    """Finishes what a killed `swap_in_folder` left beside `dest` and deletes the
    staging folders of dead processes; returns a line for each thing done."""
    import shutil
    done = []
    ready, old = _ready(dest), _aside(dest)
    if os.path.isdir(ready):
        if os.path.lexists(dest):
            os.replace(dest, old)
        os.replace(ready, dest)
        sync_folder(os.path.dirname(old))
        done.append(f"finished replacing {dest}")
    if os.path.isdir(old):
        if os.path.lexists(dest):
            shutil.rmtree(old)
        else:  # nothing came in: the old folder goes back
            os.replace(old, dest)
            done.append(f"restored {dest}")
    parent, name = os.path.split(os.path.abspath(dest))
    prefix = f"{TEMPORARY_PREFIX}{name}-"
    for entry in os.listdir(parent) if os.path.isdir(parent) else []:
        pid = entry[len(prefix):].split("-", 1)[0]
        if entry.startswith(prefix) and pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
            done.append(f"removed {entry}, left by a process that died")
    return done


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _ready(dest: str) -> str:
    parent, name = os.path.split(os.path.abspath(dest))
    return os.path.join(parent, f".{name}.new")


def _aside(dest: str) -> str:
    parent, name = os.path.split(os.path.abspath(dest))
    return os.path.join(parent, f".{name}.old")
