"""Opening a trace of any version: what the file is (by its first bytes),
then its events batch by batch (scan_trace) or all at once (read_trace)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pyarrow as pa

from tracer.events import EVENT_SCHEMA, empty_frames, frames_in
from tracer.tracefile.arrow import NO_TRAILER, STREAM_MAGIC, StreamReader
from tracer.tracefile.jsonl import CHUNK_BYTES, JsonlReader, parse_header_line, read_chunks
from tracer.tracefile.loss_columns import LossColumns, LossMode
from tracer.tracefile.records import Header, Lost, Trace, TraceFormatError, Trailer
from tracer.tracefile.schema import MAX_LINE_BYTES
from tracer.tracefile.split import tail_file

# A version 1 file up to this size is read whole (its table: ~150 bytes an
# event, ~150 MiB at 1 M events); a bigger one is converted to a scratch
# version 2 copy first (tracer/timeline/groups.py, --stats' columnar/parts.py).
V1_WHOLE_BYTES = 256 << 20

# What other files look like, for a precise refusal.
_FOREIGN = (
    (b"ARROW1", "an Arrow IPC file, not a kpath trace stream"),
    (b"PAR1", "a Parquet file"),
    (b"\x89PNG", "a PNG image"),
    (b"%PDF", "a PDF document"),
    (b"\x7fELF", "an ELF binary"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x28\xb5\x2f\xfd", "zstd data"),
    (b"PK\x03\x04", "a zip archive"),
)


_NOT_REGULAR = (
    (stat.S_ISDIR, "is a directory, not a trace file"),
    (stat.S_ISFIFO, "is a pipe (FIFO), not a trace file: kpath reads regular files"),
    (stat.S_ISCHR, "is a character device, not a trace file"),
    (stat.S_ISBLK, "is a block device, not a trace file"),
    (stat.S_ISSOCK, "is a socket, not a trace file"),
)


def _open(p: Path) -> IO[bytes]:
    """The file for reading, refused in one line unless it is a regular
    file: a FIFO would block (or never end), /dev/zero never ends. Opened
    without blocking, then checked on the open descriptor."""
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise TraceFormatError(f"{p}: no such file") from None
    except PermissionError:
        raise TraceFormatError(f"{p}: permission denied") from None
    except OSError as exc:
        raise TraceFormatError(f"{p}: cannot open: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = next((why for test, why in _NOT_REGULAR if test(mode)), "is not a regular file")
        raise TraceFormatError(f"{p}: {what}")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class TraceScan:
    """A trace read batch by batch in file order, in bounded memory.

    `header` and `version` are known at once; `lost`, `trailer` and
    `cut_short` are complete once the batches are exhausted. Iterating
    yields RecordBatches in EVENT_SCHEMA, some possibly empty (a version 2
    file starts and ends with one). Dictionaries may differ between
    batches: `comm` always, `probe` in a version 1 file whose events name
    probes its header lacks (a version 2 file's are the header's probe
    names). `chunks()` yields each batch with the lost records that came
    with it (a version 2 file's only while they are kept as records:
    select_losses). Bad data raises TraceFormatError."""

    def __init__(self, path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> None:
        p = Path(path)
        self.path = str(p)
        self._losses: LossMode = "records"
        self._lost: list[Lost] = []
        self._lost_columns: list[LossColumns] = []
        self.trailer: Trailer | None = None
        self.cut_short: str | None = None
        self._fh = _open(p)
        self._chunk_bytes = chunk_bytes
        self._stream: StreamReader | None = None
        self._jsonl: JsonlReader | None = None
        self._started = False
        self._frames: list[pa.Table] = []  # FRAMES_SCHEMA, rows counted in the trace
        self._rows = 0  # events yielded so far
        try:
            self.header, self.version = self._identify()
        except BaseException:
            self._fh.close()
            raise

    def _identify(self) -> tuple[Header, int]:
        name = self.path
        head = self._fh.read(8)
        if not head:
            raise TraceFormatError(f"{name}: empty file, not a kpath trace")
        if head.startswith(STREAM_MAGIC):
            # Arrow reads its own file: through a Python file object, each
            # of its many small reads would cost a Python call.
            self._fh.close()
            try:
                source = pa.OSFile(name, "r")
            except OSError as exc:
                raise TraceFormatError(f"{name}: cannot open: {exc}") from None
            self._stream = StreamReader(source, name)
            return self._stream.header, 2
        for magic, what in _FOREIGN:
            if head.startswith(magic):
                raise TraceFormatError(f"{name}: not a kpath trace ({what})")
        self._fh.seek(0)
        first = self._fh.readline(MAX_LINE_BYTES + 1)
        if len(first) > MAX_LINE_BYTES:
            raise TraceFormatError(f"{name}: first line longer than {MAX_LINE_BYTES >> 20} MiB, "
                                   "not a kpath trace")
        try:
            first.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TraceFormatError(
                f"{name}: not a kpath trace (binary data at byte {exc.start})") from None
        if not first.strip():
            rest = self._fh.read(1 << 16)
            if not rest.strip():
                raise TraceFormatError(f"{name}: empty file, not a kpath trace")
        header = parse_header_line(first, name)
        self._jsonl = JsonlReader(name, header.probe_names)
        return header, 1

    def select(self, columns: list[str]) -> None:
        """Before the first batch: a version 2 file's batches hold only these
        EVENT_SCHEMA columns (the others are not decompressed); a version 1
        file's, all (a line is parsed whole)."""
        if self._started:
            raise RuntimeError("select before reading")
        if self._stream is not None:
            self._stream.select(columns)

    def select_losses(self, how: LossMode) -> None:
        """Before the first batch: keep the loss records as Lost records
        (`lost`, the default), as columns (`loss_columns`: a million records
        in ~40 MB instead of ~130 MB), or not at all (a second pass over a
        file; asking for them then is a RuntimeError)."""
        if self._started:
            raise RuntimeError("select_losses before reading")
        self._losses = how
        if self._stream is not None:
            self._stream.losses = how

    @property
    def lost(self) -> list[Lost]:
        """The loss records read so far, as Lost records (made from the
        columns when they are kept as columns)."""
        if self._losses == "columns":
            return self.loss_columns.records()
        self._kept()
        return self._lost

    @property
    def loss_columns(self) -> LossColumns:
        """The loss records read so far, as columns."""
        if self._losses == "records":
            return LossColumns.of_rows(self._lost)
        self._kept()
        if len(self._lost_columns) != 1:
            self._lost_columns = [LossColumns.concat(self._lost_columns)]
        return self._lost_columns[0]

    def take_losses(self) -> LossColumns:
        """loss_columns, handed over: the scan keeps none after (asking it
        for them then is a RuntimeError), so that they go with the
        taker's last reference (a million records are ~40 MB)."""
        out = self.loss_columns
        self._lost, self._lost_columns, self._losses = [], [], "none"
        return out

    def add_losses(self, lost: list[Lost] | LossColumns) -> None:
        """Loss records read elsewhere (the tail of a file read in halves),
        after the ones read here."""
        if self._losses == "none":
            return
        if isinstance(lost, LossColumns):
            if self._losses == "records":
                self._lost.extend(lost.records())
            else:
                self._lost_columns.append(lost)
        elif self._losses == "records":
            self._lost.extend(lost)
        elif lost:
            self._lost_columns.append(LossColumns.of_rows(lost))

    def _kept(self) -> None:
        if self._losses == "none":
            raise RuntimeError(f"{self.path}: loss records not kept in this pass")

    def stop_after(self, offset: int) -> None:
        """A version 2 file read up to the first batch ending at or past
        byte `offset` (split.py); `stopped` tells whether it stopped there,
        before the file's end (no trailer read, and not cut short)."""
        if self._stream is None:
            raise ValueError("only a version 2 file is read in halves")
        self._stream.stop_after(offset)

    @property
    def stopped(self) -> bool:
        return self._stream is not None and self._stream.stopped

    def chunks(self) -> Iterator[tuple[pa.RecordBatch, list[Lost]]]:
        if self._started:
            raise RuntimeError("a TraceScan is read once")
        self._started = True
        try:
            if self._stream is not None:
                yield from self._v2(self._stream)
            else:
                yield from self._v1()
        finally:
            self.close()

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch, _ in self.chunks():
            yield batch

    @property
    def frames(self) -> pa.Table:
        """The frames of the events read so far (tracer/frames.py), `row`
        each event's row in the trace."""
        if self._stream is not None:
            self._frames, self._stream.frames = self._frames + self._stream.frames, []
        if len(self._frames) != 1:
            self._frames = [pa.concat_tables([empty_frames(), *self._frames])]
        return self._frames[0]

    def frames_between(self, first_row: int, num_rows: int) -> pa.Table:
        """The frames of rows [first_row, first_row + num_rows), their rows
        counted from first_row."""
        found = frames_in(self.frames, first_row, num_rows)
        import pyarrow.compute as pc  # lazily: 40+ ms of --stats' start-up
        rows = pc.subtract(found.column("row"), pa.scalar(first_row, pa.uint64()))
        return found.set_column(0, "row", rows)

    def _v2(self, stream: StreamReader) -> Iterator[tuple[pa.RecordBatch, list[Lost]]]:
        for batch, lost in stream:
            self.add_losses(lost)
            yield batch, lost if isinstance(lost, list) else []
        self.trailer = stream.trailer
        self.cut_short = stream.cut_short

    def _v1(self) -> Iterator[tuple[pa.RecordBatch, list[Lost]]]:
        reader = self._jsonl
        assert reader is not None
        cut_short = None
        for run in read_chunks(self._fh, self.path, 2, self._chunk_bytes):
            try:
                chunk = reader.parse(run)
            except TraceFormatError:
                if len(run.newlines):
                    raise
                # The unterminated last line: a record cut mid-write.
                cut_short = f"last record (line {run.first_lineno}) is incomplete"
                break
            self.add_losses(chunk.lost)
            if chunk.frames is not None:
                import pyarrow.compute as pc  # lazily: 40+ ms of --stats' start-up
                rows = pc.add(chunk.frames.column("row"), pa.scalar(self._rows, pa.uint64()))
                self._frames.append(chunk.frames.set_column(0, "row", rows))
            self._rows += chunk.batch.num_rows
            yield chunk.batch, chunk.lost
        self.trailer = reader.trailer
        if self.trailer is None:
            no_trailer = NO_TRAILER
            cut_short = f"{cut_short}; {no_trailer}" if cut_short else no_trailer
        self.cut_short = cut_short

    def close(self) -> None:
        self._fh.close()
        if self._stream is not None:
            self._stream.close()

    def __enter__(self) -> TraceScan:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scan_tail(path: str, split_at: int) -> TraceScan | None:
    """The batches of a version 2 file after the first one ending at or
    past byte `split_at` (the tail of stop_after's head, split.py), as a
    TraceScan with the file's header; None when there are none."""
    scan = TraceScan(path)
    if scan.version != 2:
        scan.close()
        raise ValueError("only a version 2 file is read in halves")
    tail = tail_file(scan.path, split_at)
    scan.close()
    if tail is None:
        return None
    scan._stream = StreamReader(pa.PythonFile(tail[0], mode="r"), scan.path)
    scan._stream.batches_read = tail[1]  # a bad batch is named by its number in the file
    return scan


def scan_trace(path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES) -> TraceScan:
    """Open a trace of any version for reading batch by batch; raises
    TraceFormatError (one line) when it is not a readable kpath trace."""
    return TraceScan(path, chunk_bytes)


def read_trace(path: str | os.PathLike[str]) -> Trace:
    """Read a whole trace of any version; raise TraceFormatError with a
    one-line reason."""
    scan = scan_trace(path)
    batches = list(scan)
    table = pa.Table.from_batches(batches, schema=EVENT_SCHEMA)
    trace = Trace.from_table(scan.header, table, scan.lost, scan.trailer, scan.path,
                             scan.cut_short)
    trace.frames = scan.frames
    return trace
