"""The history, projects and settings pages' view state against the real API, without a browser."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.ui.stack import PASSWORD, UiStack
from ui.client import ApiClient, ApiError
from ui.views.library_state import NO_PROJECT, ConversationList, ProjectList
from ui.views.settings_state import ApiKeyList, PasswordForm, PreferencesForm


@pytest.fixture
def client(stack: UiStack) -> Iterator[ApiClient]:
    client = ApiClient(stack.api.base_url, stack.token_for(stack.new_user("state")))
    yield client
    client.close()


def new_conversation(client: ApiClient, title: str, project_id: str | None = None) -> dict:
    created = httpx.post(f"{client.base_url}/v1/conversations", headers={"Authorization": f"Bearer {client.token}"},
                         json={"title": title, "project_id": project_id})
    assert created.status_code == 201, created.text
    return created.json()


def test_conversations_are_searched_and_paged_by_the_api(client: ApiClient) -> None:
    tag = uuid.uuid4().hex[:6]
    for number in range(5):
        new_conversation(client, f"Recipe {tag} {number}")
    new_conversation(client, "Something else")
    conversations = ConversationList(client, limit=2)
    conversations.refresh()
    assert conversations.total == 6 and len(conversations.rows) == 2
    conversations.search(f"recipe {tag.upper()}")  # any case, as the API's q
    assert conversations.total == 5
    assert conversations.position == "1–2 of 5" and not conversations.has_previous and conversations.has_next
    seen = [row["title"] for row in conversations.rows]
    conversations.next_page()
    conversations.next_page()
    seen += [row["title"] for row in conversations.rows]
    assert conversations.position == "5–5 of 5" and not conversations.has_next
    conversations.next_page()  # nothing after the last page: it stays
    assert conversations.offset == 4
    assert len(seen) == 3 and all(tag in title for title in seen)

    conversations.open(conversations.rows[0]["id"])
    conversations.delete()  # the last page emptied: the one before it is shown
    assert conversations.total == 4 and conversations.offset == 2 and len(conversations.rows) == 2
    conversations.previous_page()
    assert conversations.offset == 0


def test_an_opened_conversation_is_renamed_moved_exported_and_deleted(client: ApiClient) -> None:
    projects = ProjectList(client)
    project = projects.create("Garden", "Plants", "You are a gardener.", "")
    assert projects.selected["id"] == project["id"] and project["system_prompt"] == "You are a gardener."
    conversation = new_conversation(client, "Tomatoes")
    conversations = ConversationList(client)
    conversations.refresh()
    conversations.open(conversation["id"])
    assert conversations.opened["messages"] == []

    conversations.rename("  Tomatoes in June ")
    assert client.conversation(conversation["id"])["title"] == "Tomatoes in June"
    assert conversations.opened["title"] == "Tomatoes in June"
    conversations.move(projects.move_choices()["Garden"])
    in_project = ConversationList(client, project_id=project["id"])
    in_project.refresh()
    assert [row["id"] for row in in_project.rows] == [conversation["id"]]
    assert conversations.export("markdown").startswith("# Tomatoes in June")
    assert conversations.export_filename("json") == f"conversation-{conversation['id']}.json"
    conversations.move(projects.move_choices()[NO_PROJECT])
    in_project.refresh()
    assert in_project.total == 0

    conversations.delete()
    assert conversations.opened is None
    with pytest.raises(ApiError) as refused:
        client.conversation(conversation["id"])
    assert refused.value.status == 404


def test_projects_are_edited_told_apart_and_deleted_without_their_conversations(client: ApiClient) -> None:
    projects = ProjectList(client)
    first = projects.create("Work")
    second = projects.create("Work", default_model="tiny-chat")
    labels = projects.labels()
    assert labels == {f"Work ({first['id'][:8]})": first["id"], f"Work ({second['id'][:8]})": second["id"]}
    saved = projects.save("Work, old", "", "Be formal.", "")
    assert saved["name"] == "Work, old" and saved["default_model"] is None and saved["system_prompt"] == "Be formal."
    assert projects.selected["name"] == "Work, old"
    kept = new_conversation(client, "Quarterly report", second["id"])
    projects.delete()
    assert projects.selected is None and [row["id"] for row in projects.rows] == [first["id"]]
    assert client.conversation(kept["id"])["project_id"] is None


def test_preferences_keys_and_password_state(stack: UiStack) -> None:
    username = stack.new_user("settings-state")
    client = ApiClient(stack.api.base_url, stack.token_for(username))
    preferences = PreferencesForm(client)
    preferences.load()
    assert preferences.values() == dict.fromkeys(preferences.values())
    model = next(label for label in preferences.model_choices() if label != "(no preference)")
    prompt = client.create_prompt({"name": "Terse", "content": "Be brief."})
    assert preferences.prompt_choices()["Terse"] == prompt["id"]
    preferences.save(default_model=model, temperature=0.3, max_tokens=64, system_prompt_id=prompt["id"])
    preferences.save(top_p=0.5)  # the API replaces the whole object: the others are sent as they were
    assert client.preferences() == {"default_model": model, "temperature": 0.3, "max_tokens": 64, "top_p": 0.5,
                                    "system_prompt_id": prompt["id"]}
    preferences.save(default_model="")
    assert client.preferences()["default_model"] is None

    keys = ApiKeyList(client)
    created = keys.create("laptop")
    assert keys.created["key"].startswith(created["prefix"]) and [row["name"] for row in keys.rows] == ["laptop"]
    keys.revoke(created["id"])
    assert keys.created is None and keys.rows == []

    form = PasswordForm(client)
    assert form.problem(PASSWORD, "new-password-1", "new-password-2") is not None
    assert form.problem(PASSWORD, "new-password-1", "new-password-1") is None
    with pytest.raises(ApiError) as refused:
        form.change("not-my-password", "new-password-1")
    assert "current password" in refused.value.message
    form.change(PASSWORD, "new-password-1")
    assert client.login(username, "new-password-1")["user"]["username"] == username
    client.close()
