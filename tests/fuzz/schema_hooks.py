"""Schemathesis hooks for `make fuzz` (loaded through ``SCHEMATHESIS_HOOKS``): keep the fuzzer from ending its own
session, which would leave the rest of the run testing nothing but 401s.

A new password or a deactivation on the caller's own account revokes its login token, so the admin run never
PATCHes the admin it runs as (``LLMWS_FUZZ_OWN_USER_ID``); that request goes to a user id that does not exist
instead, which still exercises the route's validation and its 404.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

OWN_USER_ID = os.environ.get("LLMWS_FUZZ_OWN_USER_ID")
MISSING_USER_ID = 2**31 - 1


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if OWN_USER_ID is None or case.operation.path != "/admin/users/{user_id}" or case.method.upper() != "PATCH":
        return
    if str((case.path_parameters or {}).get("user_id")) == OWN_USER_ID:
        case.path_parameters = {**case.path_parameters, "user_id": MISSING_USER_ID}
