"""`panel serve` page /projects."""

from ui.views.projects import projects_view
from ui.shell import serve_page

serve_page("Projects", "/projects", projects_view)
