"""A trace of the hops one run made: MCP client -> MCP server -> Entra (OBO) -> Graph, drawn as a sequence diagram.

The workbook records the hops itself, with httpx event hooks, the same way on the emulator and on a tenant:

* the notebook's MCP client: `Client(trace.mcp_transport(server.mcp_url), auth=...)`;
* the server's OBO pool (`OboCache`) and its Graph client (`GraphApi`): `start_workbook_server(target, trace=trace)`.

Example::

    from obokit.trace import Trace

    trace = Trace()
    server = start_workbook_server(target, name="traced", trace=trace)
    async with Client(trace.mcp_transport(server.mcp_url), auth=oauth_for(target, account=analyst)) as client:
        trace.clear()                                   # forget the sign-in, keep the tool call
        await client.call_tool("check_group_membership", {"group_id": finance})
    trace.mermaid("check_group_membership as the analyst")   # a ```mermaid block in Jupyter

What is kept is redacted when it is recorded, so no token can leak from a trace: the method, who answered
(MCP server, Entra, Graph), the path with the *names* of its query parameters (never their values), the status;
for a token request the form fields `grant_type`, `requested_token_use` and `scope` (never `assertion`,
`client_secret` or `client_assertion`); for a token answer only the `aud` and `scp` of the access token (decoded
without verification) or Entra's `error` and AADSTS code; for a request carrying a bearer token only that token's
`aud`; for an MCP request its JSON-RPC method and tool name, and for a tool call's answer whether it is an error.

Hooks run in whichever thread sends the request (the notebook's, or the server's background thread): events
are appended under a lock. A hook never raises: what it cannot read it leaves out.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt

ROLES = {"mcp": "MCP server", "entra": "Microsoft Entra", "graph": "Microsoft Graph"}
_PARTICIPANTS = (("C", "MCP client (this notebook)"), ("S", "MCP server"), ("E", "Microsoft Entra"),
                 ("G", "Microsoft Graph"))
_ARROWS = {"mcp": ("C", "S"), "entra": ("S", "E"), "graph": ("S", "G")}  # (caller, callee) per role
_TOKEN_FIELDS = ("grant_type", "requested_token_use", "scope")  # the only form fields a trace keeps
_AADSTS = re.compile(r"AADSTS\d+")
_MERMAID_SPECIAL = re.compile(r"[#;]")  # a statement separator and mermaid's entity marker


@dataclass(frozen=True)
class TraceEvent:
    """One request or response, already redacted: nothing in it is a token, a secret or a code."""

    seq: int
    kind: str  # "request" or "response"
    role: str  # "mcp", "entra" or "graph": who was called
    method: str
    path: str  # the URL path, with the names of its query parameters only
    status: int | None = None  # responses
    details: dict[str, str] = field(default_factory=dict)

    @property
    def tool_call(self) -> bool:
        return self.details.get("rpc") == "tools/call"


def _path(url: Any) -> str:
    parts = urlsplit(str(url))
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    return parts.path + ("?" + "&".join(dict.fromkeys(names)) if names else "")


def _claims(token: str, names: tuple[str, ...]) -> dict[str, str]:
    """Only `names` of a JWT's claims, decoded without verification; nothing for an opaque token."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return {name: str(claims[name]) for name in names if name in claims}


def _bearer_aud(request: Any) -> dict[str, str]:
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer ":
        return {}
    aud = _claims(header[7:].strip(), ("aud",)).get("aud")
    return {"bearer_aud": aud} if aud else {}


def _body(message: Any) -> bytes:
    try:
        return bytes(message.content)
    except Exception:  # noqa: BLE001 - a streamed body that was not read: nothing to show
        return b""


def _rpc(request: Any) -> dict[str, str]:
    """The JSON-RPC method of an MCP request (and the tool's name for tools/call), nothing of the arguments."""
    try:
        message = json.loads(_body(request) or b"null")
    except ValueError:
        return {}
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        return {}
    found = {"rpc": message["method"]}
    params = message.get("params")
    if message["method"] == "tools/call" and isinstance(params, dict) and isinstance(params.get("name"), str):
        found["tool"] = params["name"]
    return found


def _token_request(request: Any) -> dict[str, str]:
    if request.method != "POST" or not urlsplit(str(request.url)).path.endswith("/token"):
        return {}
    form = dict(parse_qsl(_body(request).decode("utf-8", "replace")))
    return {name: form[name] for name in _TOKEN_FIELDS if name in form}


def _token_answer(body: bytes) -> dict[str, str]:
    try:
        answer = json.loads(body or b"null")
    except ValueError:
        return {}
    if not isinstance(answer, dict):
        return {}
    if isinstance(answer.get("access_token"), str):
        return _claims(answer["access_token"], ("aud", "scp"))
    found = {"error": str(answer["error"])} if "error" in answer else {}
    codes = answer.get("error_codes")
    code = f"AADSTS{codes[0]}" if isinstance(codes, list) and codes else None
    if code is None and (match := _AADSTS.search(str(answer.get("error_description", "")))):
        code = match.group(0)
    return found | ({"aadsts": code} if code else {})


def _tool_answer(content_type: str, body: bytes) -> dict[str, str]:
    """Whether an MCP tools/call answer is a tool error (JSON or one SSE event); never the content."""
    text = body.decode("utf-8", "replace")
    payloads = [text] if content_type.startswith("application/json") else [
        line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    for payload in payloads:
        try:
            message = json.loads(payload)
        except ValueError:
            continue
        if isinstance(message, dict) and isinstance(message.get("result"), dict):
            return {"is_error": "true" if message["result"].get("isError") else "false"}
        if isinstance(message, dict) and "error" in message:
            return {"is_error": "true"}
    return {}


class Trace:
    """The redacted hops that the httpx clients given its hooks made, in the order they happened (thread-safe)."""

    def __init__(self, maxlen: int = 500) -> None:
        self._events: deque[TraceEvent] = deque(maxlen=maxlen)
        self._seq = itertools.count(1)
        self._lock = threading.Lock()

    # -- recording --------------------------------------------------------------------------
    def event_hooks(self, role: str) -> dict[str, list[Any]]:
        """`event_hooks=` for an `httpx.AsyncClient` (or httpx2's) whose requests go to `role` ("mcp", "entra", "graph")."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")

        async def on_request(request: Any) -> None:
            try:
                details = _bearer_aud(request)
                details |= _rpc(request) if role == "mcp" else _token_request(request) if role == "entra" else {}
                self._add("request", role, request.method, _path(request.url), None, details)
            except Exception:  # noqa: BLE001 - a trace never breaks the call it watches
                pass

        async def on_response(response: Any) -> None:
            try:
                request = response.request
                details: dict[str, str] = {}
                if role == "entra" and _token_request(request):
                    details = _token_answer(await response.aread())
                elif role == "mcp":
                    details = {k: v for k, v in _rpc(request).items() if k == "rpc"}
                    if details.get("rpc") == "tools/call" and response.status_code == 200:
                        # The answer of a tool call ends its stream: reading it here only waits for the tool.
                        details |= _tool_answer(response.headers.get("content-type", ""), await response.aread())
                self._add("response", role, request.method, _path(request.url), response.status_code, details)
            except Exception:  # noqa: BLE001
                pass

        return {"request": [on_request], "response": [on_response]}

    def mcp_http_client(self, **kwargs: Any) -> Any:
        """An `httpx_client_factory` for FastMCP's HTTP transport: its client, with this trace's "mcp" hooks."""
        import httpx2  # what FastMCP's transports use

        hooks = self.event_hooks("mcp")
        return httpx2.AsyncClient(**kwargs, event_hooks={"request": hooks["request"], "response": hooks["response"]})

    def mcp_transport(self, mcp_url: str) -> Any:
        """FastMCP's streamable HTTP transport to `mcp_url`, traced: pass it to `fastmcp.Client` with `auth=`."""
        from fastmcp.client.transports import StreamableHttpTransport

        return StreamableHttpTransport(mcp_url, httpx_client_factory=self.mcp_http_client)

    def _add(self, kind: str, role: str, method: str, path: str, status: int | None, details: dict[str, str]) -> None:
        with self._lock:
            self._events.append(TraceEvent(next(self._seq), kind, role, method, path, status, details))

    # -- reading ----------------------------------------------------------------------------
    @property
    def events(self) -> list[TraceEvent]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def hops(self, *, everything: bool = False) -> list[TraceEvent]:
        """The events a diagram draws: tool calls and the server's calls to Entra and Graph (`everything`: all)."""
        return [e for e in self.events if everything or e.role != "mcp" or e.tool_call]

    def mermaid_text(self, title: str | None = None, *, everything: bool = False) -> str:
        lines = ["sequenceDiagram", "    autonumber"]
        lines += [f"    participant {key} as {name}" for key, name in _PARTICIPANTS]
        if title:
            lines.append(f"    Note over C,G: {_escape(title)}")
        for event in self.hops(everything=everything):
            caller, callee = _ARROWS[event.role]
            if event.kind == "request":
                lines.append(f"    {caller}->>{callee}: {_escape(_request_label(event))}")
            else:
                lines.append(f"    {callee}-->>{caller}: {_escape(_response_label(event))}")
        return "\n".join(lines)

    def mermaid(self, title: str | None = None, *, everything: bool = False) -> "SequenceDiagram":
        """The recorded hops as a mermaid sequence diagram (rendered in JupyterLab, plain text elsewhere)."""
        return SequenceDiagram(self.mermaid_text(title, everything=everything))

    def __repr__(self) -> str:
        return f"Trace({len(self.events)} events)"


def _escape(text: str) -> str:
    return _MERMAID_SPECIAL.sub(lambda m: f"#{ord(m.group(0))};", text)


def _request_label(event: TraceEvent) -> str:
    d = event.details
    label = f"{event.method} {event.path}"
    if "rpc" in d:
        label += f" {d['rpc']}" + (f" {d['tool']}" if "tool" in d else "")
    fields = [f"{name}={d[name]}" for name in _TOKEN_FIELDS if name in d]
    if fields:
        label += "<br/>" + "<br/>".join(fields)
    if "bearer_aud" in d:
        label += f"<br/>Bearer token, aud={d['bearer_aud']}"
    return label


def _response_label(event: TraceEvent) -> str:
    d = event.details
    label = str(event.status)
    if "aud" in d or "scp" in d:
        label += f" access token, aud={d.get('aud', '?')}" + (f"<br/>scp={d['scp']}" if "scp" in d else "")
    if "error" in d or "aadsts" in d:
        label += " " + " ".join(d[k] for k in ("error", "aadsts") if k in d)
    if "is_error" in d:
        label += " tool error (isError)" if d["is_error"] == "true" else " tool result"
    return label


class SequenceDiagram:
    """A mermaid sequence diagram: a ```mermaid block in Jupyter, its text in `repr`."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_markdown_(self) -> str:
        return f"```mermaid\n{self.text}\n```"

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


__all__ = ["ROLES", "SequenceDiagram", "Trace", "TraceEvent"]
