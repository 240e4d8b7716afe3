"""The history page: every conversation of the user, searched by title and paged by the API, opened beside the list
to read, rename, move to a project, export or delete."""

from __future__ import annotations

import panel as pn

from ui.shell import UiSession
from ui.views.conversation_browser import attempt, conversation_browser
from ui.views.library_state import ConversationList, ProjectList


def history_view(session: UiSession) -> pn.viewable.Viewable:
    conversations = ConversationList(session.client)
    projects = ProjectList(session.client)
    projects.refresh()
    conversations.refresh()
    # /history?conversation=<id> opens that one, so other pages can link straight to it.
    wanted = (pn.state.session_args.get("conversation") or [b""])[0].decode()
    if wanted:
        attempt(lambda: conversations.open(wanted))
    return conversation_browser(conversations, projects)
