"""One training process per run directory: an advisory lock the operating system releases with the process.

Two `chargen train` processes writing one run would leave a mix of both runs in it. The lock is
`flock` (POSIX) or `msvcrt.locking` (Windows) on the run's `.lock` file: the kernel drops it when the
holder exits, even by SIGKILL, so there is never a stale lock to clean up by hand. The file keeps the
holder's process id and host, for the message the second process prints. Reading commands
(generate, eval, ...) take no lock: every file of a run is replaced atomically, so they always read a
whole file.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

from chargen.errors import UserError

LOCK = ".lock"


class RunLock:
    """The lock on one run directory, held from `acquire()` to `release()` (or the process's end)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        """Take the lock, or raise a one-line UserError naming the process that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never O_TRUNC: the holder's id is in it
        except OSError as e:
            raise UserError(f"cannot lock the run {self.run_dir}: {e.strerror or e}; "
                            "choose another --run or --checkpoint") from None
        if not _try_lock(fd):
            holder = _read_holder(fd)
            os.close(fd)
            raise UserError(f"run {self.run_dir} is being trained by another process ({holder}); wait for it to "
                            "finish or stop it, or train into another --run")
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the next process train this run (closing the file drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove_if_alone(self) -> None:
        """Remove the lock file and the run folder when the lock is all the folder holds (held lock only)."""
        if self._fd is None or [p.name for p in self.run_dir.iterdir()] != [LOCK]:
            return
        self.path.unlink(missing_ok=True)
        try:
            self.run_dir.rmdir()
        except OSError:  # something appeared meanwhile: keep the folder
            pass

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read_holder(fd: int) -> str:
    """What the holder wrote into the lock file ("pid 123 on host"), or a plain description."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except (OSError, AttributeError):  # os.pread is POSIX only
        text = ""
    return text or "process unknown"
