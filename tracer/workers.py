"""Worker processes for work cut into independent parts (--stats' passes,
tracer/timeline/columnar/pass1.py and parts.py): the parent reads the file
and hands parts over while a worker has room (one part running, one
waiting), and rebuilds the others itself; results are taken in the order
the parts were read. The waiting part is written at once: the worker reads
it when the part before is done (the parent's write goes on in the kernel
meanwhile, no Python thread to wake: ~3 ms for a part's ~7 MB, against
~4-10 ms when it was written only once the worker's answer came in). The
last parts wait in the parent instead (near_end), written to the worker
once it answers the part before: at the end the parent takes back and
rebuilds what the worker has not started instead of waiting for it
(drain). On 2 cores, the parent and one worker keep both busy; each
process holding its own imports (~60 MiB), a second worker would cost
more memory than time.

A worker is a fresh interpreter (`python -c`, serve() below): never a
fork of the parent, whose Arrow reader runs threads (a fork copies their
locks, not the threads), and it runs no __main__ of the parent's (as
multiprocessing's spawn does). Calls and results go through its stdin and
stdout as pickles with their numpy buffers out of band (Message), written
and read by two threads per worker, so a part handed over never blocks
the parent. Started before the parent loads the statistics' modules
(stats_pool, from the command line: this module imports none of them), a
worker's imports overlap the parent's.

Not concurrent.futures' ProcessPoolExecutor: on Python 3.11 its shutdown
hangs when a worker dies while a large call is being written to it (the
feeder thread blocks on a pipe whose reader end the parent itself holds).
Here only the worker holds its stdin's reader end: a dead worker fails the
write (EPIPE) and the read (EOF), and every call outstanding with it gets
WorkerFailed, a one-line message, never a hang.
"""

from __future__ import annotations

import collections
import contextlib
import os
import pickle
import queue
import stat
import struct
import sys
import threading
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from tracer import codecache

if TYPE_CHECKING:  # imported with the first worker: `--jobs 1` does without (logging, ...)
    from concurrent.futures import Future


class WorkerFailed(Exception):
    """A worker process died or ran out of memory: one line for the user."""


_SIZE = struct.Struct("<Q")
IN_WORKER = False  # this process is a worker (serve())
_PATH_ENV = "KPATH_WORKER_SYS_PATH"
# Ctrl-C reaches the whole process group: the parent's to handle (it stops
# the workers), ignored by them from the start.
_SERVE = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
          f"import os, sys; sys.path[:0] = os.environ.pop({_PATH_ENV!r}).split(os.pathsep); "
          "from tracer.workers import serve; serve()")

# A message: a pickle and the buffers it holds out of band (protocol 5:
# a part's numpy columns go to the pipe from their own memory, and come
# out of it into the arrays the worker uses; pickling them in band copied
# them twice and cost the parent ~8 ms a part).
Message = tuple[bytes, list[pickle.PickleBuffer]]


def _dumps(obj: Any) -> Message:
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return head, buffers


def _write(out: IO[bytes], message: Message) -> None:
    """The message in one writev: a write per buffer (a part has ~22) took
    the GIL back after each, up to a switch interval each while the
    parent's main thread ran (a part took ~8 ms to go over, the worker
    idle meanwhile)."""
    head, buffers = message
    raws = [b.raw() for b in buffers]
    sizes = _SIZE.pack(len(head)) + _SIZE.pack(len(raws)) + b"".join(
        _SIZE.pack(r.nbytes) for r in raws)
    out.flush()
    views = [memoryview(sizes), memoryview(head), *raws]  # raw(): 1-d views of bytes
    views = [v for v in views if v.nbytes]
    fd = out.fileno()
    while views:
        done = os.writev(fd, views[:_IOV_MAX])
        while done:  # a pipe's write ends early only on a signal
            if done >= len(views[0]):
                done -= len(views.pop(0))
            else:
                views[0], done = views[0][done:], 0


_IOV_MAX = 1024  # buffers a writev takes (Linux's UIO_MAXIOV)


def _exact(inp: IO[bytes], n: int) -> bytes:
    data = inp.read(n)
    if len(data) < n:
        raise EOFError
    return data


def _read(inp: IO[bytes]) -> tuple[bytes, list[bytearray]]:
    """The next message: its pickle, its buffers read into memory of their own."""
    head_size, count = struct.unpack("<QQ", _exact(inp, 2 * _SIZE.size))
    sizes = struct.unpack(f"<{count}Q", _exact(inp, count * _SIZE.size))
    head = _exact(inp, head_size)
    buffers = []
    for n in sizes:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            step = inp.readinto(view[got:])  # type: ignore[attr-defined]
            if not step:
                raise EOFError
            got += step
        buffers.append(buf)
    return head, buffers


def serve() -> None:
    """A worker's loop: (fn, args) messages on stdin, (ok, value) messages
    on stdout, until stdin ends. Its own prints go to stderr. A reply is
    written by a thread of its own while the next call is read in (~1-2 ms
    a part). It then ends at once: the interpreter's teardown took 30-40 ms
    the parent waited for."""
    global IN_WORKER
    IN_WORKER = True
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    inp = sys.stdin.buffer
    replies: queue.SimpleQueue[Message | None] = queue.SimpleQueue()
    sender = threading.Thread(target=_send, args=(out, replies), daemon=True)
    sender.start()
    while True:
        try:
            head, buffers = _read(inp)
        except EOFError:
            replies.put(None)
            sender.join()
            sys.stderr.flush()
            codecache.save()  # what atexit would have written
            os._exit(0)
        try:
            fn, args = pickle.loads(head, buffers=buffers)
            del head, buffers
            reply = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            reply = (False, exc)
        fn = args = None
        try:
            message = _dumps(reply)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result or error
            message = _dumps((False, RuntimeError(f"{type(exc).__name__}: {exc}")))
        del reply
        replies.put(message)
        del message


def _send(out: IO[bytes], replies: queue.SimpleQueue[Message | None]) -> None:
    """A worker's replies, in order, until None (or the parent is gone)."""
    with contextlib.suppress(OSError):
        while (message := replies.get()) is not None:
            big = sum(b.raw().nbytes for b in message[1]) >= _TRIM_FROM
            _write(out, message)
            del message
            if big:
                _trim()


# A reply this big (pass 1's tail: ~9 MiB at 10 M events, its nodes in a
# file of their own) leaves its arrays' pages in the C heap once sent,
# which the parts after it do not need: handed back to the system
# (smaller replies' pages are reused).
_TRIM_FROM = 8 << 20


def _trim() -> None:
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


_PIPE_BYTES = 1 << 20  # /proc/sys/fs/pipe-max-size's default


def _widen(pipe: IO[bytes]) -> None:
    """A pipe holding 1 MiB instead of 64 KiB: a part's columns (~4 MiB) go
    through in a few reads and writes, each of which waits for the GIL
    again in the parent's threads (h1m --jobs 2: 1.18 -> 1.13 s)."""
    import fcntl

    with contextlib.suppress(OSError):  # over the user's pipe quota: as it is
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


class _Worker:
    """One worker process, its calls answered in order, each written to it
    at once; with `hold`, only once it has answered the one before: until
    then the call waits here, where the parent may take it back (steal)."""

    def __init__(self) -> None:
        import subprocess

        env = dict(os.environ, **{_PATH_ENV: os.pathsep.join(p for p in sys.path if p)})
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env=env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for pipe in (self.proc.stdin, self.proc.stdout):
            _widen(pipe)
        self._todo: collections.deque[Message | None] = collections.deque()
        self._ready = threading.Condition()
        self.outstanding: collections.deque[Future[Any]] = collections.deque()
        self._sent = self._answered = 0
        self.hold = False  # a call waits here until the one before is answered
        self._dead = False
        self._threads = [threading.Thread(target=self._feed, args=(self.proc.stdin,),
                                          name="kpath-worker-feed", daemon=True),
                         threading.Thread(target=self._answer, args=(self.proc.stdout,),
                                          name="kpath-worker-read", daemon=True)]
        for t in self._threads:
            t.start()

    def call(self, message: Message) -> Future[Any]:
        from concurrent.futures import Future

        fut: Future[Any] = Future()
        with self._ready:
            if self._dead:
                fut.set_exception(BrokenPipeError("worker gone"))
                return fut
            self.outstanding.append(fut)
            self._todo.append(message)
            self._ready.notify()
        return fut

    def _feed(self, stdin: IO[bytes]) -> None:
        try:
            while True:
                with self._ready:
                    while not self._todo or (self.hold and self._sent > self._answered
                                             and not self._dead
                                             and self._todo[0] is not None):
                        self._ready.wait()
                    message = self._todo.popleft()
                    self._sent += message is not None
                if message is None:
                    break
                _write(stdin, message)
                del message
        except OSError:  # the worker died: _answer sees it end
            pass
        finally:
            with contextlib.suppress(OSError):
                stdin.close()

    def _answer(self, stdout: IO[bytes]) -> None:
        try:
            while True:
                head, buffers = _read(stdout)
                ok, value = pickle.loads(head, buffers=buffers)
                del head, buffers
                with self._ready:
                    fut = self.outstanding.popleft()
                    self._answered += 1
                    self._ready.notify()
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
                # not held here until the next answer (the taker lets go of it)
                del fut, value
        except (EOFError, OSError, pickle.UnpicklingError):
            pass
        with self._ready:
            self._dead = True
            self._todo.clear()
            self._todo.append(None)
            self._ready.notify()
            gone, self.outstanding = self.outstanding, collections.deque()
        for fut in gone:
            fut.set_exception(BrokenPipeError("worker gone"))

    def hold_calls(self) -> None:
        """From now on a call waits here until the one before is answered."""
        with self._ready:
            self.hold = True

    def running(self) -> int:
        return sum(1 for fut in self.outstanding if not fut.done())

    def steal(self) -> tuple[Future[Any], Message] | None:
        """The last call not written to the worker yet, taken back (its
        future, its message), or None."""
        with self._ready:
            if not self._todo or self._todo[-1] is None or self._dead:
                return None
            return self.outstanding.pop(), self._todo.pop()  # type: ignore[return-value]

    def stop(self, kill: bool) -> None:
        with self._ready:
            self._todo.append(None)
            self._ready.notify()
        if kill and self.proc.poll() is None:
            self.proc.kill()
        for t in self._threads:
            t.join()
        self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


def _run_named(name: str) -> None:
    """Calls "module:function" (an initializer the parent need not import)."""
    import importlib

    module, function = name.split(":")
    getattr(importlib.import_module(module), function)()


class PartPool:
    """`workers` worker processes, each with at most two parts in flight;
    each first runs `initializer` ("module:function", imported there).
    Use as a context manager, or close()."""

    def __init__(self, workers: int, initializer: str | None = None) -> None:
        # parts not taken yet, in order: a worker's future, or a result made here
        self._pending: collections.deque[tuple[Future[Any] | None, Any,
                                               Callable[[Any], None]]] = collections.deque()
        self._workers: list[_Worker] = []
        self._warm: list[Future[Any]] = []
        self._next = 0
        self._error: BaseException | None = None
        try:
            for _ in range(workers):
                worker = _Worker()
                self._workers.append(worker)
                if initializer is not None:
                    self._warm.append(worker.call(_call_data(_run_named, (initializer,))))
        except OSError as exc:  # no process can start here
            self._error = exc

    def ready(self) -> str | None:
        """Waits for the workers to start: None, or why they did not."""
        try:
            if self._error is None:
                for fut in self._warm:
                    fut.result()
        except BaseException as exc:  # noqa: BLE001 - told to the user, who goes on without
            self._error = exc
        if self._error is None:
            return None
        self.close()
        return f"{type(self._error).__name__}: {self._error}"

    def has_room(self) -> bool:
        """Whether a worker can take a part now without it waiting behind two."""
        return any(w.running() < 2 for w in self._workers)

    def near_end(self) -> None:
        """The parts from now on wait here until their worker answers the
        one before, so that drain can take back what it has not started."""
        for w in self._workers:
            w.hold_calls()

    def call(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """fn(*args) in the least busy worker, its result not taken in turn
        (a call before the parts: pass1.py)."""
        if not self._workers:
            raise WorkerFailed(f"--stats worker processes did not start ({self._error})")
        return min(self._workers, key=_Worker.running).call(_call_data(fn, args))

    def call_each(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) in every worker, before the parts submitted after it
        (what they share, sent once); its result is not waited for: a
        failure there is the parts' to report."""
        message = _call_data(fn, args)
        for worker in self._workers:
            worker.call(message)

    def submit(self, take: Callable[[Any], None], fn: Callable[..., Any], *args: Any) -> None:
        """Runs fn(*args) in the least busy worker; take(result) is called in
        the order of submit and put calls."""
        if not self._workers:
            raise WorkerFailed(f"--stats worker processes did not start ({self._error})")
        worker = min(self._workers, key=_Worker.running)
        self._pending.append((worker.call(_call_data(fn, args)), None, take))
        self._take_done()

    def put(self, take: Callable[[Any], None], result: Any) -> None:
        """A result made in this process, taken in its turn."""
        self._pending.append((None, result, take))
        self._take_done()

    def _take_done(self) -> None:
        while self._pending and (self._pending[0][0] is None or self._pending[0][0].done()):
            self._take_oldest()

    def drain(self) -> None:
        """Waits for every part submitted, first running here the ones a
        worker has not started (it would finish them after its running
        part while this process waited idle)."""
        for worker in self._workers:
            while (stolen := worker.steal()) is not None:
                fut, (head, buffers) = stolen
                fn, args = pickle.loads(head, buffers=buffers)
                del head, buffers
                # As a part rebuilt here: its error is this process's own.
                fut.set_result(fn(*args))
                del fn, args
        while self._pending:
            self._take_oldest()

    def _take_oldest(self) -> None:
        fut, result, take = self._pending.popleft()
        if fut is not None:
            try:
                result = fut.result()
            except (BrokenPipeError, MemoryError) as exc:
                raise self._failed(exc) from None
        take(result)

    def _failed(self, exc: BaseException) -> WorkerFailed:
        self.close()
        if isinstance(exc, MemoryError):
            return WorkerFailed("a --stats worker process ran out of memory "
                                "(--jobs 1 rebuilds the parts in this process)")
        return WorkerFailed("a --stats worker process died (killed, or out of memory?): "
                            "--jobs 1 rebuilds the parts in this process")

    def close(self) -> None:
        """Stops the workers (parts not taken, and calls not answered, are
        dropped: a worker still busy is killed, not waited for)."""
        workers, self._workers = self._workers, []
        kill = bool(self._pending) or any(w.running() for w in workers)
        self._pending.clear()
        for w in workers:
            w.stop(kill)

    def __enter__(self) -> PartPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _call_data(fn: Callable[..., Any], args: tuple[Any, ...]) -> Message:
    return _dumps((fn, args))


# Processes `--jobs auto` uses at most: each worker holds its own imports
# (~60 MiB) and a part's working set; with one, a 10 M-event trace's
# --stats stays within 256 MiB (PSS: bench/README.md).
AUTO_JOBS = 2
# A version 2 file of more bytes may hold several of --stats' parts (its
# PART_EVENTS events take at least 4 bytes each: 7-9 measured).
PARTS_FROM_BYTES = 1 << 18
_STATS_WORKER = "tracer.timeline.columnar.parts:start_worker"


def auto_jobs() -> int:
    """--stats' processes when not told: a worker where this process may
    run on another CPU."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(AUTO_JOBS, cpus))


def parts_likely(path: str) -> bool:
    """A version 2 file (an Arrow stream: a version 1 file is read whole, or
    converted first) big enough for several parts."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size <= PARTS_FROM_BYTES:
            return False  # (a FIFO is not opened: that would wait for a writer)
        # tracefile.arrow's STREAM_MAGIC, not imported: tracer.tracefile
        # loads pyarrow and numpy, which this module is kept free of
        with open(path, "rb") as f:
            return f.read(4) == b"\xff\xff\xff\xff"
    except OSError:
        return False


def stats_pool(path: str, jobs: int | None, big: bool = False) -> PartPool | None:
    """--stats' workers for the trace at `path` (jobs - 1 of them; jobs None:
    auto_jobs()) when it may hold several parts (or `big`: it does), else
    None: to be started before this process loads the statistics' modules."""
    jobs = auto_jobs() if jobs is None else jobs
    if jobs <= 1 or not (big or parts_likely(path)):
        return None
    return PartPool(jobs - 1, _STATS_WORKER)
