"""`panel serve` page /admin_users."""

from ui.shell import serve_page
from ui.views.admin_users import users_view

serve_page("Users", "/admin_users", users_view, admin=True)
