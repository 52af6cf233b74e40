"""A small ctypes layer over the system libbpf (Debian's libbpf.so.1).

Only what the CO-RE backend needs: open an object, switch programs on and
off, set read-only data and map sizes before load, load, attach (kprobes
with a cookie, tp_btf), read and update maps, read map and link info, and read
the object's BTF to check record layouts. Every failure becomes a
CaptureError subclass here, at the boundary, with libbpf's own log kept
(the verifier's output on a failed load).

Why ctypes and not a binding: pylibbpf (PyPI) needs Python >= 3.12 and has
no ring buffer reader; BCC's Python module compiles at run time, which is
what this backend exists to avoid.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tracer.capture.errors import AttachError, LoadError, PrerequisiteError

LIBBPF_NAMES = ("libbpf.so.1", "libbpf.so")

_c_void_p = ctypes.c_void_p
_c_char_p = ctypes.c_char_p

# libbpf_print_fn_t: int (*)(enum libbpf_print_level, const char *, va_list)
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, _c_char_p, _c_void_p)

BTF_KIND_STRUCT = 4
BTF_KIND_DATASEC = 15
BTF_KIND_TYPEDEF = 8
BTF_KIND_FUNC = 12
BPF_ANY = 0


class _KprobeOpts(ctypes.Structure):
    # struct bpf_kprobe_opts (libbpf 1.x)
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("bpf_cookie", ctypes.c_uint64),
        ("offset", ctypes.c_size_t),
        ("retprobe", ctypes.c_bool),
    ]


class _TraceOpts(ctypes.Structure):
    # struct bpf_trace_opts (libbpf 0.8+): fentry/fexit attach options
    _fields_ = [("sz", ctypes.c_size_t), ("cookie", ctypes.c_uint64)]


class _BtfType(ctypes.Structure):
    # struct btf_type; members (struct btf_member) or datasec entries
    # (struct btf_var_secinfo) follow it, three u32 each.
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32),
                ("size_or_type", ctypes.c_uint32)]


class _Triple(ctypes.Structure):
    _fields_ = [("a", ctypes.c_uint32), ("b", ctypes.c_uint32), ("c", ctypes.c_uint32)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info (linux/bpf.h) up to the fields kpath reads; the
    kernel fills what it knows and zeroes the rest (older kernels: 0)."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16), ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64), ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32), ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32), ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32), ("pad", ctypes.c_uint32),
    ]


class MapInfo(ctypes.Structure):
    """struct bpf_map_info (linux/bpf.h), the leading fields kpath reads."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16),
    ]


class KprobeLinkInfo(ctypes.Structure):
    """struct bpf_link_info (linux/bpf.h) for a perf_event link of a kprobe:
    the union member perf_event.kprobe. `missed` (Linux 6.7+) counts the
    kprobe's misses: hits while another kprobe ran on that CPU, and
    kretprobe instances exhausted."""

    _fields_ = [
        ("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("prog_id", ctypes.c_uint32),
        ("pad0", ctypes.c_uint32),
        ("perf_event_type", ctypes.c_uint32), ("pad1", ctypes.c_uint32),
        ("func_name", ctypes.c_uint64), ("name_len", ctypes.c_uint32),
        ("offset", ctypes.c_uint32), ("addr", ctypes.c_uint64), ("missed", ctypes.c_uint64),
        ("cookie", ctypes.c_uint64),
    ]


BPF_LINK_TYPE_PERF_EVENT = 7
BPF_PERF_EVENT_KPROBE, BPF_PERF_EVENT_KRETPROBE = 3, 4


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # bytes


def _load_lib() -> ctypes.CDLL:
    for name in LIBBPF_NAMES:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    found = ctypes.util.find_library("bpf")
    if found:
        return ctypes.CDLL(found, use_errno=True)
    raise PrerequisiteError("libbpf is not installed: apt-get install libbpf1")


def _declare(lib: ctypes.CDLL) -> None:
    sigs: dict[str, tuple[object, list[object]]] = {
        "libbpf_set_print": (_c_void_p, [_PRINT_FN]),
        "bpf_object__open_file": (_c_void_p, [_c_char_p, _c_void_p]),
        "bpf_object__load": (ctypes.c_int, [_c_void_p]),
        "bpf_object__close": (None, [_c_void_p]),
        "bpf_object__btf": (_c_void_p, [_c_void_p]),
        "bpf_object__find_program_by_name": (_c_void_p, [_c_void_p, _c_char_p]),
        "bpf_object__find_map_by_name": (_c_void_p, [_c_void_p, _c_char_p]),
        "bpf_object__next_map": (_c_void_p, [_c_void_p, _c_void_p]),
        "bpf_map__name": (_c_char_p, [_c_void_p]),
        "bpf_program__set_autoload": (ctypes.c_int, [_c_void_p, ctypes.c_bool]),
        "bpf_program__attach": (_c_void_p, [_c_void_p]),
        "bpf_program__attach_kprobe_opts": (_c_void_p, [_c_void_p, _c_char_p, _c_void_p]),
        "bpf_program__attach_trace_opts": (_c_void_p, [_c_void_p, _c_void_p]),
        "bpf_program__set_attach_target": (ctypes.c_int, [_c_void_p, ctypes.c_int, _c_char_p]),
        "bpf_link__destroy": (ctypes.c_int, [_c_void_p]),
        "bpf_link__fd": (ctypes.c_int, [_c_void_p]),
        "bpf_program__fd": (ctypes.c_int, [_c_void_p]),
        "bpf_obj_get_info_by_fd": (ctypes.c_int, [ctypes.c_int, _c_void_p,
                                                  ctypes.POINTER(ctypes.c_uint32)]),
        "bpf_map__fd": (ctypes.c_int, [_c_void_p]),
        "bpf_prog_get_next_id": (ctypes.c_int, [ctypes.c_uint32,
                                                ctypes.POINTER(ctypes.c_uint32)]),
        "bpf_prog_get_fd_by_id": (ctypes.c_int, [ctypes.c_uint32]),
        "bpf_map__set_max_entries": (ctypes.c_int, [_c_void_p, ctypes.c_uint32]),
        "bpf_map__initial_value": (_c_void_p, [_c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
        "bpf_map_update_elem": (ctypes.c_int, [ctypes.c_int, _c_void_p, _c_void_p,
                                               ctypes.c_uint64]),
        "bpf_map_lookup_elem": (ctypes.c_int, [ctypes.c_int, _c_void_p, _c_void_p]),
        "bpf_map_get_next_key": (ctypes.c_int, [ctypes.c_int, _c_void_p, _c_void_p]),
        "btf__load_vmlinux_btf": (_c_void_p, []),
        "btf__free": (None, [_c_void_p]),
        "btf__find_by_name_kind": (ctypes.c_int32, [_c_void_p, _c_char_p, ctypes.c_uint32]),
        "btf__type_by_id": (ctypes.POINTER(_BtfType), [_c_void_p, ctypes.c_uint32]),
        "btf__name_by_offset": (_c_char_p, [_c_void_p, ctypes.c_uint32]),
    }
    for name, (restype, argtypes) in sigs.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


class _Log:
    """libbpf's messages (warnings, the verifier log), kept for errors."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.lock = threading.Lock()
        libc = ctypes.CDLL(None)
        self._vsnprintf = libc.vsnprintf
        self._vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, _c_char_p, _c_void_p]
        self._vsnprintf.restype = ctypes.c_int
        self.callback = _PRINT_FN(self._print)

    def _print(self, level: int, fmt: bytes | None, args: int | None) -> int:
        buf = ctypes.create_string_buffer(4096)
        # On x86_64 a va_list argument is a pointer to the va_list state.
        self._vsnprintf(buf, len(buf), fmt, args)
        with self.lock:
            self.lines.append(buf.value.decode("utf-8", "replace").rstrip("\n"))
            del self.lines[:-2000]
        return 0

    def take(self) -> str:
        with self.lock:
            text = "\n".join(self.lines)
            self.lines.clear()
        return text


_lib: ctypes.CDLL | None = None
_log: _Log | None = None


def lib() -> ctypes.CDLL:
    """The loaded libbpf, with our log callback installed (once)."""
    global _lib, _log
    if _lib is None:
        loaded = _load_lib()
        _declare(loaded)
        _log = _Log()
        loaded.libbpf_set_print(_log.callback)
        _lib = loaded
    return _lib


def take_log() -> str:
    return _log.take() if _log is not None else ""


def _errno_text() -> tuple[int, str]:
    err = ctypes.get_errno()
    return err, os.strerror(err) if err else "unknown error"


@contextlib.contextmanager
def _vmlinux_btf() -> Iterator[int]:
    """The running kernel's BTF, freed after use."""
    lb = lib()
    btf = lb.btf__load_vmlinux_btf()
    if not btf:
        _, why = _errno_text()
        raise PrerequisiteError(f"cannot read the kernel's BTF: {why}")
    try:
        yield btf
    finally:
        lb.btf__free(btf)


def vmlinux_btf_has(names: list[tuple[str, int]]) -> dict[str, bool]:
    """Which (name, BTF kind) exist in the running kernel's BTF."""
    with _vmlinux_btf() as btf:
        return {name: lib().btf__find_by_name_kind(btf, name.encode(), kind) > 0
                for name, kind in names}


def vmlinux_func_arity(names: list[str]) -> dict[str, int | None]:
    """How many arguments each named function takes per the running
    kernel's BTF (None: no such function there, e.g. inlined, renamed by
    the compiler or in a module): what a BPF trampoline needs."""
    lb = lib()
    out: dict[str, int | None] = {}
    with _vmlinux_btf() as btf:
        for name in names:
            tid = lb.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_FUNC)
            if tid <= 0:
                out[name] = None
                continue
            # A FUNC's type is its FUNC_PROTO, whose vlen is the parameter count.
            proto = lb.btf__type_by_id(btf, lb.btf__type_by_id(btf, tid).contents.size_or_type)
            out[name] = proto.contents.info & 0xFFFF if proto else None
    return out


class Link:
    def __init__(self, ptr: int, target: str) -> None:
        self.ptr: int | None = ptr
        self.target = target

    def destroy(self) -> None:
        if self.ptr:
            lib().bpf_link__destroy(self.ptr)
            self.ptr = None


class BpfObject:
    """One opened (then loaded) BPF object file and the links made from it."""

    def __init__(self, path: Path) -> None:
        lb = lib()
        take_log()
        if not path.is_file():
            raise PrerequisiteError(
                f"the CO-RE object {path} is missing: run scripts/setup.sh "
                "(or scripts/build-bpf.sh) to build it"
            )
        ptr = lb.bpf_object__open_file(str(path).encode(), None)
        if not ptr:
            _, why = _errno_text()
            raise LoadError(f"cannot open {path}: {why}", take_log())
        self._ptr: int | None = ptr
        self.path = path
        self.links: list[Link] = []

    @property
    def ptr(self) -> int:
        if self._ptr is None:
            raise LoadError("BPF object already closed", "")
        return self._ptr

    # -- before load ------------------------------------------------------

    def program(self, name: str) -> int:
        prog = lib().bpf_object__find_program_by_name(self.ptr, name.encode())
        if not prog:
            raise LoadError(f"{self.path.name} has no program {name}", "")
        return int(prog)

    def has_program(self, name: str) -> bool:
        return bool(lib().bpf_object__find_program_by_name(self.ptr, name.encode()))

    def set_autoload(self, name: str, on: bool) -> None:
        lib().bpf_program__set_autoload(self.program(name), on)

    def set_attach_target(self, name: str, function: str) -> None:
        """Bind an fentry/fexit program to a kernel function (before load)."""
        if lib().bpf_program__set_attach_target(self.program(name), 0, function.encode()):
            _, why = _errno_text()
            raise LoadError(f"cannot bind {name} to {function}: {why}", take_log())

    def map(self, name: str) -> int:
        m = lib().bpf_object__find_map_by_name(self.ptr, name.encode())
        if not m:
            raise LoadError(f"{self.path.name} has no map {name}", "")
        return int(m)

    def maps(self) -> Iterator[tuple[str, int]]:
        lb = lib()
        m = lb.bpf_object__next_map(self.ptr, None)
        while m:
            yield lb.bpf_map__name(m).decode(), int(m)
            m = lb.bpf_object__next_map(self.ptr, m)

    def set_max_entries(self, map_name: str, n: int) -> None:
        if lib().bpf_map__set_max_entries(self.map(map_name), n):
            _, why = _errno_text()
            raise LoadError(f"cannot size map {map_name} to {n}: {why}", take_log())

    def rodata(self) -> tuple[int, int]:
        """Address and size of the object's .rodata, writable until load."""
        for name, m in self.maps():
            if name.endswith(".rodata"):
                size = ctypes.c_size_t()
                addr = lib().bpf_map__initial_value(m, ctypes.byref(size))
                if addr:
                    return int(addr), size.value
        raise LoadError(f"{self.path.name} has no .rodata section", "")

    def btf_struct(self, name: str) -> tuple[int, list[Member]]:
        """Size and members of a struct in the object's own BTF."""
        return self._btf_members(name, BTF_KIND_STRUCT)

    def btf_datasec(self, name: str) -> tuple[int, list[Member]]:
        """Size and variables (name, offset) of a data section."""
        return self._btf_members(name, BTF_KIND_DATASEC)

    def _btf_members(self, name: str, kind: int) -> tuple[int, list[Member]]:
        lb = lib()
        btf = lb.bpf_object__btf(self.ptr)
        tid = lb.btf__find_by_name_kind(btf, name.encode(), kind) if btf else -1
        if tid <= 0:
            raise LoadError(f"{self.path.name}: no BTF for {name}", "")
        t = lb.btf__type_by_id(btf, tid)
        vlen = t.contents.info & 0xFFFF
        entries = ctypes.cast(ctypes.addressof(t.contents) + ctypes.sizeof(_BtfType),
                              ctypes.POINTER(_Triple))
        out: list[Member] = []
        for i in range(vlen):
            ent = entries[i]
            if kind == BTF_KIND_DATASEC:
                # btf_var_secinfo: type (a VAR), offset, size
                var = lb.btf__type_by_id(btf, ent.a)
                vname = lb.btf__name_by_offset(btf, var.contents.name_off)
                out.append(Member(vname.decode(), ent.b))
            else:
                # btf_member: name_off, type, offset (bits; kind_flag: bitfield)
                mname = lb.btf__name_by_offset(btf, ent.a)
                bits = ent.c & 0xFFFFFF if t.contents.info >> 31 else ent.c
                out.append(Member(mname.decode(), bits // 8))
        return t.contents.size_or_type, out

    def load(self) -> None:
        take_log()
        if lib().bpf_object__load(self.ptr):
            err, why = _errno_text()
            raise LoadError(f"loading the BPF object failed: {why}", take_log(), err)

    # -- after load -------------------------------------------------------

    def _keep(self, link: int | None, target: str) -> Link:
        """A new link kept for close(), or libbpf's failure as an AttachError."""
        if not link:
            err, why = _errno_text()
            raise AttachError(f"{target}: {why}", take_log(), err)
        out = Link(int(link), target)
        self.links.append(out)
        return out

    def attach(self, prog_name: str, target: str) -> Link:
        """Attach by the program's section (tp_btf/NAME)."""
        take_log()
        return self._keep(lib().bpf_program__attach(self.program(prog_name)), target)

    def attach_kprobe(self, prog_name: str, symbol: str, cookie: int, retprobe: bool) -> Link:
        take_log()
        opts = _KprobeOpts(sz=ctypes.sizeof(_KprobeOpts), bpf_cookie=cookie, offset=0,
                           retprobe=retprobe)
        link = lib().bpf_program__attach_kprobe_opts(
            self.program(prog_name), symbol.encode(), ctypes.byref(opts))
        return self._keep(link, f"{'kretprobe' if retprobe else 'kprobe'}:{symbol}")

    def attach_trace(self, prog_name: str, target: str, cookie: int) -> Link:
        """Attach an fentry/fexit program to the function it was bound to."""
        take_log()
        opts = _TraceOpts(sz=ctypes.sizeof(_TraceOpts), cookie=cookie)
        link = lib().bpf_program__attach_trace_opts(self.program(prog_name), ctypes.byref(opts))
        return self._keep(link, target)

    def detach(self, link: Link) -> None:
        link.destroy()
        self.links.remove(link)

    def missed(self, prog_name: str) -> int:
        """Runs of a loaded program the kernel skipped (recursion_misses: it
        fired while it, or on some kernels another BPF program, was running
        on that CPU). 0 where the kernel does not count them."""
        fd = int(lib().bpf_program__fd(self.program(prog_name)))
        if fd < 0:
            return 0
        info = ProgInfo()
        size = ctypes.c_uint32(ctypes.sizeof(info))
        if lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)):
            return 0
        return int(info.recursion_misses)

    def map_fd(self, name: str) -> int:
        fd = int(lib().bpf_map__fd(self.map(name)))
        if fd < 0:
            raise LoadError(f"map {name} has no file descriptor (not loaded)", "")
        return fd

    def close(self) -> None:
        for link in self.links:
            link.destroy()
        self.links.clear()
        if self._ptr is not None:
            lib().bpf_object__close(self._ptr)
            self._ptr = None


def map_update(fd: int, key: ctypes._CData, value: ctypes._CData) -> None:
    if lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), BPF_ANY):
        _, why = _errno_text()
        raise LoadError(f"map update failed: {why}", "")


def map_u64_items(fd: int) -> Iterator[tuple[int, int]]:
    """(key, value) of a map with u64 keys and values."""
    lb = lib()
    key, nxt, value = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_uint64()
    first = True
    while lb.bpf_map_get_next_key(fd, None if first else ctypes.byref(key),
                                  ctypes.byref(nxt)) == 0:
        first = False
        key.value = nxt.value
        if lb.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value)) == 0:
            yield key.value, value.value


def map_info(fd: int) -> MapInfo:
    """A loaded map's type and size, from the kernel (works on BCC's maps too)."""
    info = MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)):
        _, why = _errno_text()
        raise LoadError(f"cannot read the map's info: {why}", "")
    return info


def kprobe_link_missed(link: Link) -> int | None:
    """The kernel's miss count of a kprobe link; None where the kernel does
    not report it (before 6.7 it fills no perf_event part)."""
    if not link.ptr:
        return None
    fd = int(lib().bpf_link__fd(link.ptr))
    info = KprobeLinkInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    if fd < 0 or lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)):
        return None
    if info.type != BPF_LINK_TYPE_PERF_EVENT or info.perf_event_type not in (
            BPF_PERF_EVENT_KPROBE, BPF_PERF_EVENT_KRETPROBE):
        return None
    return int(info.missed)


@dataclass(frozen=True)
class ProgStats:
    """A loaded program's run statistics (kernel.bpf_stats_enabled=1 makes
    the kernel count them: run_time_ns stays 0 otherwise)."""
    prog_id: int
    name: str
    run_cnt: int
    run_time_ns: int
    recursion_misses: int


def prog_stats() -> list[ProgStats]:
    """Every BPF program loaded on the system, as bpftool prog show lists
    them (root): for the capture benchmark's per-program cost table."""
    lb = lib()
    out: list[ProgStats] = []
    cur, nxt = 0, ctypes.c_uint32()
    while lb.bpf_prog_get_next_id(cur, ctypes.byref(nxt)) == 0:
        cur = nxt.value
        fd = int(lb.bpf_prog_get_fd_by_id(cur))
        if fd < 0:
            continue  # unloaded in between
        try:
            info = ProgInfo()
            size = ctypes.c_uint32(ctypes.sizeof(info))
            if lb.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)) == 0:
                out.append(ProgStats(cur, info.name.decode(errors="replace"),
                                     int(info.run_cnt), int(info.run_time_ns),
                                     int(info.recursion_misses)))
        finally:
            os.close(fd)
    return out
