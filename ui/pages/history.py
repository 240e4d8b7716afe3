"""`panel serve` page /history."""

from ui.shell import serve_page
from ui.views.history import history_view

serve_page("History", "/history", history_view)
