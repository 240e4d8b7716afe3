"""`panel serve` page /admin_resources."""

from ui.views.admin_resources import resources_view
from ui.shell import serve_page

serve_page("Resources", "/admin_resources", resources_view, admin=True)
