"""The 2-step saga as a DBOS Transact workflow, served over HTTP for the same clients.

`POST /saga?gid=...` runs the workflow (workflow id = gid) and answers when it finished:
step one calls branch a1, step two calls a2; if a2 fails, a1's compensation runs (the
saga's rollback). Each step is a DBOS step (checkpointed in PostgreSQL). `GET /stats`
gives the SQL statements and commits DBOS sent (counted on every SQLAlchemy engine of
the process; BEGIN is not counted).

    python -m bench.dbos_app --port P --branches http://127.0.0.1:B --db-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web

PAYLOAD = b'{"amount":30}'
_count = [0, 0]  # statements, commits


def _count_sql() -> None:
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def before(*_a: object) -> None:
        _count[0] += 1

    def commit(*_a: object) -> None:
        _count[1] += 1

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "commit", commit)


async def main(port: int, branches: str, db_url: str) -> None:
    from dbos import DBOS, DBOSConfig, SetWorkflowID

    _count_sql()
    session: aiohttp.ClientSession | None = None

    async def call(path: str, gid: str, bid: str, op: str) -> None:
        assert session is not None
        params = {"gid": gid, "trans_type": "saga", "branch_id": bid, "op": op}
        async with session.post(f"{branches}{path}", params=params, data=PAYLOAD,
                                headers={"Content-Type": "application/json"}) as r:
            body = await r.read()
            if r.status != 200 or b"FAILURE" in body:
                raise RuntimeError(f"{path}: {r.status} {body[:100]!r}")

    @DBOS.step()
    async def step(path: str, gid: str, bid: str, op: str) -> None:
        await call(path, gid, bid, op)

    @DBOS.workflow()
    async def saga(gid: str) -> str:
        await step("/b/a1", gid, "01", "action")
        try:
            await step("/b/a2", gid, "02", "action")
        except Exception:
            await step("/b/c1", gid, "01", "compensate")
            raise
        return "succeed"

    config: DBOSConfig = {"name": "bench-dtmx", "system_database_url": db_url,
                          "log_level": "WARNING", "sys_db_pool_size": 40}
    DBOS(config=config)
    DBOS.launch()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def run_saga(request: web.Request) -> web.Response:
        gid = request.query["gid"]
        with SetWorkflowID(gid):
            result = await saga(gid)
        return web.Response(text=f'{{"dtm_result":"SUCCESS","status":"{result}"}}')

    async def stats(_r: web.Request) -> web.Response:
        return web.json_response({"sql_statements": _count[0], "commits": _count[1]})

    app = web.Application()
    app.router.add_post("/saga", run_saga)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


def run() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--branches", required=True)
    p.add_argument("--db-url", required=True)
    a = p.parse_args()
    asyncio.run(main(a.port, a.branches, a.db_url))


if __name__ == "__main__":
    run()
