"""The transport-free service: what every HTTP route and gRPC method does.

The HTTP and gRPC adapters parse their input into these calls and map `DtmxError`s to their
own results; nothing here knows about either transport. Writes to transactions go through
the engine; reads and topic (KV) changes go to the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from dtmx import topics
from dtmx.core.branch_policy import BranchPolicy, refuse_denied
from dtmx.core.models import KV, Branch, CallRecord, ScanFilter, Transaction
from dtmx.core.msg import TOPIC_PREFIX
from dtmx.core.request import Registration, TransRequest
from dtmx.engine import Engine
from dtmx.errors import NotFound
from dtmx.stores.base import Store

#: registerBranch fields that are branch URLs (what core.tcc.gen_registered calls)
_BRANCH_URL_KEYS = ("confirm", "cancel", "url")


class Service:
    """DTM's server API over one engine (writes) and its store (reads, topics)."""

    def __init__(
        self, *, engine: Engine, new_gid: Callable[[], str], policy: BranchPolicy | None = None
    ) -> None:
        self.engine = engine
        #: where branch URLs may point; checked here as they enter (and again on connect)
        self.policy = policy or BranchPolicy()
        self.store: Store = engine.store
        self.clock = engine.clock
        self._new_gid = new_gid

    def _check_urls(self, req: TransRequest) -> None:
        """BadRequest naming the first step URL or query_prepared the policy refuses
        (topic:// steps name topics; their subscribers were checked on subscribe)."""
        urls = [u for step in req.steps for u in step.values()
                if not u.startswith(TOPIC_PREFIX)]
        refuse_denied(self.policy, [req.query_prepared, *urls])

    async def new_gid(self) -> str:
        """A fresh, unique gid for a client to start a transaction with."""
        return self._new_gid()

    # ---- transactions -----------------------------------------------------------------
    async def prepare(self, req: TransRequest) -> None:
        """Store a msg/TCC/XA transaction as prepared (idempotent while prepared)."""
        self._check_urls(req)
        await self.engine.prepare(req)

    async def submit(self, req: TransRequest) -> None:
        """Submit a transaction and start it; with wait_result, answer once it finished
        (Failure unless it succeeded). Submitting a submitted one again answers success."""
        self._check_urls(req)
        await self.engine.submit(req)

    async def abort(self, req: TransRequest) -> None:
        """Roll a prepared TCC/XA back (cancels/rollbacks run), or fail a prepared msg."""
        await self.engine.abort(req)

    async def force_stop(self, gid: str) -> None:
        """Fail an unfinished transaction now (no further branch calls)."""
        await self.engine.force_stop(gid)

    async def reset_next_cron_time(self, gid: str) -> None:
        """Make an unfinished transaction due now. A finished one is left as it is and
        answers success too, as in DTM (whose admin UI offers the button for every
        transaction); an unknown gid is NotFound."""
        if await self.engine.reset_next_cron_time(gid):
            return
        if await self.store.get(gid=gid) is None:
            raise NotFound(f"no transaction with gid {gid}")

    async def reset_cron_time(self, *, timeout: float, limit: int) -> tuple[int, bool]:
        """Make transactions due more than `timeout` seconds from now due now (at most
        `limit`); returns how many, and whether more remain."""
        return await self.engine.reset_cron_time(after=timeout, limit=limit)

    async def register_branch(self, reg: Registration) -> None:
        """Register a TCC/XA branch (or record a workflow step) while the transaction is
        prepared; Failure if it is not, DuplicateBranch (DuplicateProgress for a workflow)
        if the branch op exists, BadRequest if the gid is another type."""
        refuse_denied(self.policy, (reg.urls.get(k, "") for k in _BRANCH_URL_KEYS))
        await self.engine.register_branch(reg)

    async def prepare_workflow(self, req: TransRequest) -> tuple[Transaction, list[Branch]]:
        """Store a workflow as prepared, or find the stored one; return it with its recorded
        steps (DTM's DtmProgressesReply). Its callback (query_prepared) must be allowed by
        the branch policy: the server calls it to resume the workflow."""
        self._check_urls(req)
        return await self.engine.prepare_workflow(req)

    # ---- reading ----------------------------------------------------------------------
    async def query(self, gid: str
                    ) -> tuple[Transaction | None, list[Branch], list[CallRecord]]:
        """A transaction, its branches and its call history (the two read together);
        (None, [], []) if there is none."""
        trans = await self.store.get(gid=gid)
        if trans is None:
            return None, [], []
        branches, calls = await asyncio.gather(self.store.get_branches(gid=gid),
                                               self.store.get_calls(gid=gid))
        return trans, branches, calls

    async def all(
        self, *, gid: str, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        """One transaction by gid, or a page of them (newest first) and the next position."""
        if gid:
            trans = await self.store.get(gid=gid)
            return ([trans] if trans else []), ""
        return await self.store.scan(position=position, limit=limit, filters=filters)

    # ---- topics and kv ----------------------------------------------------------------
    async def subscribe(self, topic: str, url: str, remark: str) -> None:
        """Add a subscriber URL to a msg topic (Failure if it already subscribes)."""
        refuse_denied(self.policy, [url])
        await topics.subscribe(self.store, topic=topic, url=url, remark=remark,
                               now=self.clock.now())

    async def unsubscribe(self, topic: str, url: str) -> None:
        """Remove a subscriber URL from a topic (NotFound if either is unknown)."""
        await topics.unsubscribe(self.store, topic=topic, url=url, now=self.clock.now())

    async def delete_topic(self, topic: str) -> None:
        """Delete a topic with its subscribers (NotFound if unknown)."""
        if not await self.store.kv_delete(cat=topics.TOPICS, key=topic):
            raise NotFound(f"no such topic: {topic}")

    async def scan_kv(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        """A page of KV entries of one category and the next position."""
        return await self.store.kv_scan(cat=cat, position=position, limit=limit)

    async def query_kv(self, *, cat: str, key: str) -> list[KV]:
        """The KV entry (cat, key), as a list of zero or one."""
        kv = await self.store.kv_find(cat=cat, key=key)
        return [kv] if kv else []

    async def close(self) -> None:
        """Stop in-flight runs; their leases lapse and the poller resumes them later."""
        await self.engine.close()
