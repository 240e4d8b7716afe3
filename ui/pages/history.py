"""`panel serve` page /history."""

from ui.views.history import history_view
from ui.shell import serve_page

serve_page("History", "/history", history_view)
