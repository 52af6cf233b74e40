"""A minimal io_uring through raw system calls (ctypes), for the mixed
workload: the VM guest has Python but no liburing.

One ring, one request at a time: IORING_OP_SEND / IORING_OP_RECV on a
socket, submitted and waited for in one io_uring_enter. Layouts and numbers
are the kernel's UAPI (include/uapi/linux/io_uring.h), x86_64.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

SYS_IO_URING_SETUP = 425
SYS_IO_URING_ENTER = 426
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_ENTER_GETEVENTS = 1 << 0
IORING_OP_SEND = 26
IORING_OP_RECV = 27
SQE_SIZE, CQE_SIZE = 64, 16


class _SqOffsets(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in (
        "head", "tail", "ring_mask", "ring_entries", "flags", "dropped", "array", "resv1")] + [
        ("user_addr", ctypes.c_uint64)]


class _CqOffsets(ctypes.Structure):
    _fields_ = [(n, ctypes.c_uint32) for n in (
        "head", "tail", "ring_mask", "ring_entries", "overflow", "cqes", "flags", "resv1")] + [
        ("user_addr", ctypes.c_uint64)]


class _Params(ctypes.Structure):
    _fields_ = [("sq_entries", ctypes.c_uint32), ("cq_entries", ctypes.c_uint32),
                ("flags", ctypes.c_uint32), ("sq_thread_cpu", ctypes.c_uint32),
                ("sq_thread_idle", ctypes.c_uint32), ("features", ctypes.c_uint32),
                ("wq_fd", ctypes.c_uint32), ("resv", ctypes.c_uint32 * 3),
                ("sq_off", _SqOffsets), ("cq_off", _CqOffsets)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(*args: object) -> int:
    ret = int(_libc.syscall(*args))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


class Ring:
    """An io_uring instance of a few entries; `op` runs one request."""

    def __init__(self, entries: int = 4) -> None:
        p = _Params()
        self.fd = _syscall(SYS_IO_URING_SETUP, entries, ctypes.byref(p))
        self.p = p
        sq_size = p.sq_off.array + p.sq_entries * 4
        cq_size = p.cq_off.cqes + p.cq_entries * CQE_SIZE
        prot = mmap.PROT_READ | mmap.PROT_WRITE
        if p.features & IORING_FEAT_SINGLE_MMAP:
            self.sq = self.cq = mmap.mmap(self.fd, max(sq_size, cq_size), mmap.MAP_SHARED, prot,
                                          offset=IORING_OFF_SQ_RING)
        else:
            self.sq = mmap.mmap(self.fd, sq_size, mmap.MAP_SHARED, prot,
                                offset=IORING_OFF_SQ_RING)
            self.cq = mmap.mmap(self.fd, cq_size, mmap.MAP_SHARED, prot,
                                offset=IORING_OFF_CQ_RING)
        self.sqes = mmap.mmap(self.fd, p.sq_entries * SQE_SIZE, mmap.MAP_SHARED, prot,
                              offset=IORING_OFF_SQES)

    def _u32(self, m: mmap.mmap, off: int) -> int:
        return int(struct.unpack_from("<I", m, off)[0])

    def op(self, opcode: int, fd: int, buf: ctypes.Array[ctypes.c_char], length: int,
           user_data: int = 1) -> int:
        """Submit one request on `fd` with `length` bytes of `buf` and wait
        for its completion: the CQE's result (bytes, or -errno)."""
        so, co = self.p.sq_off, self.p.cq_off
        tail = self._u32(self.sq, so.tail)
        idx = tail & self._u32(self.sq, so.ring_mask)
        sqe = bytearray(SQE_SIZE)
        # opcode, flags, ioprio, fd, off, addr, len, msg_flags, user_data
        struct.pack_into("<BBHiQQIIQ", sqe, 0, opcode, 0, 0, fd, 0, ctypes.addressof(buf),
                         length, 0, user_data)
        self.sqes[idx * SQE_SIZE:(idx + 1) * SQE_SIZE] = bytes(sqe)
        struct.pack_into("<I", self.sq, so.array + idx * 4, idx)
        struct.pack_into("<I", self.sq, so.tail, tail + 1)
        _syscall(SYS_IO_URING_ENTER, self.fd, 1, 1, IORING_ENTER_GETEVENTS, None, 0)
        head = self._u32(self.cq, co.head)
        if head == self._u32(self.cq, co.tail):
            raise OSError("io_uring_enter returned without a completion")
        cqe = co.cqes + (head & self._u32(self.cq, co.ring_mask)) * CQE_SIZE
        got, res = struct.unpack_from("<Qi", self.cq, cqe)
        struct.pack_into("<I", self.cq, co.head, head + 1)
        if got != user_data:
            raise OSError(f"io_uring completion for request {got}, expected {user_data}")
        return int(res)

    def send(self, fd: int, data: bytes) -> int:
        buf = ctypes.create_string_buffer(data, len(data))
        return self.op(IORING_OP_SEND, fd, buf, len(data))

    def recv(self, fd: int, size: int) -> int:
        """Bytes received (the data is dropped: the workload counts bytes)."""
        buf = ctypes.create_string_buffer(size)
        return self.op(IORING_OP_RECV, fd, buf, size)

    def close(self) -> None:
        for m in {id(x): x for x in (self.sq, self.cq, self.sqes)}.values():
            m.close()
        os.close(self.fd)
