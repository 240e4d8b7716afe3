"""`panel serve` page /admin_runners."""

from ui.views.admin_runners import runners_view
from ui.shell import serve_page

serve_page("Runners", "/admin_runners", runners_view, admin=True)
