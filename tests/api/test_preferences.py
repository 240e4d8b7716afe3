"""The caller's own preferences: a whole object replaced by PUT, read back at once, validated without changing
what was stored."""

from __future__ import annotations

import httpx

from tests.api.conftest import MakeUser, assert_error
from tests.support.access import USER_PASSWORD, bearer, login

NOTHING = {"default_model": None, "temperature": None, "max_tokens": None, "top_p": None, "system_prompt_id": None}


async def test_preferences_round_trip_per_user(client: httpx.AsyncClient, user_token: str, admin_token: str,
                                               make_user: MakeUser) -> None:
    me = bearer(user_token)
    assert (await client.get("/auth/me/preferences", headers=me)).json() == NOTHING
    prompt = (await client.post("/v1/prompts", json={"name": "Terse", "content": "Be brief."}, headers=me)).json()
    wanted = {"default_model": "tiny-chat", "temperature": 0.7, "max_tokens": 512, "top_p": 0.9,
              "system_prompt_id": prompt["id"]}
    saved = await client.put("/auth/me/preferences", json=wanted, headers=me)
    assert saved.status_code == 200 and saved.json() == wanted
    assert (await client.get("/auth/me/preferences", headers=me)).json() == wanted
    # The same account through an API key (another cached principal) sees them too.
    key = (await client.post("/v1/keys", json={"name": "k"}, headers=me)).json()["key"]
    assert (await client.get("/auth/me/preferences", headers=bearer(key))).json() == wanted

    # PUT replaces the whole object: what is left out becomes null.
    replaced = await client.put("/auth/me/preferences", json={"temperature": 0}, headers=bearer(key))
    assert replaced.json() == NOTHING | {"temperature": 0.0}
    assert (await client.get("/auth/me/preferences", headers=me)).json() == NOTHING | {"temperature": 0.0}

    # Each account has its own; a shared prompt may be chosen, someone else's private one may not.
    await make_user("bob")
    bob = bearer(await login(client, "bob", USER_PASSWORD))
    assert (await client.get("/auth/me/preferences", headers=bob)).json() == NOTHING
    assert_error(await client.put("/auth/me/preferences", json={"system_prompt_id": prompt["id"]}, headers=bob),
                 400, "prompt_not_found")
    shared = (await client.post("/v1/prompts", json={"name": "House", "content": "Be kind.", "is_shared": True},
                                headers=bearer(admin_token))).json()
    chosen = await client.put("/auth/me/preferences", json={"system_prompt_id": shared["id"]}, headers=bob)
    assert chosen.status_code == 200 and chosen.json()["system_prompt_id"] == shared["id"]
    assert (await client.get("/auth/me/preferences", headers=me)).json() == NOTHING | {"temperature": 0.0}

    # Other account routes still answer as before.
    assert (await client.get("/auth/me", headers=me)).json()["username"] == "alice"


async def test_bad_preferences_are_refused_and_change_nothing(client: httpx.AsyncClient, user_token: str) -> None:
    me = bearer(user_token)
    good = {"default_model": "m", "temperature": 1.0, "max_tokens": 100, "top_p": 1.0, "system_prompt_id": None}
    assert (await client.put("/auth/me/preferences", json=good, headers=me)).status_code == 200
    for body, param, code in [
        ({"temperature": 2.5}, "temperature", "invalid_value"),
        ({"temperature": -0.1}, "temperature", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"max_tokens": 32769}, "max_tokens", "invalid_value"),
        ({"top_p": 0}, "top_p", "invalid_value"),
        ({"top_p": 1.5}, "top_p", "invalid_value"),
        ({"default_model": "x" * 201}, "default_model", "invalid_value"),
        ({"temperature": "hot"}, "temperature", "invalid_value"),
        ({"colour": "blue"}, "colour", "unknown_field"),
        ({"system_prompt_id": 999999}, "system_prompt_id", "prompt_not_found"),
    ]:
        error = assert_error(await client.put("/auth/me/preferences", json=body, headers=me), 400, code)
        assert error["param"] == param, (body, error)
    assert_error(await client.put("/auth/me/preferences", content=b"[1, 2]", headers=me
                                  | {"content-type": "application/json"}), 400)
    assert (await client.get("/auth/me/preferences", headers=me)).json() == good
    assert_error(await client.get("/auth/me/preferences"), 401)
    assert_error(await client.put("/auth/me/preferences", json=good), 401)
