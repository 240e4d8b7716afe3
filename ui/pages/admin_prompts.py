"""`panel serve` page /admin_prompts."""

from ui.shell import serve_page
from ui.views.admin_prompts import prompts_view

serve_page("Prompts", "/admin_prompts", prompts_view, admin=True)
