"""The per-user cap on concurrent generations, counted in choices; a slot is given back once however often its
generation's cleanups release it."""

from __future__ import annotations

import pytest

from api.services.errors import InvalidInput, RateLimited
from api.services.usage.generation_slots import GenerationSlots


def test_choices_fill_a_users_slots_and_a_release_counts_once() -> None:
    slots = GenerationSlots(4)
    three = slots.take(1, 3)
    with pytest.raises(RateLimited) as refused:
        slots.take(1, 2)
    assert refused.value.code == "concurrency_limit_exceeded" and refused.value.retry_after_s >= 1
    other = slots.take(2, 4)  # another user is not affected
    three.release()
    three.release()  # a stream's cleanup and the response's background task may both end it
    assert slots.held(1) == 0 and slots.held(2) == 4
    slots.take(1, 4)
    other.release()
    assert slots.held(2) == 0


def test_more_choices_than_the_cap_is_a_bad_request_not_a_wait() -> None:
    with pytest.raises(InvalidInput) as refused:
        GenerationSlots(4).take(1, 5)
    assert refused.value.param == "n"
