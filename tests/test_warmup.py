"""nbexp's load-time warm-up never runs beside the user's cells: its steps wait until the
kernel has been idle a while (`warmup.IdleSteps`), so cells run back to back ("Run All")
right after `%load_ext nbexp` share the GIL with nothing of nbexp's."""

from __future__ import annotations

import threading
import time

from nbexp import warmup


def _wait_for(condition, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_steps_wait_for_the_kernel_to_be_idle_and_never_run_inside_a_cell(ip) -> None:
    cell_running = threading.Event()
    ran: list[tuple[int, bool]] = []

    def step(number: int):
        return lambda: ran.append((number, cell_running.is_set()))

    ip.events.register("pre_execute", cell_running.set)
    ip.events.register("post_execute", cell_running.clear)
    try:
        idle_steps = warmup.IdleSteps(ip, [step(1), step(2), step(3)])
        # loaded outside a cell here: nothing runs until a cell has ended and the kernel idled
        time.sleep(warmup.QUIET * 2)
        assert ran == []
        for _ in range(8):  # back to back: the gaps between cells are far under QUIET
            assert ip.run_cell("import time; time.sleep(0.05)").success
        assert ran == []
        assert _wait_for(lambda: len(ran) == 3)  # idle now
        assert ran == [(1, False), (2, False), (3, False)]
        idle_steps.thread.join(timeout=10)
        assert not idle_steps.thread.is_alive()
        ip.run_cell("pass")  # the next cell's end takes the hooks away
        assert idle_steps._cell_ended not in ip.events.callbacks["post_execute"]
        assert idle_steps._cell_starts not in ip.events.callbacks["pre_execute"]
    finally:
        ip.events.unregister("pre_execute", cell_running.set)
        ip.events.unregister("post_execute", cell_running.clear)


def test_a_cell_that_starts_during_a_step_holds_back_the_next_one(ip) -> None:
    ran: list[str] = []
    ended_at: list[float] = []

    def first() -> None:
        ran.append("first")
        ip.events.trigger("pre_execute")  # the user runs a cell meanwhile

    def second() -> None:
        ran.append("second")
        ended_at.append(time.monotonic())

    idle_steps = warmup.IdleSteps(ip, [first, second])
    ip.run_cell("pass")
    assert _wait_for(lambda: ran == ["first"])
    time.sleep(warmup.QUIET * 3)
    assert ran == ["first"]  # the cell is still running
    cell_end = time.monotonic()
    ip.events.trigger("post_execute")
    assert _wait_for(lambda: ran == ["first", "second"])
    assert ended_at[0] - cell_end >= warmup.QUIET * 0.9  # and the kernel idled a while first
    idle_steps.thread.join(timeout=10)


def test_a_failing_step_leaves_its_work_to_the_record_and_the_others_run(ip) -> None:
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("no platform today")

    idle_steps = warmup.IdleSteps(ip, [broken, lambda: ran.append("after")])
    ip.run_cell("pass")
    assert _wait_for(lambda: ran == ["after"])
    idle_steps.thread.join(timeout=10)
