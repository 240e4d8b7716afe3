"""`panel serve` page /admin_users."""

from ui.views.admin_users import users_view
from ui.shell import serve_page

serve_page("Users", "/admin_users", users_view, admin=True)
