"""Run by test_wheel.py with the SDK-only venv's Python (no clone, no tests package):
a branch service on aiohttp.web, a saga submitted with wait_result through the installed
SDK against the server from the wheel, checked through a typed query."""

from __future__ import annotations

import asyncio
import importlib.util
import sys

from aiohttp import web

from dtmx.client import DtmClient, Status, TransactionFailed


async def main(server: str, port: int) -> None:
    calls: list[str] = []

    async def branch(request: web.Request) -> web.Response:
        calls.append(request.match_info["name"])
        if request.match_info["name"] == "refuse":
            return web.json_response({"dtm_result": "FAILURE", "message": "no"}, status=409)
        return web.json_response({"dtm_result": "SUCCESS"})

    app = web.Application()
    app.router.add_route("*", "/{name}", branch)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with DtmClient(server) as client:
            gid = await client.new_gid()
            saga = client.saga(gid).add(f"{base}/out", f"{base}/out_revert", {"amount": 30})
            saga.add(f"{base}/in", f"{base}/in_revert", {"amount": 30})
            saga.wait_result = True
            await saga.submit()
            state = await client.query(gid)
            assert state is not None and state.status is Status.SUCCEED, state
            assert calls == ["out", "in"], calls

            gid = await client.new_gid()
            saga = client.saga(gid).add(f"{base}/out", f"{base}/out_revert", {"amount": 30})
            saga.add(f"{base}/refuse", f"{base}/refuse_revert", {})
            saga.wait_result = True
            try:
                await saga.submit()
            except TransactionFailed:
                pass
            else:
                raise AssertionError("a refused step must fail the saga")
            state = await client.query(gid)
            assert state is not None and state.status is Status.FAILED, state
    finally:
        await runner.cleanup()
    # the SDK alone: none of the server's dependencies came with it
    missing = [m for m in ("yaml", "httptools", "grpc") if importlib.util.find_spec(m)]
    assert not missing, missing
    print("sdk saga ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
