"""The chat page: a ``ChatInterface`` streaming replies from ``/v1/chat/stream``, with its settings beside it.

Every chat is a conversation on the server (the first turn's ``start`` event names it; later turns send it back).
Stop cancels the generation on the server; the stream then ends on its own with what was written so far.
Regenerate and edit-last take the last exchange back out of the conversation (``DELETE .../last-exchange``), so
the conversation keeps one answer per question: regenerate asks the same text again with the current settings,
edit-last puts it back in the input box to be changed and sent.
"""

from __future__ import annotations

import html
import time

import panel as pn

from ui.client import ApiError
from ui.shell import UiSession
from ui.views.chat_state import ChatState, Reply

REDRAW_EVERY_S = 0.1  # the reply is redrawn at most this often: each redraw sends its whole text to the browser

NONE = ""  # what a picker holds for "none": a Bokeh select cannot show a null value


def _optional(options: dict[str, object]) -> dict[str, object]:
    return {label: NONE if value is None else value for label, value in options.items()}


def chat_view(session: UiSession) -> pn.viewable.Viewable:
    state = ChatState(session.client)
    problems = state.load()
    username = session.user["username"]

    model = pn.widgets.Select(name="Model", options=state.model_options, value=state.model, width=300)
    prompt = pn.widgets.Select(name="System prompt", options=_optional(state.prompt_options),
                               value=state.preset_id or NONE, width=220)
    project = pn.widgets.Select(name="Project", options=_optional(state.project_options),
                                value=state.project_id or NONE, width=200)
    temperature = pn.widgets.FloatSlider(name="Temperature", start=0, end=2, step=0.05, value=state.temperature,
                                         width=180)
    max_tokens = pn.widgets.IntInput(name="Max tokens", start=1, value=state.max_tokens, width=110)
    tools = pn.widgets.TextAreaInput(name="Tools (OpenAI's JSON list)", value=state.tools_json, height=120,
                                     placeholder='[{"type": "function", "function": {"name": "get_weather", '
                                                 '"parameters": {"type": "object", "properties": {...}}}}]',
                                     css_classes=["llmws-tools"], sizing_mode="stretch_width")
    tool_choice = pn.widgets.Select(name="Tool choice", options=["auto", "required", "none"],
                                    value=state.tool_choice, width=120, css_classes=["llmws-tool-choice"])
    parallel_calls = pn.widgets.Checkbox(name="Parallel calls", value=state.parallel_tool_calls,
                                         css_classes=["llmws-parallel-calls"])

    def follow(widget: pn.widgets.Widget, name: str) -> None:
        def changed(event: object) -> None:
            value = event.new  # type: ignore[attr-defined]
            if value is None and name == "max_tokens":
                return  # an emptied box: the last number stands
            setattr(state, name, None if value == NONE else value)
        widget.param.watch(changed, "value")

    for widget, name in ((model, "model"), (prompt, "preset_id"), (project, "project_id"),
                         (temperature, "temperature"), (max_tokens, "max_tokens"), (tools, "tools_json"),
                         (tool_choice, "tool_choice"), (parallel_calls, "parallel_tool_calls")):
        follow(widget, name)

    stop = pn.widgets.Button(name="Stop generating", button_type="danger", disabled=True, width=140)
    regenerate = pn.widgets.Button(name="Regenerate", disabled=True, width=110)
    edit_last = pn.widgets.Button(name="Edit last", disabled=True, width=100)
    new_chat = pn.widgets.Button(name="New chat", button_type="primary", width=100)
    conversation = pn.pane.HTML("", css_classes=["llmws-conversation"])
    text_box = pn.chat.ChatAreaInput(placeholder="Send a message (Enter sends, Shift+Enter is a new line)")

    def notify(message: str) -> None:
        if pn.state.notifications is not None:
            pn.state.notifications.error(message, duration=8000)

    def refresh(*_: object) -> None:
        """Buttons and the project picker follow the state: a project only applies to a new chat."""
        has_turns = state.conversation_id is not None and bool(chat.objects)
        stop.disabled = not state.generating
        regenerate.disabled = edit_last.disabled = state.generating or not has_turns
        new_chat.disabled = state.generating
        project.disabled = state.conversation_id is not None
        conversation.object = (f'<small>Conversation <code id="conversation-id">{state.conversation_id}</code>'
                               "</small>" if state.conversation_id else "<small>New conversation</small>")

    async def respond(contents: str, user: str, instance: pn.chat.ChatInterface):  # noqa: ANN202 (Panel's hook)
        sent = instance.objects[-1]
        metrics = pn.pane.HTML("", css_classes=["llmws-metrics"], margin=(0, 5))
        # A pane of our own for the text: a stable handle, updated in place as tokens come (Markdown: code renders).
        # Raw HTML off: a reply is model (or upstream) output, and an <img onerror=…> in it must not run here.
        body = pn.pane.Markdown("", css_classes=["message", "llmws-reply-text"], sizing_mode="stretch_width",
                                renderer_options={"html": False})
        # A text avatar: the default is an emoji, which a machine without an emoji font draws as an empty box.
        message = pn.chat.ChatMessage(body, user="Assistant", avatar="AI", footer_objects=[metrics],
                                      show_reaction_icons=False,
                                      css_classes=["chat-message", "llmws-reply"])
        reply, shown_at = Reply(), 0.0
        async for reply in state.generate(contents):
            if not reply.started:
                continue
            if reply.finished or time.monotonic() - shown_at >= REDRAW_EVERY_S:
                shown_at = time.monotonic()
                message.user = reply.model or "Assistant"
                body.object = reply.markdown
                refresh()
                yield message
        if not reply.started:  # refused before the server stored anything: take the turn back out of the log
            instance.remove(sent)
            text_box.value_input = contents
            notify(f"Not sent: {reply.error}")
        elif reply.error:
            metrics.object = f'<span class="llmws-reply-error" style="color:#b00020">{html.escape(reply.error)}</span>'
            notify(reply.error)
        else:
            metrics.object = f'<span class="llmws-metrics-line">{html.escape(reply.metrics_line())}</span>'
        refresh()

    chat = pn.chat.ChatInterface(
        callback=respond, user=username, callback_user="Assistant", widgets=[text_box], show_rerun=False,
        show_undo=False, show_clear=False, show_stop=False, callback_exception="summary",
        sizing_mode="stretch_width", height=620, css_classes=["llmws-chat"],
        message_params={"show_reaction_icons": False})

    def drop_last_from_log() -> None:
        users = [message.user for message in chat.objects]
        if username in users:
            chat.undo(users[::-1].index(username) + 1)

    async def take_back() -> str | None:
        try:
            text = await state.take_back_last()
        except ApiError as exc:
            notify(exc.message)
            return None
        if text is not None:
            drop_last_from_log()
        refresh()
        return text

    async def on_regenerate(_: object) -> None:
        text = await take_back()
        if text is not None:
            chat.send(text, user=username, respond=True)

    async def on_edit_last(_: object) -> None:
        text = await take_back()
        if text is not None:
            text_box.value_input = text

    async def on_stop(_: object) -> None:
        try:
            await state.stop()
        except ApiError as exc:
            notify(exc.message)

    def on_new_chat(_: object) -> None:
        state.new_chat()
        chat.clear()
        refresh()

    stop.on_click(on_stop)
    regenerate.on_click(on_regenerate)
    edit_last.on_click(on_edit_last)
    new_chat.on_click(on_new_chat)
    state.param.watch(refresh, ["generating", "conversation_id"])
    refresh()

    settings = pn.Row(model, prompt, project, temperature, max_tokens, sizing_mode="stretch_width")
    # Tools are for trying a model's tool calls here: the reply shows each call (name and arguments).
    tool_options = pn.Row(tools, pn.Column(tool_choice, parallel_calls), sizing_mode="stretch_width")
    tool_settings = pn.Card(tool_options, title="Tools", collapsed=True, sizing_mode="stretch_width",
                            css_classes=["llmws-tool-settings"])
    actions = pn.Row(stop, regenerate, edit_last, new_chat, conversation, align="center")
    warnings = [pn.pane.Alert(problem, alert_type="warning") for problem in problems]
    return pn.Column(*warnings, settings, tool_settings, actions, chat, sizing_mode="stretch_width")
