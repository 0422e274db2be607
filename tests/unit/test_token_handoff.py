"""The decode thread's handoff to the event loop: the first token at once, then one wake-up per interval."""
from __future__ import annotations

import asyncio
import threading

import pytest

from edge._handoff import TokenHandoff
from tests.conftest import WAIT_S, wait_until_async


def from_thread(action) -> None:
    worker = threading.Thread(target=action)
    worker.start()
    worker.join()


async def until_waiting(handoff: TokenHandoff) -> None:
    """Until a consumer is parked in take(), waiting for a wake-up (not finding items already there)."""
    await wait_until_async(lambda: handoff._ready._waiters, "the consumer waiting in take()")


async def test_the_first_item_wakes_the_consumer_at_once() -> None:
    handoff: TokenHandoff[int] = TokenHandoff(asyncio.get_running_loop(), flush_interval_s=60.0)
    waiting = asyncio.create_task(handoff.take())
    await until_waiting(handoff)
    from_thread(lambda: handoff.put(1))
    assert await asyncio.wait_for(waiting, WAIT_S) == [1]


async def test_items_inside_the_interval_wait_for_the_final_item_and_leave_together() -> None:
    handoff: TokenHandoff[object] = TokenHandoff(asyncio.get_running_loop(), flush_interval_s=60.0)
    from_thread(lambda: handoff.put(1))
    assert await handoff.take() == [1]
    waiting = asyncio.create_task(handoff.take())
    await until_waiting(handoff)
    from_thread(lambda: (handoff.put(2), handoff.put(3)))
    assert not handoff._wake_scheduled and not waiting.done()  # within the interval nothing woke the loop
    handoff.put_final("end")
    assert await asyncio.wait_for(waiting, WAIT_S) == [2, 3, "end"]


async def test_a_consumer_that_comes_back_takes_what_is_buffered_without_waiting() -> None:
    handoff: TokenHandoff[int] = TokenHandoff(asyncio.get_running_loop(), flush_interval_s=60.0)
    from_thread(lambda: (handoff.put(1), handoff.put(2)))
    assert await asyncio.wait_for(handoff.take(), 5) == [1, 2]


async def test_interval_zero_wakes_the_consumer_for_every_item() -> None:
    handoff: TokenHandoff[int] = TokenHandoff(asyncio.get_running_loop(), flush_interval_s=0.0)
    for item in range(3):
        waiting = asyncio.create_task(handoff.take())
        await until_waiting(handoff)
        from_thread(lambda: handoff.put(item))
        assert await asyncio.wait_for(waiting, WAIT_S) == [item]


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="flush_interval_s"):
        TokenHandoff(asyncio.new_event_loop(), flush_interval_s=-1)
