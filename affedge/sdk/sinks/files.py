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
    try:
        os.makedirs(parent, exist_ok=True)
        # appending (O_APPEND) after the truncation: a log rotation that truncates the file
        # under us (logrotate's copytruncate) gets the next row at its new end, where plain
        # writes went on at the old offset (an operator's trial: 12 MB of NUL bytes first)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o666)
        return open(fd, "w", newline="", encoding="utf-8")
    except OSError as exc:
        if exc.filename is None:  # (say which file)
            raise type(exc)(exc.errno, exc.strerror, path) from None
        raise


class _FileSink(Sink):
    def __init__(self, target: str):
        super().__init__()
        self.target = self.path = os.fspath(target)
        self._fh = open_output_file(self.path)
        self.error: OSError | None = None  # the write error already raised to the caller

    def _emit(self, text: str) -> None:
        """One row, written straight to the file (no buffer left to flush); a row the disk
        took only part of (full) is taken back, so the file ends with a whole row."""
        data, done = text.encode("utf-8"), 0
        fd = self._fh.fileno()
        try:
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError as exc:
            self.error = exc
            if done:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, os.fstat(fd).st_size - done)
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
    """Columns :attr:`Prediction.CSV_FIELDS` (header first), one row per frame. Written with
    ``source`` (``affedge serve``, several sources into one file), a first ``source`` column
    names each row's source; the header is then written with the first row (a file that
    receives no row gets the plain header on close)."""

    accepts_source = True

    def __init__(self, target: str):
        super().__init__(target)
        self._buf = _Line()
        self._csv = csv.writer(self._buf, lineterminator="\n")
        self._with_source: bool | None = None  # decided by the first row

    def _header(self, with_source: bool) -> None:
        from affedge.sdk.prediction import Prediction

        self._with_source = with_source
        self._csv.writerow((("source",) if with_source else ()) + tuple(Prediction.CSV_FIELDS))

    def write(self, prediction, source: str | None = None) -> None:
        if self._with_source is None:
            self._header(source is not None)
        row = csv_row(prediction)
        self._csv.writerow([source or ""] + row if self._with_source else row)
        self._emit(self._buf.take())
        self.rows += 1

    def close(self) -> None:
        if not self.closed and self._with_source is None and self.error is None:
            self._header(False)
            with contextlib.suppress(OSError):
                self._emit(self._buf.take())
        super().close()


@register_sink(".jsonl")
class JsonlSink(_FileSink):
    """One strict-JSON schema-1 record per line (with ``source`` when written with one)."""

    accepts_source = True

    def write(self, prediction, source: str | None = None) -> None:
        extra = {} if source is None else {"source": source}
        self._emit(record_json(prediction, **extra) + "\n")
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
