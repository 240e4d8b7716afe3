"""The native chat's Server-Sent Events, read from a streamed httpx response."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx


@dataclass
class Event:
    id: str
    event: str
    data: dict

    @property
    def seq(self) -> int:
        return int(self.id.rpartition(":")[2])


def events_of(response: httpx.Response) -> Iterator[Event]:
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if not line:
            if fields:
                yield Event(fields["id"], fields["event"], json.loads(fields["data"]))
            fields = {}
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
