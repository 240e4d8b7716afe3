"""`panel serve` page /admin_overview."""

from ui.views.admin_overview import overview_view
from ui.shell import serve_page

serve_page("Overview", "/admin_overview", overview_view, admin=True)
