"""Where a usage row's token figures come from, said honestly on every admin page that shows them.

Each usage row carries a ``count_source``: ``engine`` (the local engine counted the tokens it processed with the
model's own tokenizer: exact), ``upstream`` (an upstream provider reported them) or ``estimated`` (the upstream
reported none, so the gateway counted the text itself: approximate).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ui.client import ApiClient

COUNT_SOURCES = {
    "engine": "counted by the local engine",
    "upstream": "reported by the upstream",
    "estimated": "estimated by the gateway",
}


def source_label(count_source: str) -> str:
    return COUNT_SOURCES.get(count_source, count_source)


def count_sources_since(client: ApiClient, since: datetime | None = None, **filters: Any) -> dict[str, int]:
    """How many usage rows (matching ``filters``) take their token figures from each source."""
    since_text = since.isoformat() if since else None
    return {source: client.usage_logs(0, 1, count_source=source, since=since_text, **filters)["total"]
            for source in COUNT_SOURCES}


def count_sources_line(sources: dict[str, int], lead: str = "Token figures") -> str:
    """A sentence saying which token figures are exact and which are not, e.g. for a caption under a chart."""
    shown = [f"{count:,} {'request' if count == 1 else 'requests'} {COUNT_SOURCES[source]}"
             for source, count in sources.items() if count]
    if not shown:
        return f"{lead}: no requests recorded."
    exact = "" if sources.get("estimated") else " (no estimated figures among them)"
    return f"{lead}: " + ", ".join(shown) + exact + "."
