"""`panel serve` page /admin_usage."""

from ui.shell import serve_page
from ui.views.admin_usage import usage_view

serve_page("Usage", "/admin_usage", usage_view, admin=True)
