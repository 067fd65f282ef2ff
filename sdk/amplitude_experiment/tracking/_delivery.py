"""The per-process event pipeline: a bounded hand-off queue in front of ``amplitude.Amplitude``.

Evaluation threads only append a small record here; one daemon thread per pipeline and process
builds the events and gives them to Amplitude's analytics SDK, which batches, retries and sends.
Nothing starts before the first tracked result in a process, and a fork child starts its own
pipeline on its first tracked result: threads do not survive ``fork()``, and the parent's
buffered events are the parent's to send.
"""

import atexit
import logging
import threading
import time
from collections import deque
from concurrent import futures as _futures
from typing import Any, Callable, Deque, List, Optional, Protocol

import amplitude

from .._fork import FORKS

#: Results waiting to be turned into events, per pipeline and process; more are dropped.
MAX_PENDING = 10000

# A worker idle this long (seconds) ends; the next result starts a new one. A client that is
# dropped without stop() then leaves no thread behind.
_IDLE_WAIT = 30.0
# At interpreter exit, how long to wait for the worker's batch in progress (seconds).
_EXIT_WAIT = 2.0


class EventSink(Protocol):
    """Where built events go: ``amplitude.Amplitude`` fits as it is."""

    def track(self, event: amplitude.BaseEvent) -> None:
        """Queue one event for delivery; must not block on the network."""

    def flush(self) -> Optional[List[Optional["_futures.Future"]]]:
        """Start sending everything queued; the returned futures finish when it was sent."""


SinkFactory = Callable[[amplitude.Config], EventSink]
Builder = Callable[[Any, Callable[[Any, int, Optional[str]], None]], List[amplitude.BaseEvent]]


class ProcessAnalytics(amplitude.Amplitude):
    """``amplitude.Amplitude`` that leaves a fork child's copy of it alone at exit.

    The analytics SDK flushes every client when the interpreter exits. A child inherits the
    parent's client with the parent's unsent events, and flushing those from the child would send
    them twice; so the exit flush only runs in the process that built the client.
    """

    def __init__(self, api_key: str, configuration: Optional[amplitude.Config] = None):
        self._generation = FORKS.generation
        super().__init__(api_key, configuration)

    def shutdown(self) -> None:
        """Flush and stop, in the process that built this client only."""
        if self._generation == FORKS.generation:
            super().shutdown()


def analytics_client(config: amplitude.Config) -> EventSink:
    """The default sink: Amplitude's analytics SDK configured by the tracking config itself."""
    return ProcessAnalytics(config.api_key, config)


class _ProcessState:
    __slots__ = ("generation", "sink", "cond", "items", "pending", "dropped", "thread")

    def __init__(self, generation: int, sink: EventSink):
        self.generation = generation
        self.sink = sink
        self.cond = threading.Condition(threading.Lock())
        self.items: Deque[Any] = deque()
        self.pending = 0  # queued plus being built by the worker
        self.dropped = 0  # since the queue last overflowed
        self.thread: Optional[threading.Thread] = None


class EventPipeline:
    """Turns submitted records into events with ``build`` and tracks them on a per-process sink.

    Thread-safe and fork-safe. :meth:`submit` never blocks and never raises: when
    ``max_pending`` records wait already, the record is dropped (it returns False) and a warning
    logged once per overflow. Delivery failures reported by the analytics SDK are logged once per failure streak.

    :param kind: ``"assignment"`` or ``"exposure"``, for logs and the thread name.
    :param config: the ``amplitude.Config`` (our ``AssignmentConfig`` or ``ExposureConfig``).
    :param build: ``build(record, callback)`` returns the events of one record.
    :param sink_factory: makes the sink of each process; Amplitude's SDK by default.
    :param idle_seconds: the worker thread ends after this long without work.
    """

    def __init__(
        self,
        kind: str,
        config: amplitude.Config,
        build: Builder,
        logger: logging.Logger,
        sink_factory: Optional[SinkFactory] = None,
        max_pending: int = MAX_PENDING,
        idle_seconds: float = _IDLE_WAIT,
    ):
        self.kind = kind
        self.config = config
        self._build = build
        self._logger = logger
        self._sink_factory = sink_factory or analytics_client
        self._max_pending = max_pending
        self._idle_seconds = idle_seconds
        self._state: Optional[_ProcessState] = None
        self._lock = threading.Lock()
        self._lock_generation = FORKS.generation
        self._disabled_generation: Optional[int] = None
        self._failing = False
        self._build_failed = False
        self._on_result = self._make_result_callback()

    def submit(self, record: Any) -> bool:
        """Queue one record for this process's worker; False when it was dropped (the queue is
        full, or the analytics client could not start in this process)."""
        state = self._state
        if state is None or state.generation != FORKS.generation:
            state = self._start()
            if state is None:
                return False
        with state.cond:
            if len(state.items) >= self._max_pending:
                state.dropped += 1
                if state.dropped == 1:
                    self._logger.warning(
                        "[Experiment] %s tracking queue is full (%d waiting); dropping events until it drains",
                        self.kind,
                        len(state.items),
                    )
                return False
            state.items.append(record)
            state.pending += 1
            if state.thread is None:
                self._start_worker(state)
            else:
                state.cond.notify()
            return True

    def flush(self, deadline: Optional[float]) -> None:
        """Hand every queued record to the sink, flush it and wait for the sends until ``deadline``.

        :param deadline: a ``time.monotonic()`` value, or None to wait as long as it takes.
        """
        state = self._state
        if state is None or state.generation != FORKS.generation:
            return  # nothing was tracked in this process
        with state.cond:
            while state.pending:
                remaining = _remaining(deadline)
                if remaining is not None and remaining <= 0:
                    break
                if state.thread is None and not self._start_worker(state):
                    break
                state.cond.wait(_IDLE_WAIT if remaining is None else remaining)
            unbuilt = state.pending
        if unbuilt:
            self._logger.warning("[Experiment] %s tracking: %d results were not yet turned into events", self.kind, unbuilt)
        try:
            pending = [future for future in (state.sink.flush() or []) if future is not None]
        except Exception:
            self._logger.warning("[Experiment] %s tracking: flush failed", self.kind, exc_info=True)
            return
        if not pending:
            return
        done, not_done = _futures.wait(pending, timeout=_remaining(deadline))
        if not_done:
            self._logger.warning(
                "[Experiment] %s tracking: %d event batches were still being sent when the wait ended",
                self.kind,
                len(not_done),
            )
        for future in done:
            if future.exception() is not None:
                self._logger.warning("[Experiment] %s tracking: sending events failed: %r", self.kind, future.exception())

    def _start(self) -> Optional[_ProcessState]:
        generation = FORKS.generation
        if self._disabled_generation == generation:
            return None
        if self._lock_generation != generation:
            # A lock copied over fork() may be held by a parent thread that does not exist here.
            self._lock = threading.Lock()
            self._lock_generation = generation
        with self._lock:
            state = self._state
            if state is not None and state.generation == generation:
                return state
            try:
                sink = self._sink_factory(self.config)
            except Exception:
                self._disabled_generation = generation
                self._logger.error("[Experiment] %s tracking disabled: the analytics client failed to start", self.kind, exc_info=True)
                return None
            state = _ProcessState(generation, sink)
            # Registered after the analytics client registered its own exit flush, so this runs first.
            _register_exit(lambda: self._drain_at_exit(state))
            self._state = state
            return state

    def _start_worker(self, state: _ProcessState) -> bool:
        # Called with state.cond held, so a worker deciding to end and a submit cannot cross.
        thread = threading.Thread(
            target=self._run, args=(state,), name="amplitude_experiment.tracking." + self.kind, daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no threads left, or the interpreter is shutting down
            self._logger.warning("[Experiment] %s tracking: could not start its thread; will retry", self.kind, exc_info=True)
            return False
        state.thread = thread
        return True

    def _run(self, state: _ProcessState) -> None:
        while True:
            with state.cond:
                if not state.items:
                    state.cond.wait(self._idle_seconds)
                    if not state.items:
                        state.thread = None
                        return
                batch = list(state.items)
                state.items.clear()
                dropped, state.dropped = state.dropped, 0
            if dropped:
                self._logger.warning("[Experiment] %s tracking dropped %d results while its queue was full", self.kind, dropped)
            if batch:
                self._deliver(state, batch)

    def _deliver(self, state: _ProcessState, batch: List[Any]) -> None:
        try:
            for record in batch:
                try:
                    events = self._build(record, self._on_result)
                    for event in events:
                        state.sink.track(event)
                except Exception:
                    if not self._build_failed:
                        self._build_failed = True
                        self._logger.exception("[Experiment] %s tracking: could not build or queue an event", self.kind)
        finally:
            with state.cond:
                state.pending -= len(batch)
                state.cond.notify_all()

    def _drain_at_exit(self, state: _ProcessState) -> None:
        if state.generation != FORKS.generation or self._state is not state:
            return
        # The worker (a daemon thread, still running here) hands over what is queued. Doing it on
        # this thread would let the analytics SDK start its batching thread from the main thread,
        # as a non-daemon thread that holds the exit up for a whole flush interval.
        self._wait_built(state, time.monotonic() + _EXIT_WAIT)

    def _wait_built(self, state: _ProcessState, deadline: float) -> None:
        with state.cond:
            while state.pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                state.cond.wait(remaining)

    def _make_result_callback(self) -> Callable[[Any, int, Optional[str]], None]:
        # A plain closure, not a bound method: the analytics SDK deep-copies each event, and a
        # bound method would drag this pipeline (and its locks) into the copy.
        def on_result(event: Any, code: int, message: Optional[str]) -> None:
            if 200 <= code < 300:
                if self._failing:
                    self._failing = False
                    self._logger.info("[Experiment] %s events are being delivered again", self.kind)
                return
            if not self._failing:
                self._failing = True
                self._logger.warning(
                    "[Experiment] %s events could not be delivered to %s (status %s: %s); they are dropped after the analytics SDK's retries",
                    self.kind,
                    self.config.server_url,
                    code,
                    message,
                )

        return on_result


def _remaining(deadline: Optional[float]) -> Optional[float]:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _register_exit(callback: Callable[[], None]) -> None:
    # threading's exit hooks run before the thread pools shut down, as the analytics SDK's own do;
    # atexit would run too late to send anything.
    register = getattr(threading, "_register_atexit", None)
    try:
        if register is not None:
            register(callback)
        else:  # pragma: no cover - Python < 3.9
            atexit.register(callback)
    except RuntimeError:
        pass  # the interpreter is already shutting down
