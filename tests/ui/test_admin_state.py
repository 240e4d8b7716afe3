"""The admin pages' view state against the real API, without a browser: what each page would show and do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.ui.admin_traffic import UserTraffic, login_status, user_with_usage
from tests.ui.stack import PASSWORD, UiStack
from ui.client import ApiClient, ApiError
from ui.views.admin_overview import OverviewState
from ui.views.admin_prompts import PromptsState
from ui.views.admin_resources import ResourcesState
from ui.views.admin_usage_state import UsageState
from ui.views.admin_users import UsersState
from ui.views.token_sources import count_sources_line


@pytest.fixture
def admin(stack: UiStack) -> Iterator[ApiClient]:
    client = ApiClient(stack.api.base_url, stack.admin_token)
    yield client
    client.close()


@pytest.fixture(scope="module")
def traffic(stack: UiStack) -> UserTraffic:
    return user_with_usage(stack, requests=3, prefix="state")


def test_overview_counts_the_requests_of_today_and_says_the_engine_counted_their_tokens(
        admin: ApiClient, traffic: UserTraffic) -> None:
    state = OverviewState(admin)
    state.refresh()
    assert state.users["total"] >= 2 and state.users["admins"] >= 1
    assert state.today["requests"] >= traffic.requests
    assert state.sources["engine"] >= traffic.requests  # the local engine's rows are its own exact counts
    hours, requests, _errors = state.series()
    assert len(hours) == 24 and sum(requests) >= traffic.requests
    assert "counted by the local engine" in count_sources_line(state.sources)


def test_users_are_created_paged_disabled_enabled_promoted_and_given_a_new_password(
        stack: UiStack, admin: ApiClient) -> None:
    state = UsersState(admin, limit=2)
    name = f"paged-{uuid.uuid4().hex[:6]}"
    created = state.create(name, PASSWORD, "user")
    state.load()
    while not any(row["id"] == created["id"] for row in state.rows):
        assert state.has_next, f"{name} is on no page"
        state.next_page()
    state.select(created["id"])
    assert state.selected["username"] == name

    state.update_selected(is_active=False)
    assert state.selected["is_active"] is False
    assert login_status(stack, name, PASSWORD) in (401, 403)
    state.update_selected(is_active=True)
    assert login_status(stack, name, PASSWORD) == 200

    state.update_selected(role="admin")
    assert admin.update_user(created["id"], {})["role"] == "admin"
    state.update_selected(password="a-brand-new-password-7")
    assert login_status(stack, name, PASSWORD) == 401
    assert login_status(stack, name, "a-brand-new-password-7") == 200

    with pytest.raises(ApiError):
        state.create(name, PASSWORD, "user")  # the name is taken


def test_prompts_are_created_edited_and_deleted_through_the_library(admin: ApiClient) -> None:
    state = PromptsState(admin)
    name = f"translator-{uuid.uuid4().hex[:6]}"
    prompt = state.create(name, "You translate.", "Into French: {input}", shared=True)
    assert state.selected_id == prompt["id"]
    stored = admin._get(f"/v1/prompts/{prompt['id']}")
    assert (stored["name"], stored["is_shared"], stored["user_template"]) == (name, True, "Into French: {input}")

    state.update(name, "You translate carefully.", "", shared=False)
    stored = admin._get(f"/v1/prompts/{prompt['id']}")
    assert (stored["content"], stored["is_shared"], stored["user_template"]) == (
        "You translate carefully.", False, None)
    assert state.selected["content"] == "You translate carefully."
    state.limit = 200
    state.load()
    row = next(row for row in state.table_rows() if row["id"] == prompt["id"])
    assert (row["name"], row["visibility"], row["template"]) == (name, "personal", "")

    with pytest.raises(ApiError):
        state.update(name, "x", "no placeholder here", shared=False)  # a template must hold {input}
    state.delete()
    with pytest.raises(ApiError):
        admin._get(f"/v1/prompts/{prompt['id']}")


def test_usage_filters_by_user_labels_each_rows_source_and_exports_csv(admin: ApiClient,
                                                                        traffic: UserTraffic) -> None:
    state = UsageState(admin, limit=2)
    state.load_reports()
    state.load_rows()
    assert traffic.model in state.model_options()
    assert traffic.username in state.user_options()

    state.apply_filters(user_id=traffic.user_id)
    assert state.total == traffic.requests and len(state.rows) == 2  # paged
    state.next_page()
    assert len(state.rows) == 1 and state.offset == 2
    rows = state.table_rows()
    assert rows[0]["username"] == traffic.username and rows[0]["model"] == traffic.model
    assert rows[0]["token_count"] == "counted by the local engine"
    assert state.sources == {"engine": traffic.requests, "upstream": 0, "estimated": 0}
    assert state.report_sources["engine"] == traffic.requests
    names, values = state.chart("user", "requests")
    assert names == [traffic.username] and values == [traffic.requests]

    state.apply_filters(count_source="upstream")
    assert state.total == 0 and state.offset == 0
    state.apply_filters(count_source="", status="ok", model=traffic.model)
    assert state.total == traffic.requests

    state.csv_group_by = "model"
    csv_text = state.csv()
    assert csv_text.splitlines()[0].startswith("model,") and traffic.model in csv_text
    assert state.csv_filename == "usage-by-model.csv"


def test_resources_sample_the_machine_and_the_models_context(admin: ApiClient) -> None:
    state = ResourcesState(admin)
    first = state.poll()
    second = state.poll()
    assert state.samples == 2 and second["time"][0] >= first["time"][0]
    assert 0 <= first["cpu_percent"][0] <= 100 * 64 and 0 < first["ram_percent"][0] <= 100
    assert state.model is not None and state.model["max_context"] > 0 and state.model["name"]
    assert all(f"gpu{gpu['index']}_memory_gb" in first for gpu in state.gpus)


def test_a_gpu_in_the_report_becomes_chart_columns() -> None:
    report = {"cpu": {"cpu_percent": 12.5, "memory_used_bytes": 2 * 1024**3, "memory_total_bytes": 8 * 1024**3,
                      "process_rss_bytes": 1024**3},
              "gpus": [{"index": 0, "name": "H200", "memory_used_bytes": 35 * 1024**3,
                        "memory_total_bytes": 140 * 1024**3, "utilization_percent": None}]}
    point = ResourcesState.point(report, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert point["ram_percent"] == [25.0] and point["gpu0_memory_percent"] == [25.0]
    assert point["gpu0_memory_gb"] == [35.0] and point["gpu0_utilization"][0] != point["gpu0_utilization"][0]
    assert point["time"] == [datetime(2026, 1, 2, 3, 4, 5)]
