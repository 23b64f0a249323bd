"""Simulated Conditional Access: policies that require multifactor authentication for a user at a resource.

Entra evaluates Conditional Access when it issues a token for the resource. An On-Behalf-Of exchange for a
user whose sign-in lacks MFA fails with AADSTS50076 (`invalid_grant`, `suberror: basic_action`) and a `claims` challenge the
middle tier must hand back to the client (which signs the user in again with those claims).
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from . import errors
from .ids import GRAPH_APP_ID


@dataclass(frozen=True)
class MfaPolicy:
    id: str
    user_id: str
    resource_app_id: str


class ConditionalAccess:
    """The tenant's MFA policies (in memory; set from tests or notebooks with `require_mfa`)."""

    def __init__(self) -> None:
        self._policies: dict[str, MfaPolicy] = {}
        self._lock = threading.Lock()

    def require_mfa(self, user_id: str, resource_app_id: str = GRAPH_APP_ID) -> str:
        """Add a policy: tokens for `resource_app_id` need MFA when `user_id` signs in. Returns its id."""
        policy = MfaPolicy(str(uuid.uuid4()), user_id, resource_app_id)
        with self._lock:
            self._policies[policy.id] = policy
        return policy.id

    def remove(self, policy_id: str) -> None:
        with self._lock:
            self._policies.pop(policy_id, None)

    def clear(self) -> None:
        with self._lock:
            self._policies.clear()

    def check(self, claims: dict[str, Any], resource_app_id: str) -> None:
        """AADSTS50076 with a claims challenge when a policy applies and the sign-in had no MFA."""
        if "mfa" in (claims.get("amr") or []):
            return
        with self._lock:
            applying = [p.id for p in self._policies.values()
                        if p.user_id == claims.get("oid") and p.resource_app_id == resource_app_id]
        if applying:
            challenge = {"access_token": {"capolids": {"essential": True, "values": applying}}}
            raise errors.mfa_required(resource_app_id, json.dumps(challenge, separators=(",", ":")))
