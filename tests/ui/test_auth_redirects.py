"""Where the login page may send a browser afterwards: only back to a page of this server."""

from __future__ import annotations

import pytest

from ui.auth import safe_next


@pytest.mark.parametrize("url", ["/chat", "/history?conversation=3f2a", "/admin_users"])
def test_local_paths_are_kept(url: str) -> None:
    assert safe_next(url) == url


@pytest.mark.parametrize("url", ["//evil.example", "/\\evil.example", "/\t/evil.example", "/\n/evil.example",
                                 "https://evil.example/chat", "javascript:alert(1)", "evil.example", "",
                                 "/\\/evil.example", " /chat"])
def test_anything_that_could_leave_the_server_is_dropped(url: str) -> None:
    assert safe_next(url) is None
