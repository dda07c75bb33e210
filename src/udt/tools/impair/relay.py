"""The public :class:`Relay`: starts the engine in a worker thread or a child process and
talks to it."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from typing import Any

from udt.tools.impair._child import _read_message, _remote_error, _write_message
from udt.tools.impair._common import DIRECTIONS, Address, Direction, RelayError
from udt.tools.impair._engine import _Engine
from udt.tools.impair.settings import Impairment
from udt.tools.impair.stats import RelayStats

#: How long the parent waits for the relay child to start, and to answer a command (it answers
#: from its loop between batches, so only a stuck predicate or a starved machine takes long).
CHILD_START_TIMEOUT = 30.0
CHILD_REPLY_TIMEOUT = 10.0


class Relay:
    """A running impairment relay between A (who sends to :attr:`address`) and ``target`` (B).

    It starts when constructed and stops on :meth:`close` (or at the end of a ``with`` block);
    closing joins its thread or child process and closes every socket. ``process=True`` runs it
    in a child Python process (needs picklable ``drop``/``applies_to`` predicates).
    """

    def __init__(
        self,
        target: Address,
        listen: Address | None = None,
        *,
        a_to_b: Impairment | None = None,
        b_to_a: Impairment | None = None,
        seed: int = 0,
        process: bool = False,
        max_clients: int = 1024,
    ):
        a_to_b = Impairment() if a_to_b is None else a_to_b
        b_to_a = Impairment() if b_to_a is None else b_to_a
        for name, value in (("a_to_b", a_to_b), ("b_to_a", b_to_a)):
            if not isinstance(value, Impairment):
                raise ValueError(f"{name} must be an Impairment, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        if isinstance(max_clients, bool) or not isinstance(max_clients, int) or max_clients < 1:
            raise ValueError(f"max_clients must be an int >= 1, got {max_clients!r}")
        config = dict(target=target, listen=listen, a_to_b=a_to_b, b_to_a=b_to_a, seed=seed, max_clients=max_clients)
        self._closed = False
        self._final: RelayStats | None = None
        self._engine: _Engine | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe_lock = threading.Lock()
        self._command_w = self._reply_r = -1
        if process:
            self._start_child(config)
        else:
            self._engine = _Engine(**config)  # type: ignore[arg-type]
            self.address: Address = self._engine.address
            self._thread = threading.Thread(
                target=self._thread_main, name=f"impair-relay-{self.address[1]}", daemon=True
            )
            self._thread.start()

    # -- thread mode
    def _thread_main(self) -> None:
        assert self._engine is not None
        try:
            self._engine.run()
        except BaseException as exc:  # surfaced by stats()/close()
            self._failure = exc

    # -- process mode
    def _start_child(self, config: dict[str, Any]) -> None:
        try:
            payload = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise ValueError(f"process=True needs picklable impairments (drop/applies_to predicates): {exc}") from exc
        cmd_r, cmd_w = os.pipe()
        rep_r, rep_w = os.pipe()
        try:
            self._child = subprocess.Popen(
                [sys.executable, "-m", "udt.tools.impair", "--serve-fds", f"{cmd_r},{rep_w}"],
                pass_fds=(cmd_r, rep_w),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            for fd in (cmd_r, cmd_w, rep_r, rep_w):
                os.close(fd)
            raise
        os.close(cmd_r)
        os.close(rep_w)
        self._command_w, self._reply_r = cmd_w, rep_r
        try:
            _write_message(cmd_w, ("init", list(sys.path), payload))
            reply = _read_message(rep_r, CHILD_START_TIMEOUT)
        except (EOFError, OSError) as exc:
            self._reap_child()
            raise RelayError(f"relay process died while starting: {exc}") from None
        if reply[0] != "ready":
            self._reap_child()
            raise _remote_error(reply[1])
        self.address = reply[1]

    def _call(self, *message: Any) -> Any:
        with self._pipe_lock:
            try:
                _write_message(self._command_w, message)
                status, value = _read_message(self._reply_r, CHILD_REPLY_TIMEOUT)
            except (EOFError, OSError) as exc:  # TimeoutError is an OSError
                raise RelayError(f"relay process is gone or stuck: {exc}") from None
        if status != "ok":
            raise _remote_error(value)
        return value

    def _reap_child(self) -> None:
        for fd in (self._command_w, self._reply_r):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._command_w = self._reply_r = -1
        child = self._child
        if child is not None:
            try:
                child.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    # -- public API
    def _check_open(self) -> None:
        if self._closed:
            raise RelayError("relay is closed")
        if self._failure is not None:
            raise RelayError(f"relay thread failed: {self._failure!r}") from self._failure

    def stats(self) -> RelayStats:
        """Counters of both directions (after :meth:`close`: the final counters)."""
        if self._closed and self._final is not None:
            return self._final
        self._check_open()
        if self._child is not None:
            return self._call("stats")
        assert self._engine is not None
        return self._engine.snapshot()

    def set_impairment(self, direction: Direction, impairment: Impairment) -> None:
        """Replace one direction's impairment from now on. Datagrams already scheduled keep their
        release times and later ones never overtake them (the direction stays FIFO); random
        streams and counters continue."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if not isinstance(impairment, Impairment):
            raise ValueError(f"impairment must be an Impairment, got {impairment!r}")
        self._check_open()
        if self._child is not None:
            try:
                pickle.dumps(impairment)
            except Exception as exc:
                raise ValueError(f"process=True needs a picklable impairment: {exc}") from exc
            self._call("set", direction, impairment)
        else:
            assert self._engine is not None
            self._engine.set_impairment(direction, impairment)

    def clients(self) -> dict[Address, Address]:
        """A-side source address -> local address of the relay's socket that talks to B for it."""
        self._check_open()
        if self._child is not None:
            return self._call("clients")
        assert self._engine is not None
        return self._engine.clients()

    def close(self) -> None:
        """Stop relaying, drop what is still in flight, join the worker, close every socket.
        Idempotent. Raises :class:`RelayError` if the worker had failed."""
        if self._closed:
            return
        self._closed = True
        if self._child is not None:
            try:
                with self._pipe_lock:
                    _write_message(self._command_w, ("close",))
                    status, value = _read_message(self._reply_r, CHILD_REPLY_TIMEOUT)
                if status == "ok":
                    self._final = value
            except (EOFError, OSError):
                self._failure = self._failure or RelayError("relay process died")
            finally:
                self._reap_child()
                code = self._child.returncode
                if code not in (0, None) and self._failure is None:
                    self._failure = RelayError(f"relay process exited with status {code}")
        else:
            assert self._engine is not None and self._thread is not None
            self._engine.stop()
            self._thread.join()
            try:
                self._final = self._engine.snapshot()
            finally:
                self._engine.close()
        if self._failure is not None:
            raise RelayError(f"relay failed: {self._failure!r}") from self._failure

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("process" if self._child is not None else "thread")
        return f"<Relay {self.address!r} {state}>"
