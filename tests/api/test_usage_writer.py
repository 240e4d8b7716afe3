"""The usage writer's batching: a flush writes what was recorded before it began, so a busy server writes one
batch per interval rather than a stream of small transactions (rows keep arriving while a write is under way)."""

from __future__ import annotations

from api.services.usage_writer import UsageRecord, UsageWriter


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
