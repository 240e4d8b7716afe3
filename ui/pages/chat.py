"""`panel serve` page /chat."""

from ui.shell import serve_page
from ui.views.chat import chat_view

serve_page("Chat", "/chat", chat_view)
