"""One run's outputs as one unit: staged beside their targets, moved into place together under a lock.

Every file a run writes (label image, report, seeds, one STL per aneurysm, model files, ...) is first
written into a private staging folder next to where it belongs, on the same file system. Only when
every file is complete does :meth:`OutputSet.commit` move them into place, one ``os.replace`` each,
while holding a lock on every folder it writes into, so that two runs on the same outputs cannot
interleave; files of an earlier run that this run does not produce (``aneurysm_3.stl`` when only two
aneurysms remain) are removed in the same step. A failure or Ctrl-C before the commit leaves the
targets as they were and removes the staging folders; a failure during the commit moves the earlier
files back. SIGINT and SIGTERM are held back while the files move. Files appear with the permissions
the user's umask gives new files (colleagues on a shared drive can read them), never a private 0600.

    with OutputSet(inputs=[scan]) as outputs:
        sitk.WriteImage(image, str(outputs.stage(folder / "labels.nii.gz")))
        for n, surface in enumerate(surfaces, 1):
            write_stl(surface, outputs.stage(stl_dir / f"aneurysm_{n}.stl"))
        outputs.own(stl_dir, r"aneurysm_\\d+\\.stl")
    # leaving the block without an exception commits; an exception discards everything staged

Writers take an optional ``outputs``: given, they stage into it; without, :func:`write_atomic`
makes a one-file set. :func:`ensure_can_create` finds a folder that cannot take a new file before
long work starts, not after it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..core.errors import OutputError

#: Prefix of the staging folders (hidden; left only if the process is killed with SIGKILL).
STAGING_PREFIX = ".aneurysmseg-staging-"
#: Name of the lock file created, held and removed in each folder a commit writes into.
LOCK_NAME = ".aneurysmseg.lock"
#: How long a commit waits for another run to finish its own commit into the same folders.
LOCK_TIMEOUT_S = 120.0


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only portable way; set back at once
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions a newly created file gets under the current umask (0644 with the usual 022)."""
    return 0o666 & ~current_umask()


def same_file(a: Path, b: Path) -> bool:
    """True when ``a`` and ``b`` name the same file: equal after resolving links, or one inode."""
    try:
        if os.path.realpath(a) == os.path.realpath(b):
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def refuse_inputs(outputs: Iterable[Path | None], inputs: Iterable[Path]) -> None:
    """Raise :class:`OutputError` when an output is (or resolves to, or is a hard link of) an input."""
    inputs = [Path(p) for p in inputs]
    for out in outputs:
        if out is None:
            continue
        for inp in inputs:
            if same_file(Path(out), inp):
                raise OutputError(f"output {out} is the input {inp}; writing it would destroy the scan: "
                                  "choose another output name")


class OutputSet:
    """Files of one run, staged beside their targets and committed together (see the module docstring).

    ``inputs``: files this run reads; staging a target that is one of them, or removing one as stale,
    raises :class:`OutputError`. ``lock_timeout``: seconds a commit waits for another run's commit.
    """

    def __init__(self, inputs: Iterable[Path] = (), lock_timeout: float = LOCK_TIMEOUT_S) -> None:
        self.inputs = [Path(p) for p in inputs]
        self.lock_timeout = lock_timeout
        self._staged: dict[Path, Path] = {}  # absolute target -> staged file
        self._owned: list[tuple[Path, re.Pattern[str]]] = []
        self._folders: set[Path] = set()  # folders that must exist after the commit, even if empty
        self._staging: dict[Path, Path] = {}  # existing anchor folder -> its staging folder
        self._slots: dict[Path, Path] = {}  # target folder -> where its files are staged, side by side
        self._done = False
        self.written: list[Path] = []  #: the targets, in staging order, once committed

    # ------------------------------------------------------------------------------ staging

    def stage(self, target: str | Path) -> Path:
        """Where to write the file that becomes ``target`` at commit (same name, in a private folder
        shared by every staged file of the same target folder, so files that name each other work).

        Checks now that ``target`` is not an input, not a folder, and that its folder can be created
        and written, so that bad destinations fail before any long work.
        """
        if self._done:
            raise RuntimeError("this OutputSet was already committed or discarded")
        target = Path(os.path.abspath(target))
        if target in self._staged:
            return self._staged[target]
        refuse_inputs([target], self.inputs)
        if target.is_dir():
            raise OutputError(f"{target} is a folder; give a file name")
        anchor = _existing_folder(target)
        staging = self._staging.get(anchor)
        if staging is None:
            try:
                staging = Path(tempfile.mkdtemp(dir=anchor, prefix=STAGING_PREFIX))
            except OSError as exc:
                raise OutputError(f"cannot write {target}: folder {anchor} is not writable ({exc.strerror})") from None
            self._staging[anchor] = staging
        slot = self._slots.get(target.parent)
        if slot is None:
            slot = staging / str(len(self._slots))
            slot.mkdir()
            self._slots[target.parent] = slot
        staged = slot / target.name
        self._staged[target] = staged
        return staged

    def own(self, folder: str | Path, pattern: str) -> None:
        """At commit, remove the files in ``folder`` whose names match the regular expression
        ``pattern`` (whole name) and that this run does not write: an earlier run's leftovers.
        The folder exists after the commit, even when this run writes nothing into it."""
        folder = Path(os.path.abspath(folder))
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"cannot write into {folder}: it is a file, not a folder")
        self._owned.append((folder, re.compile(pattern)))
        self._folders.add(folder)

    def staged(self) -> dict[Path, Path]:
        """Target -> staged file, for every file staged so far."""
        return dict(self._staged)

    # ------------------------------------------------------------------------------ commit

    def commit(self) -> list[Path]:
        """Move every staged file into place (and remove stale owned files) as one step; returns the targets."""
        if self._done:
            raise RuntimeError("this OutputSet was already committed or discarded")
        missing = [str(t) for t, s in self._staged.items() if not s.is_file()]
        if missing:
            self.discard()
            raise OutputError(f"nothing was written: {', '.join(missing)} {'was' if len(missing) == 1 else 'were'} "
                              "not produced")
        folders = sorted({t.parent for t in self._staged} | self._folders)
        created = _make_folders(folders)
        try:
            with _held_signals(), _locks(folders, self.lock_timeout):
                self._move_into_place()
        except BaseException:
            for folder in reversed(created):
                _quietly(os.rmdir, folder)  # only if still empty
            raise
        finally:
            self.discard()
        self.written = list(self._staged)
        return self.written

    def _move_into_place(self) -> None:
        mode = file_mode()
        stale = self._stale()
        moved: list[tuple[Path, Path | None]] = []  # (target, backup of what it replaced)
        try:
            for n, (target, staged) in enumerate(self._staged.items()):
                os.chmod(staged, mode)
                backup = None
                if target.is_dir() and not target.is_symlink():
                    raise IsADirectoryError(21, "a folder is in the way", str(target))
                if target.exists() or target.is_symlink():
                    backup = staged.parent / f".previous-{n}.{target.name}"
                    os.replace(target, backup)
                moved.append((target, backup))
                os.replace(staged, target)
        except OSError as exc:
            for target, backup in reversed(moved):
                if backup is not None:
                    _quietly(os.replace, backup, target)
                else:
                    _quietly(os.remove, target)
            raise OutputError(f"writing the outputs failed and the earlier files were put back: "
                              f"{exc.filename or ''}: {exc.strerror or exc}") from None
        for path in stale:  # last: every new file is in place, so nothing of this run can be lost
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise OutputError(f"the outputs were written, but {path} of an earlier run could not be "
                                  f"removed: {exc.strerror}") from None

    def _stale(self) -> list[Path]:
        """Files of the owned folders that match their pattern and that this run does not write."""
        produced = set(self._staged)
        stale: list[Path] = []
        for folder, pattern in self._owned:
            if not folder.is_dir():
                continue
            for entry in sorted(folder.iterdir()):
                if entry in produced or not pattern.fullmatch(entry.name) or entry.is_dir():
                    continue
                if any(same_file(entry, inp) for inp in self.inputs):
                    continue  # never remove what this run reads
                stale.append(entry)
        return stale

    def discard(self) -> None:
        """Remove every staging folder; the targets are left as they are."""
        self._done = True
        for staging in self._staging.values():
            shutil.rmtree(staging, ignore_errors=True)
        self._staging.clear()

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def _existing_folder(target: Path) -> Path:
    """The nearest existing folder at or above ``target``'s folder; OutputError if it is a file."""
    folder = target.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: {folder} is a file, not a folder")
    return folder


def _make_folders(folders: list[Path]) -> list[Path]:
    """Create the missing ``folders`` (and their parents); returns those created, parents first."""
    created: list[Path] = []
    for folder in folders:
        missing = []
        f = folder
        while not f.exists():
            missing.append(f)
            f = f.parent
        for m in reversed(missing):
            try:
                m.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise OutputError(f"cannot create folder {m}: {exc.strerror}") from None
            created.append(m)
    return created


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass


# ---------------------------------------------------------------------------------- one-file writes


def ensure_can_create(path: str | Path) -> Path:
    """Raise :class:`OutputError` unless the nearest existing folder above ``path`` accepts a new file.

    Tested by creating and removing a probe file: permission bits alone lie when running as root or
    on read-only mounts. Returns that folder.
    """
    path = Path(path)
    folder = _existing_folder(path)
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".aneurysmseg-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: folder {folder} is not writable ({exc.strerror})") from None
    return folder


def write_atomic(path: str | Path, write: Callable[[str], None], outputs: OutputSet | None = None) -> Path:
    """Call ``write(file)`` on the staged file of ``path`` (same name, so formats chosen by extension
    work). With ``outputs`` the file joins that set and appears at its commit; without, it is a set of
    its own, committed at once. OutputError, and nothing left behind, when writing fails."""
    path = Path(path)
    if outputs is None:
        with OutputSet() as own:
            return write_atomic(path, write, own)
    staged = outputs.stage(path)
    try:
        write(str(staged))
    except (RuntimeError, OSError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
        raise OutputError(f"writing {path} failed: {getattr(exc, 'strerror', None) or first}") from None
    if not staged.is_file():
        raise OutputError(f"writing {path} failed: the writer produced no file")
    return path


def write_text_atomic(path: str | Path, text: str, outputs: OutputSet | None = None) -> Path:
    """UTF-8 text (whatever the locale: slicer-core sets C), written through :func:`write_atomic`."""
    def write(file: str) -> None:
        with open(file, "w", encoding="utf-8") as fh:
            fh.write(text)

    return write_atomic(path, write, outputs)


# -------------------------------------------------------------------------------------------- locks


@contextlib.contextmanager
def _locks(folders: list[Path], timeout: float) -> Iterator[None]:
    """Hold ``LOCK_NAME`` in every folder (in sorted order, so two commits cannot deadlock)."""
    unique = sorted({Path(os.path.realpath(f)) for f in folders})  # one lock per real folder
    with contextlib.ExitStack() as stack:
        deadline = time.monotonic() + timeout
        for folder in unique:
            stack.enter_context(_folder_lock(folder, deadline))
        yield


def _folder_lock(folder: Path, deadline: float) -> contextlib.AbstractContextManager[None]:
    return locked(folder / LOCK_NAME, deadline - time.monotonic())


@contextlib.contextmanager
def locked(path: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created, and removed by the last holder) for a
    ``with`` block; OutputError after ``timeout`` seconds of another process holding it. Released by
    the OS if the process dies, so a crash never leaves a lock behind."""
    path = Path(path)
    folder = path.parent
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise OutputError(f"cannot lock {folder} for writing: {exc.strerror}") from None
        if _try_lock(fd):
            # The holder before us may have removed the file after we opened it: only a lock on the
            # file that the name still points to counts.
            try:
                if os.fstat(fd).st_ino == os.stat(path).st_ino:
                    break
            except OSError:
                pass
            _unlock(fd)
        os.close(fd)
        if time.monotonic() > deadline:
            raise OutputError(f"another AneurysmSeg run is writing into {folder} (lock {path}); "
                              "try again when it has finished")
        time.sleep(0.05)
    try:
        yield
    finally:
        _quietly(os.remove, path)  # removed while held: the next holder's inode check sees it
        _unlock(fd)
        os.close(fd)


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        _quietly(msvcrt.locking, fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        _quietly(fcntl.flock, fd, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------ signals


@contextlib.contextmanager
def _held_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back while files move (main thread only; elsewhere signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    names = [s for s in (signal.SIGINT, getattr(signal, "SIGTERM", None)) if s is not None]
    previous = {}
    for sig in names:
        try:
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
        except (ValueError, OSError):
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in received[:1]:
            signal.raise_signal(signum)
