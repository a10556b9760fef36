"""Linking instances into tracks, frame by frame, with state bounded by the particles in view.

The linker is trackpy's (``trackpy.linking.link_iter``, Crocker-Grier with a subnet solver):
it is a generator fed one frame at a time whose state is the particles of the last
``memory + 1`` frames, so a movie of any length links in the memory of a few frames. (laptrack
and btrack solve the linking over the whole movie at once, which needs all coordinates first.)
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import trackpy
from trackpy.linking import link_iter

trackpy.quiet()  # its per-frame log lines would flood the service log


class StreamLinker:
    """Feed frames' centroids in order with :meth:`link`; get each detection's track id back.

    Track ids start at 1 and are unique over the movie; a particle lost for up to ``memory``
    frames keeps its id when it is found again within ``search_range`` px.
    """

    def __init__(self, search_range: float, memory: int = 3):
        self.search_range = float(search_range)
        self.memory = int(memory)
        self._in: queue.Queue = queue.Queue(maxsize=2)
        self._out: queue.Queue = queue.Queue(maxsize=2)
        self._thread: threading.Thread | None = None
        self.n_tracks = 0

    def _run(self) -> None:
        def coords():
            while True:
                item = self._in.get()
                if item is None:
                    return
                yield item

        try:
            for _, ids in link_iter(coords(), self.search_range, memory=self.memory, adaptive_stop=1.0,
                                    adaptive_step=0.9, link_strategy="auto"):
                self._out.put(np.asarray(ids, np.int64))
        except BaseException as exc:  # handed to the caller of link()
            self._out.put(exc)

    def link(self, centroids: np.ndarray) -> np.ndarray:
        """Track ids (1-based) of one frame's detections, in the order given.

        Parameters
        ----------
        centroids : numpy.ndarray
            (K, 2) row, col in px (drift not removed: linking follows the raw motion).

        Returns
        -------
        numpy.ndarray
            (K,) int64 track ids.
        """
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="lpem-linker")
            self._thread.start()
        self._in.put(np.asarray(centroids, np.float64).reshape(-1, 2))
        ids = self._out.get()
        if isinstance(ids, BaseException):
            raise ids
        ids = ids + 1
        if ids.size:
            self.n_tracks = max(self.n_tracks, int(ids.max()))
        return ids

    def close(self) -> None:
        if self._thread is not None:
            self._in.put(None)
            self._thread.join(timeout=5)
            self._thread = None
