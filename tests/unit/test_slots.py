"""The session's cap on clones that exist at once (pytest_lxdsnap.session.clones.Slots, --lxd-max-clones): pure
threading, no daemon."""

from __future__ import annotations

import threading
import time

from pytest_lxdsnap.session.clones import Slots


def test_preparing_ahead_never_takes_the_reserved_slots():
    slots = Slots(3, reserve=1)
    assert slots.try_take_ahead() and slots.try_take_ahead()
    assert not slots.try_take_ahead()  # the last one is kept for a test's own clone
    assert slots.in_use == 2
    assert slots.take(timeout=0)  # a test may take it
    assert slots.in_use == 3


def test_a_test_waits_for_a_slot_and_gives_up_after_its_timeout():
    slots = Slots(1)
    assert slots.take(timeout=0)
    started = time.monotonic()
    assert not slots.take(timeout=0.2)
    assert 0.2 <= time.monotonic() - started < 2


def test_a_retired_clone_wakes_a_waiting_test():
    slots = Slots(1)
    assert slots.take(timeout=0)
    took: list[bool] = []
    waiter = threading.Thread(target=lambda: took.append(slots.take(timeout=10)))
    waiter.start()
    time.sleep(0.05)
    assert took == []  # still waiting
    slots.give()
    waiter.join(timeout=5)
    assert took == [True] and slots.in_use == 1


def test_giving_back_more_than_was_taken_never_raises_the_cap():
    slots = Slots(2)
    slots.give()
    slots.give()
    assert slots.in_use == 0
    assert slots.take(timeout=0) and slots.take(timeout=0) and not slots.take(timeout=0)


def test_many_threads_never_hold_more_than_the_cap():
    slots, cap = Slots(3), 3
    held, peak, lock = [0], [0], threading.Lock()

    def work() -> None:
        for _ in range(20):
            assert slots.take(timeout=10)
            with lock:
                held[0] += 1
                peak[0] = max(peak[0], held[0])
            time.sleep(0.001)
            with lock:
                held[0] -= 1
            slots.give()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert 1 <= peak[0] <= cap and slots.in_use == 0
