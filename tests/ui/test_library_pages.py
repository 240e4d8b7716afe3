"""The history and projects pages in a real browser: a conversation made through the API is found, read, exported,
listed in its project, renamed and deleted; a project is created from the page."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect

from tests.support.access import bearer
from tests.ui.stack import UiStack, screenshot


def test_a_conversation_is_found_in_history_and_its_project_exported_renamed_and_deleted(stack: UiStack,
                                                                                         page: Page) -> None:
    username = stack.new_user("library")
    token = stack.token_for(username)
    tag = uuid.uuid4().hex[:6]
    project = httpx.post(f"{stack.api.base_url}/v1/projects", headers=bearer(token),
                         json={"name": f"Garden {tag}", "system_prompt": "You are a gardener."}).json()
    message = f"Tulips {tag}: how deep?"
    chat = httpx.post(f"{stack.api.base_url}/v1/chat", headers=bearer(token), timeout=120,
                      json={"message": message, "project_id": project["id"], "max_tokens": 8})
    assert chat.status_code == 200, chat.text
    conversation_id = chat.json()["conversation_id"]
    title = stack.api_get(f"/v1/conversations/{conversation_id}", token)["title"]
    assert tag in title
    httpx.post(f"{stack.api.base_url}/v1/conversations", headers=bearer(token), json={"title": "Unrelated"})

    stack.login(page, username, then="/history")
    table = page.locator(".llmws-conversations")
    expect(table.get_by_text("Unrelated", exact=True)).to_be_visible()
    search = page.locator(".llmws-search input")
    search.fill(tag.upper())  # the API's title search ignores case
    search.press("Enter")
    expect(table.get_by_text("Unrelated", exact=True)).to_have_count(0)
    expect(page.locator(".llmws-position")).to_contain_text("1–1 of 1")
    table.get_by_text(title, exact=True).click()
    expect(page.locator(".llmws-conversation-title")).to_have_text(title)
    expect(page.locator(".llmws-message-user")).to_contain_text(message)
    expect(page.locator(".llmws-message-assistant")).to_have_count(1)
    expect(page.locator("a.llmws-continue")).to_have_attribute("href", f"/chat?conversation={conversation_id}")
    screenshot(page, "history")

    with page.expect_download() as download:
        page.locator(".llmws-export-markdown button").click()
    assert download.value.suggested_filename == f"conversation-{conversation_id}.md"
    exported = Path(download.value.path()).read_text(encoding="utf-8")
    assert exported.startswith(f"# {title}") and message in exported and "You are a gardener." not in exported

    page.goto(f"{stack.ui.base_url}/projects")
    page.locator(".llmws-project-picker select").select_option(label=f"Garden {tag}")
    expect(page.locator(".llmws-project-system-prompt textarea")).to_have_value("You are a gardener.")
    in_project = page.locator(".llmws-conversations")
    expect(in_project.get_by_text(title, exact=True)).to_be_visible()
    expect(in_project.get_by_text("Unrelated", exact=True)).to_have_count(0)
    in_project.get_by_text(title, exact=True).click()
    expect(page.locator(".llmws-message-user")).to_contain_text(message)
    screenshot(page, "projects")
    page.locator(".llmws-move-project select").select_option(label="(no project)")
    page.locator(".llmws-move button").click()
    expect(in_project.get_by_text(title, exact=True)).to_have_count(0)
    assert stack.api_get(f"/v1/conversations/{conversation_id}", token)["project_id"] is None

    # Rename and delete from the history page; the API is what tells whether they happened.
    page.goto(f"{stack.ui.base_url}/history?conversation={conversation_id}")
    expect(page.locator(".llmws-conversation-title")).to_have_text(title)
    expect(page.locator(".llmws-move-project select option:checked")).to_have_text("(no project)")
    page.locator(".llmws-rename-title input").fill(f"Bulbs {tag}")
    page.locator(".llmws-rename button").click()
    expect(page.locator(".llmws-conversation-title")).to_have_text(f"Bulbs {tag}")
    assert stack.api_get(f"/v1/conversations/{conversation_id}", token)["title"] == f"Bulbs {tag}"
    expect(page.locator(".llmws-conversations").get_by_text(f"Bulbs {tag}", exact=True)).to_be_visible()

    page.locator(".llmws-delete button").click()
    page.locator(".llmws-confirm-delete button").click()
    expect(page.locator(".llmws-no-conversation")).to_be_visible()
    expect(page.locator(".llmws-conversations").get_by_text(f"Bulbs {tag}", exact=True)).to_have_count(0)
    gone = httpx.get(f"{stack.api.base_url}/v1/conversations/{conversation_id}", headers=bearer(token))
    assert gone.status_code == 404


def test_a_project_is_created_with_its_default_system_prompt_and_deleted(stack: UiStack, page: Page) -> None:
    username = stack.new_user("projects")
    token = stack.token_for(username)
    stack.login(page, username, then="/projects")
    page.locator(".llmws-project-name input").fill("Novel")
    page.locator(".llmws-project-description textarea").fill("Chapters and characters")
    page.locator(".llmws-project-system-prompt textarea").fill("You are a patient editor.")
    page.locator(".llmws-project-save button").click()
    expect(page.locator(".llmws-project-heading")).to_contain_text("Conversations in Novel")
    [project] = stack.api_get("/v1/projects", token)["data"]
    assert (project["name"], project["description"], project["system_prompt"]) == (
        "Novel", "Chapters and characters", "You are a patient editor.")

    page.locator(".llmws-project-name input").fill("Novel, second draft")
    page.locator(".llmws-project-save button").click()
    expect(page.locator(".llmws-projects").get_by_text("Novel, second draft", exact=True)).to_be_visible()
    assert stack.api_get(f"/v1/projects/{project['id']}", token)["name"] == "Novel, second draft"

    page.locator(".llmws-project-delete button").click()
    page.locator(".llmws-project-confirm-delete button").click()
    expect(page.locator(".llmws-projects").get_by_text("Novel, second draft", exact=True)).to_have_count(0)
    assert stack.api_get("/v1/projects", token)["total"] == 0
