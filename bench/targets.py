"""What one transaction is, per scenario: through dtmx, and the same calls made directly.

A target's `dtmx(i)` runs one transaction and returns its completion time (monotonic); its
`direct(i)` makes the same branch calls itself. Completion of a transaction that is not
waited for is the final branch call, learned from the branch process (`Waiter`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp
import orjson

from bench.load import Waiter

PAYLOAD = b'{"amount":30}'
PAYLOAD_S = PAYLOAD.decode()
HEADERS = {"Content-Type": "application/json"}
GRPC_SERVICE = "bench.Busi"
#: Direct calls per transaction (what the baseline does for one transaction).
DIRECT_CALLS = {"saga2": 2, "saga2-wait": 2, "msg1": 1, "tcc2": 4, "saga2-grpc": 2}
SCENARIOS = tuple(DIRECT_CALLS)


def new_gid() -> str:
    return "bench-" + uuid.uuid4().hex


class DtmError(RuntimeError):
    pass


async def _ok(resp: aiohttp.ClientResponse) -> None:
    body = await resp.read()
    if resp.status != 200 or b"FAILURE" in body:
        raise DtmError(f"{resp.url.path} {resp.status} {body[:200]!r}")


class HttpTarget:
    """saga2, saga2-wait, msg1 and tcc2 over DTM's HTTP API."""

    def __init__(self, scenario: str, session: aiohttp.ClientSession, branches: str,
                 servers: list[str], waiter: Waiter | None) -> None:
        self.scenario = scenario
        self.s = session
        self.b = branches
        self.servers = servers
        self.waiter = waiter

    def _server(self, i: int) -> str:
        return self.servers[i % len(self.servers)]

    async def _post(self, url: str, body: dict[str, Any]) -> None:
        async with self.s.post(url, data=orjson.dumps(body), headers=HEADERS) as r:
            await _ok(r)

    async def _branch(self, url: str, gid: str, tt: str, bid: str, op: str) -> None:
        params = {"gid": gid, "trans_type": tt, "branch_id": bid, "op": op}
        async with self.s.post(url, params=params, data=PAYLOAD, headers=HEADERS) as r:
            await _ok(r)

    async def _until_done(self, gid: str, submit: Any) -> float:
        assert self.waiter is not None
        fut = self.waiter.expect(gid)
        try:
            await submit
            return await fut
        finally:
            self.waiter.forget(gid)

    async def dtmx(self, i: int) -> float:
        gid = new_gid()
        srv = self._server(i)
        b = self.b
        if self.scenario in ("saga2", "saga2-wait"):
            wait = self.scenario == "saga2-wait"
            body = {
                "gid": gid, "trans_type": "saga", "wait_result": wait,
                "steps": [{"action": f"{b}/b/a1", "compensate": f"{b}/b/c1"},
                          {"action": f"{b}/fin/1/a2", "compensate": f"{b}/b/c2"}],
                "payloads": [PAYLOAD_S, PAYLOAD_S],
            }
            if wait:
                await self._post(f"{srv}/submit", body)
                return time.monotonic()
            return await self._until_done(gid, self._post(f"{srv}/submit", body))
        if self.scenario == "msg1":
            body = {"gid": gid, "trans_type": "msg", "query_prepared": f"{b}/b/qp",
                    "steps": [{"action": f"{b}/fin/1/m"}], "payloads": [PAYLOAD_S]}
            return await self._until_done(gid, self._msg(srv, body))
        if self.scenario == "tcc2":
            return await self._until_done(gid, self._tcc(srv, gid))
        raise ValueError(self.scenario)

    async def _msg(self, srv: str, body: dict[str, Any]) -> None:
        await self._post(f"{srv}/prepare", body)  # then the local transaction, then submit
        await self._post(f"{srv}/submit", body)

    async def _tcc(self, srv: str, gid: str) -> None:
        b = self.b
        await self._post(f"{srv}/prepare", {"gid": gid, "trans_type": "tcc"})
        for bid in ("01", "02"):
            await self._post(f"{srv}/registerBranch", {
                "gid": gid, "trans_type": "tcc", "branch_id": bid, "data": PAYLOAD_S,
                "try": f"{b}/b/t", "confirm": f"{b}/fin/2/c", "cancel": f"{b}/b/x"})
            await self._branch(f"{b}/b/t", gid, "tcc", bid, "try")
        await self._post(f"{srv}/submit", {"gid": gid, "trans_type": "tcc"})

    async def direct(self, i: int) -> float:
        gid = new_gid()
        b = self.b
        if self.scenario in ("saga2", "saga2-wait"):
            await self._branch(f"{b}/b/a1", gid, "saga", "01", "action")
            await self._branch(f"{b}/b/a2", gid, "saga", "02", "action")
        elif self.scenario == "msg1":
            await self._branch(f"{b}/b/m", gid, "msg", "01", "action")
        elif self.scenario == "tcc2":
            for bid in ("01", "02"):
                await self._branch(f"{b}/b/t", gid, "tcc", bid, "try")
            for bid in ("02", "01"):
                await self._branch(f"{b}/b/c", gid, "tcc", bid, "confirm")
        return time.monotonic()

    async def query_status(self, gid: str) -> str | None:
        async with self.s.get(f"{self.servers[0]}/query", params={"gid": gid}) as r:
            data = orjson.loads(await r.read())
        t = data.get("transaction")
        return t["status"] if t else None


class GrpcTarget:
    """saga2-grpc: submit over DTM's gRPC API, branches on a grpc.aio server."""

    def __init__(self, branch_target: str, servers: list[str], waiter: Waiter,
                 query_http: str) -> None:
        import grpc.aio

        from dtmx.api.proto import dtmgimp_pb2_grpc

        self.b = branch_target
        self.waiter = waiter
        self.query_http = query_http
        self._channels = [grpc.aio.insecure_channel(t) for t in servers]
        self._stubs = [dtmgimp_pb2_grpc.DtmStub(c) for c in self._channels]
        self._bch = grpc.aio.insecure_channel(branch_target)
        self._a1 = self._bch.unary_unary(f"/{GRPC_SERVICE}/A1")
        self._a2 = self._bch.unary_unary(f"/{GRPC_SERVICE}/A2")

    async def dtmx(self, i: int) -> float:
        from dtmx.api.proto import dtmgimp_pb2

        gid = new_gid()
        u = f"{self.b}/{GRPC_SERVICE}"
        steps = [{"action": f"{u}/A1", "compensate": f"{u}/C1"},
                 {"action": f"{u}/Fin1_A2", "compensate": f"{u}/C2"}]
        req = dtmgimp_pb2.DtmRequest(Gid=gid, TransType="saga",
                                     Steps=orjson.dumps(steps).decode(),
                                     BinPayloads=[PAYLOAD, PAYLOAD])
        fut = self.waiter.expect(gid)
        try:
            await self._stubs[i % len(self._stubs)].Submit(req)
            return await fut
        finally:
            self.waiter.forget(gid)

    async def direct(self, i: int) -> float:
        gid = new_gid()
        for call, bid in ((self._a1, "01"), (self._a2, "02")):
            md = (("dtm-gid", gid), ("dtm-trans_type", "saga"), ("dtm-branch_id", bid),
                  ("dtm-op", "action"))
            await call(PAYLOAD, metadata=md)
        return time.monotonic()

    async def close(self) -> None:
        for c in [*self._channels, self._bch]:
            await c.close()


async def sample_check(session: aiohttp.ClientSession, server: str, gids: list[str],
                       n: int = 30, timeout: float = 10.0) -> dict[str, int]:
    """Query a spread of completed gids; each must reach `succeed` (polled, bounded)."""
    pick = gids[:: max(1, len(gids) // n)][:n] if gids else []
    ok = 0
    deadline = time.monotonic() + timeout
    for gid in pick:
        while True:
            async with session.get(f"{server}/query", params={"gid": gid}) as r:
                t = orjson.loads(await r.read()).get("transaction")
            if t and t["status"] == "succeed":
                ok += 1
                break
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
    return {"checked": len(pick), "succeed": ok}
