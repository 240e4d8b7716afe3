"""`panel serve` page /admin_runners."""

from ui.shell import serve_page
from ui.views.admin_runners import runners_view

serve_page("Runners", "/admin_runners", runners_view, admin=True)
