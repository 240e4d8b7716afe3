"""`panel serve` page /settings."""

from ui.views.settings import settings_view
from ui.shell import serve_page

serve_page("Settings", "/settings", settings_view)
