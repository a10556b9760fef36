"""Peak resident memory of a piece of work, native allocations included.

tracemalloc sees only what numpy and Python allocate; onnxruntime's arena and other native
buffers are invisible to it. Linux keeps the process's resident high-water mark (VmHWM) and lets
a process reset it by writing ``5`` to ``/proc/self/clear_refs``, so the peak that one call adds
above the memory already resident can be read without a second process.
"""

from __future__ import annotations

from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


class ResidentPeak:
    """``with ResidentPeak() as p: work()``; then ``p.peak_mib``: the process's resident peak
    during the block (what a container's memory limit sees), and ``p.added_mib``: that peak above
    the memory resident at its start. Both ``None`` where the kernel offers no reset."""

    peak_mib: float | None = None
    added_mib: float | None = None

    def __enter__(self) -> ResidentPeak:
        try:
            _CLEAR_REFS.write_text("5")
            self._start = _status_kib("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc) -> None:
        if self._start is not None:
            peak = _status_kib("VmHWM")
            self.peak_mib = peak / 1024
            self.added_mib = max(0, peak - self._start) / 1024
