"""Tool calls in the chat page (issue 17): the tools a user offers in the page's Tools card, and a call the model
makes shown by name and arguments, never as the model's raw markup; first through the page's state against the real
API, then in a real browser. ``required`` holds even the stack's tiny random model to a well-formed call."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jsonschema
import pytest
from playwright.sync_api import Page, expect

from tests.support.schemas import TOOL_SCHEMAS, TOOLS
from tests.ui.stack import UiStack, screenshot
from tests.ui.test_chat import reply_text, send
from tests.ui.test_chat_state import finished, run, saved_messages
from ui.client import ApiClient
from ui.views.chat_state import ChatState

TOOLS_JSON = json.dumps(list(TOOLS))


@pytest.fixture
def client(stack: UiStack) -> Iterator[ApiClient]:
    api = ApiClient(stack.api.base_url, stack.token_for(stack.new_user("tools")))
    yield api
    api.close()


def test_a_call_the_model_makes_is_shown_by_name_and_arguments(client: ApiClient) -> None:
    state = ChatState(client)
    state.load()
    state.tools_json, state.tool_choice, state.temperature, state.max_tokens = TOOLS_JSON, "required", 1.0, 120
    # One call: allowed several, the random model may make calls until max_tokens (finish_reason "length").
    state.parallel_tool_calls = False
    reply = run(finished(state, "What is the weather in Paris?"))
    assert reply.error is None and reply.finish_reason == "tool_calls", reply
    [call] = reply.tool_calls
    name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"])
    jsonschema.validate(arguments, TOOL_SCHEMAS[name])
    assert f"**Tool call** `{name}`" in reply.markdown
    assert json.dumps(arguments, indent=2, ensure_ascii=False) in reply.markdown
    assert "<tool_call>" not in reply.markdown and "called a tool" in reply.metrics_line()
    stored = saved_messages(client, state.conversation_id)
    assert stored[-1]["tool_calls"] == reply.tool_calls


def test_tools_that_are_not_a_json_list_are_not_sent(client: ApiClient) -> None:
    state = ChatState(client)
    state.load()
    state.tools_json = '{"type": "function"'
    reply = run(finished(state, "hi"))
    assert not reply.started and reply.error is not None and reply.error.startswith("Tools must be JSON")
    assert state.conversation_id is None


def test_the_page_offers_tools_and_shows_the_call(stack: UiStack, page: Page) -> None:
    username = stack.new_user("tools-page")
    stack.login(page, username)
    page.locator(".llmws-tool-settings .card-button").click()
    tools = page.locator(".llmws-tools textarea")
    tools.fill(TOOLS_JSON)
    tools.press("Tab")  # the text area's value reaches the server when it loses the focus
    page.locator(".llmws-tool-choice select").select_option("required")
    # One call: the random model, allowed parallel calls, may make calls until max_tokens.
    page.locator(".llmws-parallel-calls input").uncheck()
    max_tokens = page.get_by_label("Max tokens")
    max_tokens.fill("120")
    max_tokens.press("Tab")
    send(page, "What is the weather in Paris?")
    reply = page.locator(".llmws-reply-text").last
    expect(page.locator(".llmws-metrics-line")).to_be_visible(timeout=120_000)
    screenshot(page, "chat-tool-call")
    shown = reply_text(reply)
    assert shown.count("Tool call") == 1 and any(name in shown for name in TOOL_SCHEMAS), shown
    assert "<tool_call>" not in shown and "{" in shown
