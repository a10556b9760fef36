"""What the commands that call the gateway share: a ``nanolens_client.Client`` from ``--gateway``
and the ``NANOLENS_*`` settings, progress lines on stderr, JSON on stdout."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from nanolens_client import Client, ClientSettings

DEFAULT_GATEWAY = ClientSettings.gateway


def add_gateway(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", default="",
                        help=f"gateway host:port (default: NANOLENS_GATEWAY, else {DEFAULT_GATEWAY})")


def connect(args) -> Client:
    """A client of the gateway ``--gateway`` names, else NANOLENS_GATEWAY (token, TLS: the settings)."""
    return Client(getattr(args, "gateway", "") or None)


def print_json(doc) -> None:
    print(json.dumps(doc, indent=2))


class Progress:
    """One self-rewriting line on stderr for anything slow (silent when stderr is not a terminal):
    bytes (and files) done of a total, or with ``clock`` a ticking clock while the server works."""

    def __init__(self, label: str, clock: bool = False, enabled: bool | None = None):
        self.label = label
        self.clock = clock
        self.total = self.done = 0
        self.files = ""
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def bytes(self, done: int, total: int) -> None:
        """``on_bytes`` of an upload."""
        self.done, self.total = done, total
        self._draw()

    def folder(self, p) -> None:
        """``on_progress`` of ``upload_folder``."""
        self.done, self.total, self.files = p.bytes_done, p.bytes_total, f"{p.files_done}/{p.files_total} files, "
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        if self.total:
            pct = 100.0 * self.done / self.total
            sys.stderr.write(f"\r{self.label}: {self.files}{self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB "
                             f"({pct:3.0f} %)")
        else:
            sys.stderr.write(f"\r{self.label}: {time.monotonic() - self.start:5.1f} s")
        sys.stderr.flush()

    def __enter__(self) -> Progress:
        if self.enabled and self.clock:  # a ticking clock while we wait on the server
            def tick():
                while not self._stop.wait(0.25):
                    self._draw()

            self._thread = threading.Thread(target=tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.enabled:
            sys.stderr.write(f"\r{self.label}: done in {time.monotonic() - self.start:.1f} s\n")
