"""Event delivery for udt.dgram sockets: the Node-style listener registry and the one worker
thread per socket that runs listeners and ``send`` callbacks in order and, while ``message``
listeners exist, reads datagrams for them."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Self

from udt._net import Channel
from udt.dgram._addresses import RemoteInfo
from udt.dgram._shared import _MAX_DATAGRAM

Listener = Callable[..., Any]

EVENTS = frozenset({"message", "listening", "connect", "close", "error"})
_READ_BURST = 64  # datagrams read per wake before queued events get a turn
_POLLIN = 0x001


class EventsMixin:
    """The listener half of :class:`udt.dgram.Socket` (``on``/``once``/``off`` ... and the
    worker); it works on the socket's lock, channel and queues declared below."""

    _lock: threading.RLock
    _channel: Channel
    _type: str
    _bound: bool
    _closed: bool
    _listeners: dict[str, list[tuple[Listener, bool]]]
    _queue: deque
    _worker: threading.Thread | None
    _worker_polling: bool
    _reader_failed: bool
    _work_ready: threading.Condition

    _rinfo: Callable[[int, tuple], RemoteInfo]

    @staticmethod
    def _check_event(event: str, listener: Any = None, need_listener: bool = True) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown event {event!r}; events are {sorted(EVENTS)}")
        if need_listener and not callable(listener):
            raise TypeError("listener must be callable")

    def on(self, event: str, listener: Listener) -> Self:
        """Call *listener* for every *event* (on the worker thread).  Signatures:
        ``message(data, rinfo)``, ``error(exception)``, ``listening()``, ``connect()``,
        ``close()``."""
        self._check_event(event, listener)
        with self._lock:
            self._listeners[event].append((listener, False))
            if event == "message":
                self._update_reading()
        return self

    add_listener = on

    def once(self, event: str, listener: Listener) -> Self:
        """Like :meth:`on`, for the next *event* only."""
        self._check_event(event, listener)
        with self._lock:
            self._listeners[event].append((listener, True))
            if event == "message":
                self._update_reading()
        return self

    def off(self, event: str, listener: Listener) -> Self:
        """Remove the most recently added registration of *listener* for *event*."""
        self._check_event(event, listener)
        with self._lock:
            entries = self._listeners[event]
            for index in range(len(entries) - 1, -1, -1):
                if entries[index][0] is listener or entries[index][0] == listener:
                    del entries[index]
                    break
            if event == "message":
                self._update_reading()
        return self

    remove_listener = off

    def remove_all_listeners(self, event: str | None = None) -> Self:
        """Remove every listener of *event*, or of all events."""
        with self._lock:
            if event is None:
                for entries in self._listeners.values():
                    entries.clear()
            else:
                self._check_event(event, need_listener=False)
                self._listeners[event].clear()
            self._update_reading()
        return self

    def listeners(self, event: str) -> list[Listener]:
        self._check_event(event, need_listener=False)
        with self._lock:
            return [listener for listener, _ in self._listeners[event]]

    def listener_count(self, event: str) -> int:
        self._check_event(event, need_listener=False)
        with self._lock:
            return len(self._listeners[event])

    def _emit(self, event: str, *args: Any) -> None:
        """Queue *event* for the worker if anyone listens (caller may hold the lock)."""
        with self._lock:
            if self._listeners[event]:
                self._queue_call(self._dispatch, event, *args)

    def _queue_call(self, function: Callable[..., Any], *args: Any) -> None:
        with self._lock:
            self._queue.append((function, args))
            self._wake_worker()

    def _update_reading(self) -> None:
        """Start or wake the worker so it starts or stops feeding ``message`` listeners."""
        with self._lock:
            if self._reading() or self._worker is not None:
                self._wake_worker()

    def _reading(self) -> bool:
        return self._bound and not self._closed and not self._reader_failed and bool(self._listeners["message"])

    def _wake_worker(self) -> None:
        """Caller holds the lock."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._run_worker, daemon=False, name=f"udt-dgram-{self._type}")
            self._worker.start()
            return
        self._work_ready.notify()
        if self._worker_polling:
            try:
                self._channel.interrupt()
            except OSError:  # closed meanwhile: the poll ends with EBADF anyway
                pass

    def _dispatch(self, event: str, *args: Any) -> None:
        """Call the listeners of *event* (worker thread)."""
        with self._lock:
            entries = list(self._listeners[event])
            for entry in entries:
                if entry[1]:
                    try:
                        self._listeners[event].remove(entry)
                    except ValueError:
                        pass
        for listener, _ in entries:
            try:
                listener(*args)
            except Exception as error:  # a failing listener must not stop the delivery
                self._listener_failed(event, error)

    def _listener_failed(self, event: str, error: BaseException) -> None:
        with self._lock:
            handlers = [listener for listener, _ in self._listeners["error"]]
        if event != "error" and handlers:
            self._dispatch("error", error)
        else:
            _report_unhandled(error)

    def _run_worker(self) -> None:
        """Deliver queued events and callbacks; feed ``message`` listeners while any exist."""
        buffer = memoryview(bytearray(_MAX_DATAGRAM))
        while True:
            with self._lock:
                while True:
                    if self._queue:
                        function, args = self._queue.popleft()
                        break
                    if self._reading():
                        function = None
                        self._worker_polling = True
                        break
                    # Nothing to deliver and nobody to feed: stop; a later event restarts us.
                    self._worker = None
                    self._work_ready.notify_all()
                    return
            if function is not None:
                try:
                    function(*args)
                except Exception as error:  # send callbacks raising
                    self._listener_failed("send callback", error)
                continue
            try:
                ready = self._channel.poll(_POLLIN, None)
            except OSError as error:
                ready = 0
                if not self._closed:
                    # Not a datagram error but the wait itself: retrying would spin.
                    with self._lock:
                        self._reader_failed = True
                    self._emit("error", error)
            finally:
                with self._lock:
                    self._worker_polling = False
            if ready:
                self._read_burst(buffer)

    def _read_burst(self, buffer: memoryview) -> None:
        """Hand the datagrams waiting now (up to a burst) to the ``message`` listeners."""
        for _ in range(_READ_BURST):
            with self._lock:
                if not self._reading():
                    return
            try:
                size, source = self._channel.recvfrom_into(buffer, 0)
            except BlockingIOError:
                return
            except OSError as error:
                if not self._closed:
                    self._emit("error", error)
                return
            self._dispatch("message", buffer[:size].tobytes(), self._rinfo(size, source))


def _report_unhandled(error: BaseException) -> None:
    """An error no listener took: report it as an uncaught thread exception would be."""
    threading.excepthook(
        threading.ExceptHookArgs((type(error), error, error.__traceback__, threading.current_thread()))
    )
