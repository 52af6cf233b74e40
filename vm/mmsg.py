"""sendmmsg(2) and recvmmsg(2) through libc (ctypes): Python's socket
module has neither. x86_64 layouts (struct msghdr, struct mmsghdr)."""

from __future__ import annotations

import ctypes
import os

MSG_WAITFORONE = 0x10000


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)


def _vector(bufs: list[ctypes.Array[ctypes.c_char]]) -> tuple[ctypes.Array[_Mmsghdr],
                                                              ctypes.Array[_Iovec]]:
    iovs = (_Iovec * len(bufs))()
    msgs = (_Mmsghdr * len(bufs))()
    for i, buf in enumerate(bufs):
        iovs[i].iov_base = ctypes.addressof(buf)
        iovs[i].iov_len = len(buf)
        msgs[i].msg_hdr.msg_iov = ctypes.pointer(iovs[i])
        msgs[i].msg_hdr.msg_iovlen = 1
    return msgs, iovs


def _bytes(msgs: ctypes.Array[_Mmsghdr], count: int) -> int:
    if count < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return sum(msgs[i].msg_len for i in range(count))


def sendmmsg(fd: int, parts: list[bytes]) -> int:
    """One sendmmsg of one message per part: the bytes sent (the kernel's
    msg_len of each message sent)."""
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in parts]
    msgs, _iovs = _vector(bufs)
    return _bytes(msgs, _libc.sendmmsg(fd, msgs, len(parts), 0))


def recvmmsg(fd: int, sizes: list[int]) -> int:
    """One recvmmsg of len(sizes) messages, waiting for the first only
    (MSG_WAITFORONE: a stream socket would otherwise block for all): the
    bytes received."""
    bufs = [ctypes.create_string_buffer(n) for n in sizes]
    msgs, _iovs = _vector(bufs)
    return _bytes(msgs, _libc.recvmmsg(fd, msgs, len(sizes), MSG_WAITFORONE, None))
