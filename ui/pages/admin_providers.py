"""`panel serve` page /admin_providers."""

from ui.shell import serve_page
from ui.views.admin_providers import providers_view

serve_page("Providers", "/admin_providers", providers_view, admin=True)
