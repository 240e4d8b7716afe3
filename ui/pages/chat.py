"""`panel serve` page /chat."""

from ui.views.chat import chat_view
from ui.shell import serve_page

serve_page("Chat", "/chat", chat_view)
