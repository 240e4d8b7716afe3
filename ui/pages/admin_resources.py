"""`panel serve` page /admin_resources."""

from ui.shell import serve_page
from ui.views.admin_resources import resources_view

serve_page("Resources", "/admin_resources", resources_view, admin=True)
