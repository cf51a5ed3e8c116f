"""A raw-protocol workflow client for tests: the calls DTM's Go workflow client makes, by hand.

It speaks exactly what `client/workflow/rpc.go` sends (prepareWorkflow with the TransBase,
registerBranch with op/status, submit with req_extra), over HTTP or gRPC, so the server's
workflow mode is tested without any SDK. Both drivers answer prepareWorkflow as a
`DtmProgressesReply`; the HTTP one parses the JSON body the way the Go client does
(protojson, unknown fields discarded), so a body the Go client could not read fails here.

    d = HttpWorkflow(server.url)            # or GrpcWorkflow(f"127.0.0.1:{server.grpc_port}")
    reply = d.prepare(gid, "transfer", b'{"amount":30}', callback=busi.url + "/Workflow")
    d.register(gid, "01", "action", "succeed", b"out ok")
    d.submit(gid, "succeed", result=b"done")
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import grpc
import orjson
import requests
from google.protobuf import json_format

from dtmx.proto import dtmgimp_pb2, dtmgimp_pb2_grpc

Progress = tuple[str, str, str, bytes]  # branch_id, op, status, data


def custom_data(name: str, data: bytes | None) -> str:
    """custom_data as the Go client marshals it ([]byte as base64, nil as null)."""
    return orjson.dumps(
        {"name": name, "data": base64.b64encode(data).decode() if data is not None else None}
    ).decode()


def progresses(reply: dtmgimp_pb2.DtmProgressesReply) -> list[Progress]:
    """The reply's recorded steps as plain tuples, in the order the server gave them."""
    return [(p.BranchID, p.Op, p.Status, bytes(p.BinData)) for p in reply.Progresses]


@dataclass
class Answer:
    """A call's outcome: HTTP status (200 ok) or gRPC code name ("OK"), and the message."""

    code: int | str
    message: str = ""


class HttpWorkflow:
    """DTM's workflow calls over HTTP (`server_url` = http://host:port/api/dtmsvr)."""

    def __init__(self, server_url: str, headers: dict[str, str] | None = None) -> None:
        self.url = server_url
        self.headers = headers or {}

    def _post(self, route: str, body: Any) -> requests.Response:
        return requests.post(f"{self.url}/{route}", json=body, headers=self.headers, timeout=15)

    def prepare_raw(self, body: dict[str, Any]) -> requests.Response:
        """POST prepareWorkflow with any body (for bad-input tests)."""
        return self._post("prepareWorkflow", body)

    def prepare(self, gid: str, name: str, data: bytes | None, *, callback: str,
                **options: Any) -> dtmgimp_pb2.DtmProgressesReply:
        """prepareWorkflow with the TransBase the Go client sends; raises on non-200."""
        body = {"gid": gid, "trans_type": "workflow", "custom_data": custom_data(name, data),
                "query_prepared": callback, "protocol": "http", "steps": None,
                "payloads": None, **options}
        r = self.prepare_raw(body)
        assert r.status_code == 200, r.text
        reply = dtmgimp_pb2.DtmProgressesReply()
        json_format.Parse(r.text, reply, ignore_unknown_fields=True)
        return reply

    def register(self, gid: str, branch_id: str, op: str, status: str,
                 data: bytes = b"") -> Answer:
        """registerBranch of one finished step (the Go client sends data as a string)."""
        r = self._post("registerBranch", {
            "gid": gid, "trans_type": "workflow", "branch_id": branch_id, "op": op,
            "status": status, "data": data.decode()})
        return Answer(r.status_code, r.text)

    def submit(self, gid: str, status: str, result: bytes = b"", reason: str = "") -> Answer:
        """submit with the final status in req_extra (result base64, as the Go client)."""
        r = self._post("submit", {"gid": gid, "trans_type": "workflow", "req_extra": {
            "status": status, "rollback_reason": reason,
            "result": base64.b64encode(result).decode()}})
        return Answer(r.status_code, r.text)


class GrpcWorkflow:
    """DTM's workflow calls over gRPC (`target` = host:port of the server's gRPC port)."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = dtmgimp_pb2_grpc.DtmStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def prepare_request(self, request: dtmgimp_pb2.DtmRequest
                        ) -> dtmgimp_pb2.DtmProgressesReply:
        """PrepareWorkflow with any request (raises grpc.RpcError)."""
        reply: dtmgimp_pb2.DtmProgressesReply = self.stub.PrepareWorkflow(request, timeout=15)
        return reply

    def prepare(self, gid: str, name: str, data: bytes | None, *, callback: str,
                retry_interval: int = 0) -> dtmgimp_pb2.DtmProgressesReply:
        return self.prepare_request(dtmgimp_pb2.DtmRequest(
            Gid=gid, TransType="workflow", CustomedData=custom_data(name, data),
            QueryPrepared=callback,
            TransOptions=dtmgimp_pb2.DtmTransOptions(RetryInterval=retry_interval)))

    def _call(self, method: Any, request: Any) -> Answer:
        try:
            method(request, timeout=15)
        except grpc.RpcError as e:
            return Answer(e.code().name, e.details() or "")  # type: ignore[attr-defined]
        return Answer("OK")

    def register(self, gid: str, branch_id: str, op: str, status: str,
                 data: bytes = b"") -> Answer:
        """RegisterBranch as the Go client sends it: op and status in Data."""
        return self._call(self.stub.RegisterBranch, dtmgimp_pb2.DtmBranchRequest(
            Gid=gid, TransType="workflow", BranchID=branch_id, BusiPayload=data,
            Data={"status": status, "op": op}))

    def submit(self, gid: str, status: str, result: bytes = b"", reason: str = "") -> Answer:
        return self._call(self.stub.Submit, dtmgimp_pb2.DtmRequest(
            Gid=gid, TransType="workflow", ReqExtra={
                "status": status, "rollback_reason": reason,
                "result": base64.b64encode(result).decode()}))


#: What each driver answers for success, a refused duplicate step, a refused submit.
OK_CODES = {HttpWorkflow: 200, GrpcWorkflow: "OK"}
DUPLICATE_CODES = {HttpWorkflow: 409, GrpcWorkflow: "ALREADY_EXISTS"}
FAILURE_CODES = {HttpWorkflow: 409, GrpcWorkflow: "ABORTED"}
