"""`panel serve` page /admin_models."""

from ui.shell import serve_page
from ui.views.admin_models import models_view

serve_page("Models", "/admin_models", models_view, admin=True)
