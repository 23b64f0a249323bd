"""Graph endpoints about people and content: users, groups, /me, transitiveMemberOf, SharePoint sites."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .errors import GraphError
from .graph_core import Caller, GraphContext, RouteEntry, not_found, route
from .ids import SHAREPOINT_HOST
from .odata import apply_filter, parse_top

USER_READ_SELF = {"User.Read", "User.ReadWrite", "User.ReadBasic.All", "User.Read.All", "Directory.Read.All"}
USERS_READ = {"User.ReadBasic.All", "User.Read.All", "Directory.Read.All"}
GROUPS_READ = {"Group.Read.All", "GroupMember.Read.All", "Directory.Read.All"}
MEMBERSHIP_READ = {"User.Read", "GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"}
SITES_READ = {"Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All"}
USER_FIELDS = ["businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
               "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id"]
GROUP_FIELDS = ["id", "displayName", "description", "mailEnabled", "mailNickname", "securityEnabled",
                "groupTypes", "mail", "createdDateTime"]


def _user_view(user: dict[str, Any]) -> dict[str, Any]:
    return {k: user.get(k) for k in USER_FIELDS}


def _group_view(group: dict[str, Any]) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.group", **{k: group.get(k) for k in GROUP_FIELDS}}


def _eventual(request: Request) -> bool:
    return request.headers.get("consistencylevel", "").lower() == "eventual"


class PeopleEndpoints:
    """Handlers for users, groups, the signed-in user and SharePoint sites."""

    def __init__(self, ctx: GraphContext) -> None:
        self.ctx = ctx
        self.store = ctx.store

    def _user(self, key: str) -> dict[str, Any]:
        user = self.store.get("users", key) or self.ctx.directory.user_by_upn(key)
        if user is None:
            raise not_found(key)
        return user

    async def me(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        user = caller.require_user()
        caller.require(delegated=USER_READ_SELF, application=set())
        return self.ctx.entity(_user_view(user), "users/$entity", request)

    async def list_users(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=USERS_READ, application={"User.Read.All", "Directory.Read.All"})
        users = apply_filter([_user_view(u) for u in self.store.all("users")], request.query_params.get("$filter"))
        return self.ctx.collection(sorted(users, key=lambda u: u["userPrincipalName"]), "users", request)

    async def get_user(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=USERS_READ, application={"User.Read.All", "Directory.Read.All"})
        return self.ctx.entity(_user_view(self._user(params["key"])), "users/$entity", request)

    async def list_groups(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GROUPS_READ, application=GROUPS_READ)
        groups = apply_filter([_group_view(g) for g in self.store.all("groups")], request.query_params.get("$filter"))
        return self.ctx.collection(sorted(groups, key=lambda g: g["displayName"]), "groups", request)

    async def get_group(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GROUPS_READ, application=GROUPS_READ)
        group = self.store.get("groups", params["gid"])
        if group is None:
            raise not_found(params["gid"])
        return self.ctx.entity(_group_view(group), "groups/$entity", request)

    async def group_members(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        caller.require(delegated=GROUPS_READ, application=GROUPS_READ)
        group = self.store.get("groups", params["gid"])
        if group is None:
            raise not_found(params["gid"])
        members = []
        for mid in group.get("_members", []):
            if (user := self.store.get("users", mid)) is not None:
                members.append({"@odata.type": "#microsoft.graph.user", **_user_view(user)})
            elif (child := self.store.get("groups", mid)) is not None:
                members.append(_group_view(child))
        return self.ctx.collection(members, "directoryObjects", request)

    async def my_memberships(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        """/me/memberOf and /me/transitiveMemberOf, with the advanced-query rules of Graph."""
        user = caller.require_user()
        caller.require(delegated=MEMBERSHIP_READ, application=set())
        q = request.query_params
        eventual = _eventual(request)
        advanced = eventual and q.get("$count", "").lower() == "true"
        if params.get("count_segment"):
            if not eventual:
                raise GraphError(400, "Request_BadRequest", "$count is not currently supported.")
        elif (q.get("$filter") or q.get("$orderby")) and not (advanced or (eventual and params.get("kind") == "memberOf")):
            # On transitiveMemberOf, $filter/$orderby are advanced queries: ConsistencyLevel: eventual AND
            # $count=true (microsoft-graph-docs-contrib concepts/aad-advanced-queries.md)
            raise GraphError(400, "Request_UnsupportedQuery", "The specified filter to the reference property query is currently not supported.")
        elif params.get("cast") and params.get("kind") == "transitiveMemberOf" and not advanced:
            # So is an OData cast on transitiveMemberOf (same table). The message Graph gives is not public:
            # this is the text of its other unsupported reference-property queries.
            raise GraphError(400, "Request_UnsupportedQuery", "The specified filter to the reference property query is currently not supported.")
        if q.get("$search") and not eventual:
            raise GraphError(400, "Request_UnsupportedQuery", "Request with $search query parameter only works through MSGraph with a special request header: 'ConsistencyLevel: eventual'")
        directory = self.ctx.directory
        if params.get("kind") == "transitiveMemberOf":
            group_ids = directory.user_group_ids(user["id"])
        else:
            group_ids = [g["id"] for g in self.store.all("groups") if user["id"] in g.get("_members", [])]
        groups = [_group_view(g) for g in (self.store.get("groups", gid) for gid in group_ids) if g]
        groups = apply_filter(sorted(groups, key=lambda g: g["displayName"]), q.get("$filter"))
        if params.get("count_segment"):
            return Response(str(len(groups)), media_type="text/plain;charset=utf-8")
        top = parse_top(q.get("$top"))
        return self.ctx.collection(groups[:top] if top else groups, "groups" if params.get("cast") else "directoryObjects", request, count=advanced)

    async def get_site(self, request: Request, caller: Caller, params: dict[str, str]) -> Response:
        """/sites/{host}:/sites/{path}[:], /sites/{site-id} and /sites/root, checked against the caller's access."""
        caller.require(delegated=SITES_READ, application={"Sites.Read.All", "Sites.ReadWrite.All", "Sites.FullControl.All"})
        site = self._find_site(params["ref"])
        if site is None:
            raise GraphError(404, "itemNotFound", "Item not found")
        if caller.user is not None:
            groups = set(self.ctx.directory.user_group_ids(caller.user["id"]))
            if not groups & set(site.get("_memberGroups", [])):
                raise GraphError(403, "accessDenied", "Access denied")
        return self.ctx.entity(site, "sites/$entity", request)

    def _find_site(self, ref: str) -> dict[str, Any] | None:
        ref = ref.rstrip(":")
        sites = self.store.all("sites")
        if ref in ("root", SHAREPOINT_HOST):
            return None  # the demo tenant has no root site content the workbook uses
        if ":" in ref:
            host, _, path = ref.partition(":")
            if host.lower() != SHAREPOINT_HOST:
                return None
            path = "/" + path.strip("/")
            return next((s for s in sites if s["_path"].lower() == path.lower()), None)
        return next((s for s in sites if s["id"] == ref), None)

    def routes(self) -> list[RouteEntry]:
        membership = r"/me/(?P<kind>transitiveMemberOf|memberOf)(?:/(?P<cast>(?:microsoft\.)?graph\.group))?(?:/(?P<count_segment>\$count))?"
        return [
            route("GET", "/me", self.me),
            route("GET", membership, self.my_memberships),
            route("GET", "/users", self.list_users),
            route("GET", "/users/(?P<key>[^/]+)", self.get_user),
            route("GET", "/groups", self.list_groups),
            route("GET", "/groups/(?P<gid>[^/]+)", self.get_group),
            route("GET", "/groups/(?P<gid>[^/]+)/members", self.group_members),
            route("GET", "/sites/(?P<ref>.+)", self.get_site),
        ]
