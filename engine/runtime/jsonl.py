"""The JSONL sink's file: whole lines only, through a full disk and back.

Each line goes to the file in one ``os.write`` of the complete line (``O_APPEND``). When the file
system refuses it (no space, quota, I/O error) the file is truncated back to the end of the last
whole line, so a short write never leaves half a line behind; the line is dropped and counted, and
the run goes on. Every later line tries again, so writing resumes as soon as there is room. The
caller learns of the transitions (``write`` returns ``failed`` or ``resumed``) to publish them once.
A nearly full file system takes a short line and refuses the next long one: a spell of failures ends
only after ``RESUME_AFTER_LINES`` whole lines in a row, so such flapping is one spell, not many.
Standard output (``-``) keeps Python's text stream: a pipe has no offset to truncate to.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any

# Errors of the medium: the line is dropped and the sink keeps trying. Anything else is a bug.
MEDIA_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG, errno.EROFS})

WRITTEN, FAILED, RESUMED, DROPPED = "written", "failed", "resumed", "dropped"
RESUME_AFTER_LINES = 8


class JsonlFile:
    def __init__(self, path: str):
        self.path = path
        self.to_stdout = path == "-"
        self.fd = -1
        self.good_offset = 0  # end of the last whole line
        self.lines_written = 0
        self.lines_dropped = 0
        self.failing = False
        self.written_in_a_row = 0
        self.last_error: str | None = None
        self.reader_gone = False
        if not self.to_stdout:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self.good_offset = os.fstat(self.fd).st_size

    def write(self, line: str) -> str:
        """Write one complete line (ending in a newline): ``written``, ``resumed``, ``failed`` or ``dropped``."""
        if self.to_stdout:
            return self._write_stdout(line)
        if self.fd < 0:
            return DROPPED
        data = line.encode()
        try:
            n = os.write(self.fd, data)
            if n != len(data):  # a short write: the medium filled up inside the line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as exc:
            if exc.errno not in MEDIA_ERRNOS:
                raise
            self._cut_back()
            self.lines_dropped += 1
            self.written_in_a_row = 0
            self.last_error = exc.strerror or str(exc)
            if self.failing:
                return DROPPED
            self.failing = True
            return FAILED
        self.good_offset += n
        self.lines_written += 1
        self.written_in_a_row += 1
        if self.failing and self.written_in_a_row >= RESUME_AFTER_LINES:
            self.failing = False
            return RESUMED
        return WRITTEN

    def _cut_back(self) -> None:
        """Remove whatever part of the failed line reached the file."""
        try:
            if os.fstat(self.fd).st_size > self.good_offset:
                os.ftruncate(self.fd, self.good_offset)
        except OSError:
            pass  # the next successful write is still appended after the last whole line or this tail

    def _write_stdout(self, line: str) -> str:
        if self.reader_gone:
            return DROPPED
        try:
            sys.stdout.write(line)
            sys.stdout.flush()
        except BrokenPipeError:  # `--jsonl - | head`: the reader is gone, like any CLI tool stop
            self.reader_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
            return DROPPED
        self.lines_written += 1
        return WRITTEN

    def fsync(self) -> None:
        if self.fd >= 0:
            try:
                os.fsync(self.fd)
            except OSError:  # not a regular file (a pipe, /dev/null), or the medium is failing: counted at write
                pass

    def status(self) -> dict[str, Any]:
        """The ``outputs.jsonl`` entry of the status object."""
        return {"path": self.path, "state": "failing" if self.failing else "ok", "lines_written": self.lines_written,
                "lines_dropped": self.lines_dropped, "last_error": self.last_error}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
