"""`panel serve` page /settings."""

from ui.shell import serve_page
from ui.views.settings import settings_view

serve_page("Settings", "/settings", settings_view)
