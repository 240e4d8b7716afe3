"""The usage writer's batching: a flush writes what was recorded before it began, so a busy server writes one
batch per interval rather than a stream of small transactions (rows keep arriving while a write is under way)."""

from __future__ import annotations

from api.services.usage_writer import Reservation, UsageRecord, UsageWriter


def usage(request_id: str) -> UsageRecord:
    return UsageRecord(request_id, 1, None, "alias", "fake", 7, 10, 3.0, 12.0, None, "ok", "upstream")


class BusyWriter(UsageWriter):
    """Writes nowhere; a request finishes during each write."""

    def __init__(self) -> None:
        super().__init__(None, batch_size=2)  # type: ignore[arg-type]  # no database: _write is replaced
        self.batches: list[list[str]] = []

    async def _write(self, batch: list[tuple[UsageRecord, float]]) -> None:
        self.batches.append([record.request_id for record, _ in batch])
        if len(self.batches) <= 3:  # bounded: a flush that chased them would otherwise never end
            self.record(usage(f"during-{len(self.batches)}"))


async def test_a_flush_writes_what_was_recorded_before_it_in_batches_and_leaves_the_rest() -> None:
    writer = BusyWriter()
    for name in ("a", "b", "c"):
        writer.record(usage(name))
    await writer.flush()
    assert writer.batches == [["a", "b"], ["c"]]
    assert [record.request_id for record, _ in writer._pending] == ["during-1", "during-2"]
    await writer.flush()
    assert writer.batches[2:] == [["during-1", "during-2"]]
    assert [record.request_id for record, _ in writer._pending] == ["during-3"]


def test_a_reservation_is_replaced_by_the_real_count_not_added_to_it() -> None:
    """Admission reserved 50 tokens on the key's window of minute 100; the request used 17 and finished in minute
    101. The key's window gets 17 in all (50 - 33), the user's (nothing reserved there) 17 when it finished."""
    record = UsageRecord("r", 1, 2, "m", "local", 7, 10, 3.0, 12.0, None, "ok", "engine",
                         reservation=Reservation(minute=100, tokens=50, subjects=("key:2",)))
    assert record.window_tokens(101 * 60 + 5) == [(("user:1", 101), 17), (("key:2", 100), -33)]
    assert usage("plain").window_tokens(101 * 60) == [(("user:1", 101), 17)]
