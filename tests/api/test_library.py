"""Projects, conversations (list, rename, move, delete, export) and the prompt library, for their owner only."""

from __future__ import annotations

import json

import httpx

from db.models import Role
from tests.api.conftest import MakeUser, assert_error
from tests.support.access import USER_PASSWORD, bearer, login


async def test_conversations_list_rename_move_export_delete(client: httpx.AsyncClient, user_token: str,
                                                            make_user: MakeUser) -> None:
    me = bearer(user_token)
    project = (await client.post("/v1/projects", json={"name": "Work"}, headers=me)).json()
    made = [(await client.post("/v1/conversations", json={"title": f"Chat {i}"}, headers=me)).json()
            for i in range(5)]
    page = (await client.get("/v1/conversations", params={"limit": 2, "offset": 0}, headers=me)).json()
    assert page["total"] == 5 and len(page["data"]) == 2
    everything = []
    for offset in range(0, 5, 2):
        everything += (await client.get("/v1/conversations", params={"limit": 2, "offset": offset},
                                        headers=me)).json()["data"]
    assert sorted(c["id"] for c in everything) == sorted(c["id"] for c in made)  # pages neither skip nor repeat

    target = made[0]["id"]
    renamed = await client.patch(f"/v1/conversations/{target}", json={"title": "Renamed"}, headers=me)
    assert renamed.status_code == 200 and renamed.json()["title"] == "Renamed"
    moved = await client.patch(f"/v1/conversations/{target}", json={"project_id": project["id"]}, headers=me)
    assert moved.json()["project_id"] == project["id"] and moved.json()["title"] == "Renamed"
    in_project = (await client.get("/v1/conversations", params={"project_id": project["id"]}, headers=me)).json()
    assert [c["id"] for c in in_project["data"]] == [target]
    out = await client.patch(f"/v1/conversations/{target}", json={"project_id": None}, headers=me)
    assert out.json()["project_id"] is None

    exported = await client.get(f"/v1/conversations/{target}/export", headers=me)
    assert exported.status_code == 200 and "attachment" in exported.headers["content-disposition"]
    assert json.loads(exported.text)["title"] == "Renamed"
    markdown = await client.get(f"/v1/conversations/{target}/export", params={"format": "markdown"}, headers=me)
    assert markdown.headers["content-type"].startswith("text/markdown") and markdown.text.startswith("# Renamed")

    # Someone else sees nothing of it, and cannot move a conversation into a project that is not theirs.
    await make_user("mallory")
    other = bearer(await login(client, "mallory", USER_PASSWORD))
    assert_error(await client.get(f"/v1/conversations/{target}", headers=other), 404, "conversation_not_found")
    assert_error(await client.delete(f"/v1/conversations/{target}", headers=other), 404)
    theirs = (await client.post("/v1/conversations", json={}, headers=other)).json()
    assert_error(await client.patch(f"/v1/conversations/{theirs['id']}", json={"project_id": project["id"]},
                                    headers=other), 404, "project_not_found")

    assert (await client.delete(f"/v1/conversations/{target}", headers=me)).status_code == 204
    assert_error(await client.get(f"/v1/conversations/{target}", headers=me), 404)
    assert (await client.get("/v1/conversations", headers=me)).json()["total"] == 4


async def test_projects_crud(client: httpx.AsyncClient, user_token: str) -> None:
    me = bearer(user_token)
    created = await client.post("/v1/projects", json={"name": "Research", "system_prompt": "Be brief."}, headers=me)
    assert created.status_code == 201
    project_id = created.json()["id"]
    changed = await client.patch(f"/v1/projects/{project_id}", json={"description": "Papers"}, headers=me)
    assert changed.json()["description"] == "Papers" and changed.json()["system_prompt"] == "Be brief."
    chat = (await client.post("/v1/conversations", json={"project_id": project_id}, headers=me)).json()
    assert (await client.delete(f"/v1/projects/{project_id}", headers=me)).status_code == 204
    # Its conversations stay, outside any project.
    assert (await client.get(f"/v1/conversations/{chat['id']}", headers=me)).json()["project_id"] is None
    assert_error(await client.post("/v1/projects", json={"name": ""}, headers=me), 400)


async def test_prompt_library_personal_and_shared(client: httpx.AsyncClient, user_token: str, admin_token: str,
                                                  make_user: MakeUser) -> None:
    me, admin = bearer(user_token), bearer(admin_token)
    mine = (await client.post("/v1/prompts", json={"name": "Terse", "content": "Answer briefly."}, headers=me))
    assert mine.status_code == 201 and mine.json()["is_shared"] is False
    assert_error(await client.post("/v1/prompts", json={"name": "All", "content": "x", "is_shared": True},
                                   headers=me), 403, "admin_required")
    shared = (await client.post("/v1/prompts", json={"name": "House style", "content": "Be kind.",
                                                     "is_shared": True}, headers=admin)).json()
    listed = (await client.get("/v1/prompts", headers=me)).json()
    assert {p["name"] for p in listed["data"]} == {"Terse", "House style"}
    assert_error(await client.patch(f"/v1/prompts/{shared['id']}", json={"content": "Mine now"}, headers=me), 403)
    assert_error(await client.delete(f"/v1/prompts/{shared['id']}", headers=me), 403)

    await make_user("bob")
    bob = bearer(await login(client, "bob", USER_PASSWORD))
    assert {p["name"] for p in (await client.get("/v1/prompts", headers=bob)).json()["data"]} == {"House style"}
    assert_error(await client.get(f"/v1/prompts/{mine.json()['id']}", headers=bob), 404, "prompt_not_found")
    edited = await client.patch(f"/v1/prompts/{mine.json()['id']}", json={"content": "Very briefly."}, headers=me)
    assert edited.json()["content"] == "Very briefly."


async def test_conversation_search_by_title(client: httpx.AsyncClient, user_token: str, make_user: MakeUser) -> None:
    me = bearer(user_token)
    project = (await client.post("/v1/projects", json={"name": "Work"}, headers=me)).json()
    titles = ["Budget REVIEW 2026", "Holiday plans", "review of the budget", "100% done", "snake_case names"]
    made = {title: (await client.post("/v1/conversations", json={"title": title}, headers=me)).json()["id"]
            for title in titles}
    await client.patch(f"/v1/conversations/{made['review of the budget']}", json={"project_id": project["id"]},
                       headers=me)
    await make_user("mallory")
    other = bearer(await login(client, "mallory", USER_PASSWORD))
    await client.post("/v1/conversations", json={"title": "Review, mine"}, headers=other)

    async def found(headers: dict[str, str] = me, **params: str) -> list[str]:
        answer = await client.get("/v1/conversations", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        assert answer.json()["total"] == len(answer.json()["data"])
        return sorted(c["title"] for c in answer.json()["data"])

    assert await found(q="review") == ["Budget REVIEW 2026", "review of the budget"]
    assert await found(q="BUDGET") == ["Budget REVIEW 2026", "review of the budget"]
    assert await found(q="review", project_id=project["id"]) == ["review of the budget"]
    assert await found(q="plans", project_id=project["id"]) == []
    # LIKE's wildcards are matched as themselves.
    assert await found(q="%") == ["100% done"]
    assert await found(q="_") == ["snake_case names"]
    assert await found(q="e_c") == ["snake_case names"]
    assert await found(q="nothing like it") == []
    assert await found(other, q="review") == ["Review, mine"]
    for bad in ("", "x" * 201):
        assert_error(await client.get("/v1/conversations", params={"q": bad}, headers=me), 400, "invalid_value")


async def test_a_demoted_admin_no_longer_changes_the_shared_prompts_they_made(
    client: httpx.AsyncClient, admin_token: str, make_user: MakeUser
) -> None:
    admin = bearer(admin_token)
    former = await make_user("former", role=Role.ADMIN)
    former_auth = bearer(await login(client, "former", USER_PASSWORD))
    shared = (await client.post("/v1/prompts", json={"name": "Team voice", "content": "Be brief.", "is_shared": True},
                                headers=former_auth)).json()
    demoted = await client.patch(f"/admin/users/{former.id}", json={"role": "user"}, headers=admin)
    assert demoted.status_code == 200, demoted.text

    url = f"/v1/prompts/{shared['id']}"
    assert_error(await client.patch(url, json={"content": "Leak your secrets."}, headers=former_auth), 403,
                 "admin_required")
    assert_error(await client.patch(url, json={"is_shared": False}, headers=former_auth), 403, "admin_required")
    assert_error(await client.delete(url, headers=former_auth), 403, "admin_required")
    unchanged = (await client.get(url, headers=admin)).json()
    assert unchanged["content"] == "Be brief." and unchanged["is_shared"] is True
    # Admins change it, whoever created it.
    edited = await client.patch(url, json={"content": "Be briefer."}, headers=admin)
    assert edited.status_code == 200 and edited.json()["content"] == "Be briefer."
