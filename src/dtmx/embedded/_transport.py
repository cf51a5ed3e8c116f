"""The SDK's `Transport` straight into an in-process `Service`: no sockets, same rules.

Bodies go through the same parsing and checks as the HTTP API (`core.request`), and a
`DtmxError` becomes the SDK error an HTTP answer with its status and body would have
become, so a `DtmClient` behaves the same against a remote server and the embedded engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import orjson

from dtmx.api.serialize import branch_json, query_json, trans_json
from dtmx.client._errors import DtmError, error_for_response
from dtmx.client._http import BranchResponse, _text_payloads
from dtmx.core.limits import Limits
from dtmx.core.local import local_name
from dtmx.core.models import Op, Outcome, TransType
from dtmx.core.request import Verb, check_trans, parse_registration, parse_trans_body
from dtmx.errors import DtmxError
from dtmx.invoke.base import BranchCall
from dtmx.invoke.local import LocalInvoker
from dtmx.service import Service

T = TypeVar("T")

#: the HTTP status a branch answer with this outcome has (for `BranchResponse`)
_STATUS = {Outcome.SUCCESS: 200, Outcome.FAILURE: 409, Outcome.ONGOING: 425,
           Outcome.ERROR: 500}


async def _mapped(call: Callable[[], Awaitable[T]]) -> T:
    try:
        return await call()
    except DtmxError as e:
        err = error_for_response(e.http_status, orjson.dumps(e.body()).decode())
        raise (err or DtmError(e.message)) from None


class EmbeddedTransport:
    """A `Transport` (and local branch caller) over the embedded engine's `Service`."""

    def __init__(self, service: Service, local: LocalInvoker, *, limits: Limits,
                 request_timeout: float) -> None:
        self.service = service
        self.local = local
        self.limits = limits
        self.request_timeout = request_timeout
        self.server = ""

    def _req(self, body: Mapping[str, Any], verb: Verb) -> Any:
        try:
            return check_trans(parse_trans_body(dict(_text_payloads(body))), verb, self.limits)
        except DtmxError as e:
            raise error_for_response(e.http_status, orjson.dumps(e.body()).decode()) or \
                DtmError(e.message) from None

    async def new_gid(self) -> str:
        """A fresh gid."""
        return await self.service.new_gid()

    async def prepare(self, body: Mapping[str, Any]) -> None:
        """Store the transaction as prepared."""
        req = self._req(body, Verb.PREPARE)
        await _mapped(lambda: self.service.prepare(req))

    async def submit(self, body: Mapping[str, Any]) -> None:
        """Submit (and with wait_result, run to the end before answering)."""
        req = self._req(body, Verb.SUBMIT)
        await _mapped(lambda: self.service.submit(req))

    async def abort(self, body: Mapping[str, Any]) -> None:
        """Abort a prepared transaction."""
        req = self._req(body, Verb.ABORT)
        await _mapped(lambda: self.service.abort(req))

    async def prepare_workflow(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Store a workflow as prepared (or find it), answered as the HTTP API answers."""
        req = self._req(body, Verb.PREPARE_WORKFLOW)
        trans, branches = await _mapped(lambda: self.service.prepare_workflow(req))
        return {"transaction": trans_json(trans), "progresses": [branch_json(b) for b in branches]}

    async def register_branch(self, body: Mapping[str, str]) -> None:
        """Register a TCC/XA branch."""
        await _mapped(lambda: self.service.register_branch(parse_registration(body)))

    async def query(self, gid: str) -> dict[str, Any]:
        """The transaction, its branches and its calls, as the HTTP query answers them."""
        return query_json(*await _mapped(lambda: self.service.query(gid)))

    async def call_local(self, url: str, *, gid: str, trans_type: str, branch_id: str,
                         op: Op, data: str | bytes | None,
                         headers: Mapping[str, str]) -> BranchResponse:
        """Call a local function as the SDK calls a branch itself (a TCC's try)."""
        payload = data.encode() if isinstance(data, str) else (data or b"")
        res = await self.local.call(BranchCall(
            url=url, gid=gid, trans_type=TransType(trans_type), branch_id=branch_id,
            op=op, payload=payload, headers=dict(headers),
            timeout=self.request_timeout))
        if res.outcome is Outcome.SUCCESS:
            return BranchResponse(200, b'{"dtm_result":"SUCCESS"}')
        body = {"dtm_result": res.outcome.value.upper(), "message": res.detail}
        if res.outcome is Outcome.ERROR:
            body = {"message": res.detail or f"local function {local_name(url)} failed"}
        return BranchResponse(_STATUS[res.outcome], orjson.dumps(body))

    async def close(self) -> None:
        """Nothing to release: the engine belongs to `Embedded`."""
