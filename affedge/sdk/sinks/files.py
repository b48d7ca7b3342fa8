"""File sinks: ``.csv`` (flat, primary face) and ``.jsonl`` (schema-1 records with every face).

Each row is flushed to the OS as it is written and the file is fsynced on close, so a live
reader sees every frame at once and a SIGTERM or power loss after ``close`` loses nothing.
"""
from __future__ import annotations

import contextlib
import csv
import os
import stat

from affedge.sdk.sinks.base import Sink, csv_row, record_json, register_sink


def open_output_file(path: str):
    """Open ``path`` for writing text (parents created); OSError with the path on failure."""
    if os.path.isdir(path):
        raise IsADirectoryError(21, "is a directory, not a file", path)
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.exists(parent) and not os.path.isdir(parent):
        raise NotADirectoryError(20, f"{parent} is a file, not a directory", path)
    os.makedirs(parent, exist_ok=True)
    return open(path, "w", newline="", encoding="utf-8")


class _FileSink(Sink):
    def __init__(self, target: str):
        super().__init__()
        self.target = self.path = os.fspath(target)
        self._fh = open_output_file(self.path)
        self.error: OSError | None = None  # the write error already raised to the caller

    def _emit(self, text: str) -> None:
        try:
            self._fh.write(text)
            self._fh.flush()
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        if not self._fh.closed:
            self._fh.flush()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        fh = self._fh
        if self.error is not None:  # reported once already: release the file, no new error
            with contextlib.suppress(OSError):
                fh.close()
            return
        try:
            fh.flush()
            st = os.fstat(fh.fileno())
            if stat.S_ISREG(st.st_mode):
                os.fsync(fh.fileno())
        finally:
            try:
                fh.close()
            except OSError:
                pass  # the flush above already raised the same error


@register_sink(".csv")
class CsvSink(_FileSink):
    """Columns :attr:`Prediction.CSV_FIELDS` (header first), one row per frame."""

    def __init__(self, target: str):
        from affedge.sdk.prediction import Prediction

        super().__init__(target)
        self._buf = _Line()
        self._csv = csv.writer(self._buf, lineterminator="\n")
        self._csv.writerow(Prediction.CSV_FIELDS)
        self._emit(self._buf.take())

    def write(self, prediction) -> None:
        self._csv.writerow(csv_row(prediction))
        self._emit(self._buf.take())
        self.rows += 1


@register_sink(".jsonl")
class JsonlSink(_FileSink):
    """One strict-JSON schema-1 record per line."""

    def write(self, prediction) -> None:
        self._emit(record_json(prediction) + "\n")
        self.rows += 1


class _Line:
    """A write target for csv.writer that keeps one formatted row."""

    def __init__(self):
        self.parts: list[str] = []

    def write(self, s: str) -> None:
        self.parts.append(s)

    def take(self) -> str:
        s = "".join(self.parts)
        self.parts.clear()
        return s
