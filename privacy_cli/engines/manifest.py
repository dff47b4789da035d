"""The run manifest: one JSON line per processed image, written next to the outputs as it happens.

Each row is the image's ``--json`` record (input, output, status, regions_found, regions_obfuscated,
regions, error, seconds, ...) plus ``worker`` (``host:pid``), ``worker_cpu_s`` (the worker process's CPU seconds so far, when its batch
ended: with Ray, the job's CPU is the driver's plus each worker's largest value) and ``time`` (UTC, ISO 8601). JSON Lines
rather than Parquet because rows are appended one by one as results arrive, so an interrupted job keeps
every row it had, and a torn last line (a crash mid-write) is simply ignored on the next read.

A rerun reads the manifest and skips the inputs recorded as done (``ok`` or ``skipped`` for the same
output); failed images are tried again. ``--overwrite`` starts a new manifest and redoes everything.
On an object store the manifest is kept in a local file and uploaded whole (one PUT) every few seconds
and when the run ends.
"""

from __future__ import annotations

import json
import os
import posixpath
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from .tasks import Task, is_remote, read_bytes, write_bytes

DONE = ("ok", "skipped")
#: seconds between uploads of a remote manifest
UPLOAD_EVERY = 5.0


def manifest_location(tasks: Sequence[Task], output: str | None, command: str) -> str | None:
    """Where the manifest of this run lives: in the ``-o`` folder, else in the deepest folder that holds
    every output (``None`` when no task has an output)."""
    name = f"privpix-{command}.manifest.jsonl"
    outs = [t.output for t in tasks if t.output]
    if not outs:
        return None
    if output is not None and outs != [output]:  # -o is a folder / prefix
        return posixpath.join(output.rstrip("/"), name) if is_remote(output) else str(Path(output, name))
    if is_remote(outs[0]):
        scheme = outs[0].split("://", 1)[0] + "://"
        same = [o[len(scheme) :] for o in outs if o.startswith(scheme)]
        parent = posixpath.commonpath([posixpath.dirname(o) for o in same])
        return f"{scheme}{posixpath.join(parent, name)}"
    local = [o for o in outs if not is_remote(o)]
    parent = os.path.commonpath([str(Path(o).resolve().parent) for o in local])
    return str(Path(parent, name))


def _parse(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a torn line from an interrupted write
            continue
        if isinstance(row, dict) and "input" in row:
            rows.append(row)
    return rows


class Manifest:
    """Append-only JSONL manifest at ``location`` (local path or URI)."""

    def __init__(self, location: str, overwrite: bool = False) -> None:
        self.location = location
        self.remote = is_remote(location)
        self.rows: list[dict[str, Any]] = []
        if not overwrite:
            try:
                self.rows = _parse(read_bytes(location).decode("utf-8", "replace"))
            except Exception:  # no manifest yet (or unreadable: start afresh, nothing is skipped)
                self.rows = []
        if self.remote:
            fd, tmp = tempfile.mkstemp(prefix="privpix-manifest-", suffix=".jsonl")
            self._local = Path(tmp)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)
        else:
            self._local = Path(location)
            self._local.parent.mkdir(parents=True, exist_ok=True)
            if overwrite and self._local.exists():
                self._local.unlink()
        self._fh: IO[str] = open(self._local, "a+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._fh.seek(0, os.SEEK_END)
        if self._fh.tell() > 0:  # a torn last line must not swallow the next row
            self._fh.seek(self._fh.tell() - 1)
            if self._fh.read(1) != "\n":
                self._fh.write("\n")
        self._last_upload = time.monotonic()
        self._dirty = False

    def done(self) -> dict[str, str | None]:
        """``{input: output}`` of the images recorded as done (last row per input wins)."""
        last: dict[str, dict[str, Any]] = {}
        for r in self.rows:
            last[r["input"]] = r
        return {k: r.get("output") for k, r in last.items() if r.get("status") in DONE}

    def append(self, row: dict[str, Any]) -> dict[str, Any]:
        """Record one row (``time`` is added) and flush it; returns the row as written."""
        row = {**row, "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        self._fh.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._fh.flush()
        self.rows.append(row)
        self._dirty = True
        if self.remote and time.monotonic() - self._last_upload > UPLOAD_EVERY:
            self._upload()
        return row

    def _upload(self) -> None:
        self._fh.flush()
        write_bytes(self._local.read_bytes(), self.location)
        self._last_upload = time.monotonic()
        self._dirty = False

    def close(self) -> None:
        """Flush (and upload, for a remote manifest); safe to call twice."""
        if self._fh.closed:
            return
        try:
            if self.remote and self._dirty:
                self._upload()
        finally:
            self._fh.close()
            if self.remote:
                self._local.unlink(missing_ok=True)
