"""Chat (placeholder until the chat screen lands)."""

import panel as pn

from ui.shell import UiSession


def chat_view(session: UiSession) -> pn.viewable.Viewable:
    return pn.pane.Markdown(f"Hello {session.user['username']}")
