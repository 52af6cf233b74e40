"""A version 2 file read in two halves by two processes (--stats' pass 1,
timeline/columnar/parts.py): the head is the file read up to the first
batch that ends at or past a byte offset (StreamReader.stop_after), the
tail is a stream of its own made of the file without the head's record
batches (tail_file). No index is needed: both halves apply the same rule
to the positions of the stream's messages.

The tail keeps the head's dictionary messages, in order: a batch whose
dictionaries did not change since the last replacement reads them from
the messages before it, as in the whole file.
"""

from __future__ import annotations

import io
import os
from typing import IO

import pyarrow as pa
import pyarrow.ipc as ipc

from tracer.tracefile.arrow import STREAM_MAGIC

_END_OF_STREAM = STREAM_MAGIC + bytes(4)  # a message of length 0


def tail_file(path: str, split_at: int) -> tuple[IO[bytes], int] | None:
    """The stream of the batches after the first one ending at or past
    `split_at` (file offset): the schema, every dictionary message, and
    the file from that batch's end on; and the number of batches before
    it. None when no batch ends there or the file ends with it (the head
    is the whole file), or when the messages cannot be read up to it (the
    head's reader then finds the damage itself)."""
    segments: list[tuple[int, int]] = []
    batches = 0
    with pa.OSFile(path, "r") as src:
        try:
            messages = ipc.MessageReader.open_stream(src)
            at = 0
            while True:
                try:
                    message = messages.read_next_message()
                except StopIteration:
                    return None
                end = src.tell()
                if message.type != "record batch":  # schema, dictionaries: kept
                    if segments and segments[-1][1] == at:
                        segments[-1] = (segments[-1][0], end)
                    else:
                        segments.append((at, end))
                else:
                    batches += 1
                if message.type == "record batch" and end >= split_at:
                    size = os.stat(path).st_size
                    if size - end <= len(_END_OF_STREAM):  # nothing after it
                        return None
                    segments.append((end, size))
                    break
                at = end
        except (pa.ArrowException, OSError, ValueError):
            return None
    return io.BufferedReader(_SplicedFile(path, segments), buffer_size=1 << 16), batches


class _SplicedFile(io.RawIOBase):
    """Byte ranges of a file read as one file."""

    def __init__(self, path: str, segments: list[tuple[int, int]]) -> None:
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._segments = segments
        self._size = sum(end - start for start, end in segments)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buf: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buf).cast("B")
        got = 0
        skip = self._pos
        for start, end in self._segments:
            length = end - start
            if skip >= length:
                skip -= length
                continue
            want = min(len(view) - got, length - skip)
            n = os.preadv(self._fd, [view[got:got + want]], start + skip)
            got += n
            if n < want or got == len(view):
                break
            skip = 0
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
