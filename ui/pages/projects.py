"""`panel serve` page /projects."""

from ui.shell import serve_page
from ui.views.projects import projects_view

serve_page("Projects", "/projects", projects_view)
