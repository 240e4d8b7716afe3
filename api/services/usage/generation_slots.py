"""A per-user cap on concurrent generations (``LLMWS_MAX_CONCURRENT_PER_USER``), so that one user cannot fill the
engine's queue and leave everyone else with 503s. Counted in choices (a request with ``n=16`` takes 16), on every
protocol, in this replica's memory: the engine queue it protects is per replica too, and a counter in memory
costs the gateway's fast path nothing."""

from __future__ import annotations

from dataclasses import dataclass

from api.services.errors import InvalidInput, RateLimited

# A slot frees as soon as any of the user's generations ends: there is no better guess at when that will be.
RETRY_AFTER_S = 1


class GenerationSlots:
    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._held: dict[int, int] = {}

    def held(self, user_id: int) -> int:
        return self._held.get(user_id, 0)

    def take(self, user_id: int, choices: int) -> Slot:
        """Slots for ``choices`` generations, or ``RateLimited`` (429) while the user runs too many already."""
        if choices > self.per_user:  # waiting would never help
            raise InvalidInput(f"n={choices} is more than the {self.per_user} generations a user may run at once",
                               param="n")
        held = self.held(user_id)
        if held + choices > self.per_user:
            raise RateLimited(f"you are running {held} generations at once; the limit is {self.per_user}",
                              retry_after_s=RETRY_AFTER_S, code="concurrency_limit_exceeded",
                              error_type="rate_limit_exceeded")
        self._held[user_id] = held + choices
        return Slot(self, user_id, choices)

    def _give_back(self, user_id: int, choices: int) -> None:
        left = self._held[user_id] - choices
        if left:
            self._held[user_id] = left
        else:
            del self._held[user_id]  # users come and go: no entry stays for one that runs nothing


@dataclass
class Slot:
    """Taken slots; ``release`` gives them back once, however often it is called (a generation has several ways
    to end, and more than one cleanup may see it end)."""

    slots: GenerationSlots
    user_id: int
    choices: int
    released: bool = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.slots._give_back(self.user_id, self.choices)
