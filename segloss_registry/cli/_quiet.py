"""Keep torch's profiler noise out of the command line's output.

Every start and stop of ``torch.profiler`` makes kineto (torch's profiler library, compiled
into ``libtorch_cpu``) write a line such as::

    USDT:2026-12-01 22:40:48 5021:5021 SyncActivityProfilerHandler.cpp:52] profiler_start

and profiling a model that already holds tensors makes c10 add ``[W... CPUAllocator.cpp:245]
Memory block of unknown size was allocated before the profiling started, ...``. Both go
straight to file descriptor 2 from C++, below Python, so ``warnings`` or ``sys.stderr`` cannot
catch them, and ``KINETO_LOG_LEVEL`` is a threshold over all of kineto's messages rather than a
filter for these. ``without_profiler_noise()`` points fd 2 at a pipe for the duration of a
block and copies everything through, line by line, except exactly those lines (``NOISE``);
errors, other warnings, progress bars (``\\r`` updates, forwarded at once) and the rest of
stderr pass unchanged and in order. ``SEGLOSS_PROFILER_NOISE=1`` turns the filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterator

__all__ = ["NOISE", "StreamFilter", "without_profiler_noise"]

NOISE = re.compile(
    rb"^(?:USDT:[^\n]*\] profiler_(?:start|stop)"
    # c10's warning when a profiler starts after tensors were allocated (every profile of a warm model)
    rb"|\[W[^\n]*CPUAllocator\.cpp:\d+\] Memory block of unknown size was allocated before the profiling started"
    rb"[^\n]*)\s*$"
)
_PREFIXES = (b"USDT:", b"[W")


class StreamFilter:
    """A streaming line filter: ``feed(chunk)`` returns what may pass now; ``close()`` the rest.

    Text that cannot yet be told apart from a noise line (it starts a line with ``USDT:``, or a
    prefix of it, and its newline has not arrived) is held back; everything else passes as soon
    as it arrives, so a progress bar's ``\\r`` updates are not delayed.
    """

    def __init__(self) -> None:
        self._held = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._held + chunk
        self._held = b""
        out = bytearray()
        i, n = 0, len(data)
        while i < n:  # i is at the start of a line
            head = data[i:i + 5]
            if len(head) < 5 and any(p.startswith(head) for p in _PREFIXES):  # could still become a noise line
                self._held = data[i:]
                break
            end = data.find(b"\n", i)
            if head.startswith(_PREFIXES):
                if end < 0:  # wait for the whole line
                    self._held = data[i:]
                    break
                line = data[i:end + 1]
                if not NOISE.match(line):
                    out += line
                i = end + 1
                continue
            stop = n if end < 0 else end + 1
            out += data[i:stop]
            i = stop
            if end < 0:
                break
        return bytes(out)

    def close(self) -> bytes:
        rest, self._held = self._held, b""
        return b"" if NOISE.match(rest) else rest


@contextlib.contextmanager
def without_profiler_noise(fd: int = 2) -> Iterator[None]:
    """Inside the block, kineto's ``USDT ... profiler_start/stop`` lines on ``fd`` are dropped.

    Child processes started inside the block (torch.compile's worker pool) keep the pipe as
    their stderr, so the copying thread outlives the block and goes on filtering what they
    write; the block itself ends once everything written in it has been copied (a marker
    written after the last byte says when). A no-op where file descriptors cannot be
    redirected, and when ``SEGLOSS_PROFILER_NOISE=1`` asks to see everything.
    """
    if os.environ.get("SEGLOSS_PROFILER_NOISE") == "1":
        yield
        return
    try:
        saved = os.dup(fd)
        read_end, write_end = os.pipe()
    except (OSError, AttributeError):
        yield
        return
    _flush()
    os.dup2(write_end, fd)
    marker = b"\0segloss-" + os.urandom(8).hex().encode() + b"\0"  # NUL bytes never occur in text output
    drained = threading.Event()
    filt = StreamFilter()

    def pump() -> None:
        tail = b""
        try:
            while True:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                data = tail + chunk
                tail = b""
                if not drained.is_set():
                    at = data.find(marker)
                    if at >= 0:
                        _write_all(saved, filt.feed(data[:at]))
                        data = data[at + len(marker):]
                        drained.set()
                    else:  # hold back a possible start of the marker split across two reads
                        k = _partial_suffix(data, marker)
                        data, tail = data[:len(data) - k], data[len(data) - k:]
                _write_all(saved, filt.feed(data))
            _write_all(saved, filt.feed(tail) + filt.close())
        finally:
            drained.set()
            os.close(read_end)
            os.close(saved)

    thread = threading.Thread(target=pump, name="segloss-stderr-filter", daemon=True)
    thread.start()
    try:
        yield
    finally:
        _flush()
        restored = os.dup(saved)
        os.dup2(restored, fd)
        os.close(restored)
        _write_all(write_end, marker)
        os.close(write_end)  # children that inherited the pipe keep it open; the pump serves them
        drained.wait(timeout=10)


def _partial_suffix(data: bytes, marker: bytes) -> int:
    """The length of the longest proper prefix of ``marker`` that ``data`` ends with."""
    for k in range(min(len(marker) - 1, len(data)), 0, -1):
        if data.endswith(marker[:k]):
            return k
    return 0


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            stream.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError:
            return
        view = view[written:]
