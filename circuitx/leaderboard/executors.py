"""Where cells run: this process, local worker processes, or Ray.

Every executor keeps at most ``jobs`` cells in flight, so the cells reported as started are
the ones running. Results come back to this process, which alone writes files.
"""

from __future__ import annotations

import inspect
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

from circuitx.errors import CircuitxError, ctrl_c_held
from circuitx.leaderboard.cells import Cell, run_cell

EXECUTORS = ("local", "ray")


def check_executor(executor: str) -> None:
    """Fail in one line unless ``executor`` is one of :data:`EXECUTORS`."""
    if executor not in EXECUTORS:
        raise CircuitxError(f"unknown executor {executor!r}; choose from {', '.join(EXECUTORS)}")


Record = dict[str, Any]


def _forwarded_environment() -> dict[str, str]:
    """The environment variables a remote worker needs to find the same models and caches."""
    names = ("CIRCUITX_CACHE_DIR", "CIRCUITX_SHARED", "HF_HUB_OFFLINE", "HF_HOME", "XDG_CACHE_HOME")
    return {name: os.environ[name] for name in names if name in os.environ}


def execute(
    cells: Iterable[Cell],
    jobs: int = 1,
    executor: str = "local",
    threads: int = 1,
    on_start: Callable[[Cell], None] = lambda cell: None,
    on_done: Callable[[Cell, Record], None] = lambda cell, record: None,
) -> None:
    """Run ``cells``, ``jobs`` at a time on ``threads`` torch threads each, calling
    ``on_start`` as each starts and ``on_done`` with its record."""
    cells = list(cells)
    check_executor(executor)
    if executor == "ray":
        _run_on_ray(cells, jobs, threads, on_start, on_done)
    elif jobs == 1:
        for cell in cells:
            on_start(cell)
            on_done(cell, run_cell(cell, threads))
    else:
        _run_in_processes(cells, jobs, threads, on_start, on_done)


def _run_in_processes(
    cells: list[Cell],
    jobs: int,
    threads: int,
    on_start: Callable[[Cell], None],
    on_done: Callable[[Cell, Record], None],
    work: Callable[[Cell, int], Record] = run_cell,
) -> None:
    """Run ``cells`` in ``jobs`` worker processes (``work(cell, threads)`` in each). When a
    worker dies (killed, out of memory) the pool breaks and loses the cells in flight: a
    new pool runs them again with the rest, one at a time (a cell that kills its worker
    then loses no other), and a cell lost twice is an error (workers that die as they
    start fail every cell so, each in a pool of its own)."""
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    queue, started, lost_before = list(cells), set(), set()

    def start(cell: Cell) -> None:
        started.add(cell.key)
        on_start(cell)

    while queue:
        # with cells lost before to run, one at a time: a cell lost then is lost by itself
        width = 1 if any(cell.key in lost_before for cell in queue) else jobs
        with futures.ProcessPoolExecutor(
            width, mp_context=context, initializer=_end_with_parent, initargs=(os.getpid(),)
        ) as pool:
            lost, unstarted = _schedule(
                queue,
                width,
                submit=lambda cell: _without_interrupts(pool.submit, work, cell, threads),
                wait=lambda running: futures.wait(running, return_when=futures.FIRST_COMPLETED)[0],
                result=_future_result,
                on_start=start,
                on_done=on_done,
                started=started,
            )
        left = lost + unstarted
        failed = [cell for cell in lost if cell.key in lost_before]
        for cell in failed:
            if cell.key not in started:
                start(cell)
            on_done(cell, {"key": cell.key, "status": "error", "error": _died()})
        lost_before |= {cell.key for cell in lost}
        queue = [cell for cell in left if cell not in failed]


def _without_interrupts(start: Callable[..., Any], *args: Any) -> Any:
    """``start(*args)`` with Ctrl-C held back (it comes when done): a worker process
    started then inherits the hold, through its import of circuitx and torch, which a
    terminal's Ctrl-C (sent to every process of the group) broke with a traceback from
    each worker. :func:`_end_with_parent` lets it through."""
    with ctrl_c_held():
        return start(*args)


def _end_with_parent(parent: int) -> None:
    """A worker's initializer: take Ctrl-C again (held back while the worker started, see
    :func:`_without_interrupts`; one that came then ends it, quietly, as its leaderboard
    stops), and end the worker when the process that started it is gone (a leaderboard
    killed with SIGKILL left its workers running, holding their memory)."""
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    except KeyboardInterrupt:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


# each worker process imports the script that started it, as Python's spawn does
UNGUARDED = (
    "a script that runs a leaderboard with jobs > 1 needs the call under "
    '`if __name__ == "__main__":` (each worker process imports the script, and without '
    "it runs the script's own leaderboard again)"
)

LOST = object()  # a handle's result when its worker died: the cell runs again


def _future_result(future: futures.Future) -> Record | object:
    try:
        return future.result()
    except futures.process.BrokenProcessPool:
        return LOST


def _died() -> str:
    """A cell's error when the worker processes died, with the likely cause for a script."""
    main = sys.modules["__main__"]
    # a script run by its path (not python -m, not a notebook, not the circuitx command)
    script = (
        getattr(main, "__spec__", None) is None
        and hasattr(main, "__file__")
        and not getattr(getattr(main, "main", None), "__module__", "").startswith("circuitx.")
    )
    if script:
        return f"the worker processes ended abruptly ({UNGUARDED})"
    return "a worker process ended abruptly (killed, or out of memory?)"


def check_not_a_worker(jobs: int) -> None:
    """In a worker process that is importing the script that started it (run as
    ``__mp_main__``), end the worker, quietly, rather than start the script's leaderboard
    again: the process that started it says why (see :data:`UNGUARDED`), once."""
    frame = inspect.currentframe()
    while jobs > 1 and frame is not None:
        if frame.f_globals.get("__name__") == "__mp_main__":
            raise SystemExit(1)
        frame = frame.f_back


def _schedule(cells, jobs, submit, wait, result, on_start, on_done, started=()) -> tuple:
    """Keep ``jobs`` cells in flight until all are done, calling ``on_start`` for each not
    in ``started`` (keys) as it is submitted; a handle whose result is a string (the
    executor lost the cell) becomes that cell's error record. When the executor breaks
    (:data:`LOST` results, or a submit refused), the cells in flight finish, and the cells
    lost and those not yet submitted are returned (two lists, in order) to run elsewhere."""
    queue, running, lost = list(cells), {}, []
    while queue or running:
        while queue and len(running) < jobs and not lost:
            cell = queue.pop(0)
            if cell.key not in started:
                on_start(cell)
            try:
                running[submit(cell)] = cell
            except futures.process.BrokenProcessPool:  # the workers died
                lost.append(cell)
        if not running:
            break
        for handle in wait(list(running)):
            cell = running.pop(handle)
            record = result(handle)
            if record is LOST:
                lost.append(cell)
                continue
            if isinstance(record, str):
                record = {"key": cell.key, "status": "error", "error": record}
            on_done(cell, record)
    return lost, queue


def _run_on_ray(cells: list[Cell], jobs: int, threads: int, on_start, on_done) -> None:
    try:
        import ray
    except ImportError:
        raise CircuitxError("--executor ray needs Ray: pip install 'circuitx[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        settings: dict[str, Any] = {
            "runtime_env": {"env_vars": _forwarded_environment()},
            "log_to_driver": False,
            "logging_level": logging.WARNING,
        }
        if not os.environ.get("RAY_ADDRESS"):  # no cluster named: start a local instance
            settings.update(num_cpus=jobs * threads, include_dashboard=False)
        ray.init(**settings)
    remote_cell = ray.remote(num_cpus=threads)(run_cell)

    def result(ref) -> Record | str:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as error:
            return f"Ray lost the cell: {type(error).__name__}"

    try:
        _schedule(
            cells,
            jobs,
            submit=lambda cell: remote_cell.remote(cell, threads),
            wait=lambda running: ray.wait(running, num_returns=1)[0],
            result=result,
            on_start=on_start,
            on_done=on_done,
        )
    finally:
        if started_here:
            ray.shutdown()
