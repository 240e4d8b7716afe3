"""`panel serve` page /admin_usage."""

from ui.views.admin_usage import usage_view
from ui.shell import serve_page

serve_page("Usage", "/admin_usage", usage_view, admin=True)
