"""`panel serve` page /admin_overview."""

from ui.shell import serve_page
from ui.views.admin_overview import overview_view

serve_page("Overview", "/admin_overview", overview_view, admin=True)
