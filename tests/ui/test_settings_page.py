"""The settings page in a real browser: an API key made there works with the official `openai` client until it is
revoked there; the password changes; preferences are stored by the API."""

from __future__ import annotations

import re

import httpx
import openai
import pytest
from playwright.sync_api import Page, expect

from tests.ui.stack import PASSWORD, UiStack, screenshot


def test_an_api_key_made_on_the_page_works_with_openai_until_revoked_there(stack: UiStack, page: Page) -> None:
    username = stack.new_user("keys")
    stack.login(page, username, then="/settings")
    page.locator(".llmws-key-name input").fill("laptop")
    page.locator(".llmws-key-name input").press("Enter")
    page.locator(".llmws-create-key button").click()
    shown = page.locator(".llmws-new-key input")
    expect(shown).to_have_value(re.compile(r"\S{20,}"))
    key = shown.input_value()
    expect(page.locator(".llmws-keys").get_by_text("laptop", exact=True)).to_be_visible()
    screenshot(page, "settings")

    client = openai.OpenAI(base_url=stack.api.base_url + "/v1", api_key=key, max_retries=0)
    models = [model.id for model in client.models.list()]
    assert "tiny-chat" in models  # (other tests' aliases may be listed too, some leading to upstreams now gone)
    reply = client.chat.completions.create(model="tiny-chat", max_tokens=4,
                                           messages=[{"role": "user", "content": "Hello"}])
    assert reply.usage is not None and reply.usage.completion_tokens <= 4

    page.locator(".llmws-keys").get_by_text("Revoke", exact=True).click()
    page.locator(".llmws-confirm-revoke button").click()
    expect(page.locator(".llmws-keys").get_by_text("laptop", exact=True)).to_have_count(0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_password_changed_on_the_page_logs_in_and_a_wrong_current_one_is_refused(stack: UiStack,
                                                                                   page: Page) -> None:
    username = stack.new_user("password")
    stack.login(page, username, then="/settings")
    message = page.locator(".llmws-password-message")
    page.locator(".llmws-current-password input").fill("not-my-password")
    page.locator(".llmws-new-password input").fill("a-new-password-9")
    page.locator(".llmws-repeat-password input").fill("a-new-password-9")
    page.locator(".llmws-change-password button").click()
    expect(message).to_contain_text("current password is wrong")  # the API's own words

    page.locator(".llmws-current-password input").fill(PASSWORD)
    page.locator(".llmws-change-password button").click()
    expect(message).to_contain_text("password is changed")
    old = httpx.post(f"{stack.api.base_url}/auth/login", json={"username": username, "password": PASSWORD})
    assert old.status_code == 401
    new = httpx.post(f"{stack.api.base_url}/auth/login", json={"username": username, "password": "a-new-password-9"})
    assert new.status_code == 200 and new.json()["user"]["username"] == username


def test_preferences_saved_on_the_page_are_the_apis(stack: UiStack, page: Page) -> None:
    username = stack.new_user("prefs")
    token = stack.token_for(username)
    prompt = httpx.post(f"{stack.api.base_url}/v1/prompts", headers={"Authorization": f"Bearer {token}"},
                        json={"name": "Terse", "content": "Be brief."}).json()
    model = stack.api_get("/v1/models", token)["data"][0]["id"]
    stack.login(page, username, then="/settings")
    page.locator(".llmws-pref-model select").select_option(label=model)
    for field, value in (("temperature", "0.3"), ("max-tokens", "64"), ("top-p", "0.9")):
        page.locator(f".llmws-pref-{field} input").fill(value)
        page.locator(f".llmws-pref-{field} input").press("Tab")
    page.locator(".llmws-pref-prompt select").select_option(label="Terse")
    page.locator(".llmws-save-preferences button").click()
    expect(page.get_by_text("Preferences saved.")).to_be_visible()
    assert stack.api_get("/auth/me/preferences", token) == {
        "default_model": model, "temperature": 0.3, "max_tokens": 64, "top_p": 0.9, "system_prompt_id": prompt["id"]}

    page.reload()  # what the page shows is what was stored
    expect(page.locator(".llmws-pref-max-tokens input")).to_have_value("64")
    expect(page.locator(".llmws-pref-prompt select option:checked")).to_have_text("Terse")
