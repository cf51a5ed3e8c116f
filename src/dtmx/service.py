"""The transport-free service: what every HTTP route and gRPC method does.

The HTTP and gRPC adapters parse their input into these calls and map `DtmxError`s to their
own results; nothing here knows about either transport.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from dtmx.core import msg, saga, tcc
from dtmx.core.models import (
    KV,
    Branch,
    Change,
    ScanFilter,
    Status,
    Transaction,
    TransType,
)
from dtmx.core.request import TransRequest, check_gid, parse_trans_type
from dtmx.core.timing import timeout_of
from dtmx.engine import Engine
from dtmx.errors import BadRequest, DuplicateBranch, Failure, NotFound
from dtmx.stores.base import Store

log = logging.getLogger("dtmx.service")

TOPICS = "topics"
#: Transaction types that are normally prepared before they are submitted.
_PREPARED_FIRST = (TransType.MSG, TransType.TCC, TransType.XA)


class Service:
    """Transaction operations over one store and one engine."""

    def __init__(self, *, engine: Engine, new_gid: Callable[[], str]) -> None:
        self.engine = engine
        self.store: Store = engine.store
        self.clock = engine.clock
        self._new_gid = new_gid
        self._owner_prefix = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self._owner_seq = itertools.count(1)
        self._tasks: set[asyncio.Task[Transaction]] = set()

    @property
    def runs_in_flight(self) -> int:
        """Background runs started by submit/abort that have not ended yet."""
        return len(self._tasks)

    def new_owner(self) -> str:
        """A fresh owner token per claim, so even this process's stale runs lose their CAS."""
        return f"{self._owner_prefix}:{next(self._owner_seq)}"

    async def new_gid(self) -> str:
        return self._new_gid()

    # ---- creating ---------------------------------------------------------------------
    async def _new_branches(self, req: TransRequest, now: float) -> list[Branch]:
        if req.trans_type in (TransType.SAGA, TransType.MSG):
            if not req.steps:
                raise BadRequest(f"a {req.trans_type} needs at least one step")
            if len(req.payloads) != len(req.steps):
                raise BadRequest(
                    f"payloads must have one entry per step: {len(req.steps)} steps, "
                    f"{len(req.payloads)} payloads"
                )
        if req.trans_type is TransType.SAGA:
            saga.parse_custom(req.custom_data, len(req.steps))
            return saga.gen_branches(req.gid, req.steps, req.payloads, now)
        if req.trans_type is TransType.MSG:
            msg.parse_delay(req.custom_data)
            subscribers = await self._subscribers(req.steps)
            return msg.gen_branches(req.gid, req.steps, req.payloads, subscribers, now)
        return []

    async def _subscribers(self, steps: list[dict[str, str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for step in steps:
            action = step.get("action", "")
            if action.startswith(msg.TOPIC_PREFIX):
                name = action[len(msg.TOPIC_PREFIX) :]
                kv = await self.store.kv_find(cat=TOPICS, key=name)
                out[name] = [s["url"] for s in _subs(kv)]
        return out

    def _new_trans(self, req: TransRequest, status: Status, now: float, owner: str) -> Transaction:
        trans = Transaction(
            gid=req.gid,
            trans_type=req.trans_type,
            status=status,
            protocol=req.protocol,
            query_prepared=req.query_prepared,
            custom_data=req.custom_data,
            options=req.options,
            create_time=now,
            update_time=now,
            owner=owner,
            rollback_reason=req.rollback_reason,
        )
        trans.next_cron_interval = self.engine.base_interval(trans)
        if status is Status.PREPARED:
            # nothing happens to a prepared transaction until it times out
            trans.next_cron_time = now + timeout_of(trans, self.engine.defaults)
        else:
            trans.next_cron_time = now + self.engine.lease(trans)
        return trans

    async def prepare(self, req: TransRequest) -> None:
        if req.trans_type is TransType.SAGA:
            raise BadRequest("a saga is submitted directly; prepare is for msg, tcc, xa")
        if req.trans_type is TransType.MSG and not req.query_prepared:
            raise BadRequest("a prepared msg needs query_prepared")
        now = self.clock.now()
        branches = await self._new_branches(req, now)
        if await self.store.create(
            trans=self._new_trans(req, Status.PREPARED, now, ""), branches=branches
        ):
            return
        existing = await self.store.get(gid=req.gid)
        if existing is None or existing.status is not Status.PREPARED:
            status = existing.status if existing else "missing"
            raise Failure(f"current status '{status}', cannot prepare")

    async def submit(self, req: TransRequest) -> None:
        now = self.clock.now()
        owner = self.new_owner()
        branches = await self._new_branches(req, now)
        if req.trans_type in _PREPARED_FIRST:
            # usually prepared already: claim it in one round trip, create only if that fails
            taken = await self._take(req.gid, req.trans_type, Status.SUBMITTED, now, owner)
            if taken is not None:
                await self._process(*self._submitted(req, taken), owner)
                return
        trans = self._new_trans(req, Status.SUBMITTED, now, owner)
        if not await self.store.create(trans=trans, branches=branches):
            existing = await self.store.get(gid=req.gid)
            if existing is None:
                raise Failure("transaction vanished while submitting; retry")
            if existing.status is Status.SUBMITTED:
                return  # double submit: it is already being processed
            if existing.status is not Status.PREPARED:
                raise Failure(f"current status '{existing.status}', cannot submit")
            if existing.trans_type is not req.trans_type:
                raise BadRequest(
                    f"gid {req.gid} is a {existing.trans_type}, not a {req.trans_type}"
                )
            taken = await self._take(req.gid, req.trans_type, Status.SUBMITTED, now, owner)
            if taken is None:
                raise Failure(f"{req.gid} changed status concurrently; retry")
            trans, branches = self._submitted(req, taken)
        await self._process(trans, branches, owner)

    @staticmethod
    def _submitted(
        req: TransRequest, taken: tuple[Transaction, list[Branch]]
    ) -> tuple[Transaction, list[Branch]]:
        trans, branches = taken
        if req.options.wait_result:
            trans.options.wait_result = True
        return trans, branches

    async def _take(
        self,
        gid: str,
        trans_type: TransType,
        status: Status,
        now: float,
        owner: str,
        reason: str = "",
        expect_status: Status = Status.PREPARED,
    ) -> tuple[Transaction, list[Branch]] | None:
        """Move a stored `trans_type` transaction from `expect_status` to `status` and
        claim it for this process; None if it is not there in that state."""
        # The default lease, as claim_due gives: Engine.run extends it at once for a
        # transaction whose stored options need a longer one.
        change = Change(
            status=status,
            owner=owner,
            next_cron_time=now + self.engine.config.lease,
            rollback_reason=reason or None,
        )
        return await self.store.take(
            gid=gid, now=now, expect_status=expect_status, expect_type=trans_type,
            change=change,
        )

    async def _process(self, trans: Transaction, branches: list[Branch], owner: str) -> None:
        if not trans.options.wait_result:
            task = asyncio.create_task(self.engine.run(trans, branches, owner))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        submitting = trans.status is Status.SUBMITTED
        done = await self.engine.run(trans, branches, owner)
        if submitting and done.status is not Status.SUCCEED:
            raise Failure(done.rollback_reason or f"wait result not return success: {done.status}")

    async def abort(self, req: TransRequest) -> None:
        now = self.clock.now()
        if req.trans_type is TransType.MSG:
            # a prepared msg just fails: nothing was called yet, so there is nothing to run
            change = Change(status=Status.FAILED, rollback_reason=req.rollback_reason or None)
            if await self.store.take(
                gid=req.gid, now=now, expect_status=Status.PREPARED,
                expect_type=TransType.MSG, change=change,
            ):
                return
        elif req.trans_type in (TransType.TCC, TransType.XA):
            owner = self.new_owner()
            taken = await self._take(
                req.gid, req.trans_type, Status.ABORTING, now, owner, req.rollback_reason
            )
            if taken is not None:
                await self._process(*taken, owner)
                return
        # not prepared as the request says: decide from what is stored, as before
        existing = await self.store.get(gid=req.gid)
        if existing is None:
            raise Failure(f"no transaction with gid {req.gid}")
        if existing.trans_type is TransType.MSG and existing.status is Status.PREPARED:
            if not await self.store.update(
                gid=req.gid, now=now, expect_status=Status.PREPARED, expect_owner=None,
                change=Change(status=Status.FAILED, rollback_reason=req.rollback_reason or None),
            ):
                raise Failure(f"{req.gid} changed status concurrently; retry")
            return
        if existing.trans_type not in (TransType.TCC, TransType.XA) or existing.status not in (
            Status.PREPARED,
            Status.ABORTING,
        ):
            raise Failure(
                f"trans type: '{existing.trans_type}' current status '{existing.status}', "
                "cannot abort"
            )
        owner = self.new_owner()
        taken = await self._take(
            req.gid, existing.trans_type, Status.ABORTING, now, owner, req.rollback_reason,
            expect_status=existing.status,
        )
        if taken is None:
            raise Failure(f"{req.gid} changed status concurrently; retry")
        await self._process(*taken, owner)

    async def force_stop(self, gid: str) -> None:
        check_gid(gid)
        for _ in range(5):
            existing = await self.store.get(gid=gid)
            if existing is None:
                raise NotFound(f"no transaction with gid {gid}")
            if existing.status.finished:
                raise Failure(f"global transaction force stop error. status: {existing.status}")
            if await self.store.update(
                gid=gid, now=self.clock.now(), expect_status=existing.status, expect_owner=None,
                change=Change(status=Status.FAILED, rollback_reason="force stopped"),
            ):
                return
        raise Failure(f"{gid} kept changing status; retry")

    async def reset_next_cron_time(self, gid: str) -> None:
        """Make an unfinished transaction due now. A finished one is left as it is and
        answers success too, as in DTM (whose admin UI offers the button for every
        transaction); an unknown gid is NotFound."""
        check_gid(gid)
        if await self.store.reset_next_cron_time(gid=gid, now=self.clock.now()):
            return
        if await self.store.get(gid=gid) is None:
            raise NotFound(f"no transaction with gid {gid}")

    async def reset_cron_time(self, *, timeout: float, limit: int) -> tuple[int, bool]:
        return await self.store.reset_cron_time(now=self.clock.now(), after=timeout, limit=limit)

    async def register_branch(self, data: Mapping[str, Any]) -> None:
        for k, v in data.items():
            if not isinstance(v, str | bytes):
                raise BadRequest(f"registerBranch field {k!r} must be a string")
        gid = check_gid(data.get("gid"))
        trans_type = parse_trans_type(data.get("trans_type"))
        branch_id = data.get("branch_id")
        if not isinstance(branch_id, str) or not branch_id or len(branch_id) > 128:
            raise BadRequest("branch_id is required (at most 128 characters)")
        if trans_type not in (TransType.TCC, TransType.XA):
            raise BadRequest(f"registerBranch for {trans_type} is not supported")
        raw = data.get("data", b"")
        payload = raw.encode() if isinstance(raw, str) else bytes(raw)
        urls = {k: v for k, v in data.items() if isinstance(v, str)}
        now = self.clock.now()
        branches = tcc.gen_registered(trans_type, gid, branch_id, payload, urls, now)
        try:
            ok = await self.store.add_branches(
                gid=gid, now=now, branches=branches, expect_status=Status.PREPARED
            )
        except DuplicateBranch:
            raise DuplicateBranch(f"branch {branch_id} of {gid} is already registered") from None
        if not ok:
            raise Failure(f"no trans with gid: {gid} status: prepared found")

    async def prepare_workflow(self, req: TransRequest) -> tuple[Transaction, list[Branch]]:
        raise BadRequest("workflow transactions are not supported yet")

    # ---- reading ----------------------------------------------------------------------
    async def query(self, gid: str) -> tuple[Transaction | None, list[Branch]]:
        check_gid(gid)
        trans = await self.store.get(gid=gid)
        if trans is None:
            return None, []
        return trans, await self.store.get_branches(gid=gid)

    async def all(
        self, *, gid: str, position: str, limit: int, filters: ScanFilter
    ) -> tuple[list[Transaction], str]:
        if gid:
            trans = await self.store.get(gid=gid)
            return ([trans] if trans else []), ""
        return await self.store.scan(position=position, limit=limit, filters=filters)

    # ---- topics and kv ----------------------------------------------------------------
    async def subscribe(self, topic: str, url: str, remark: str) -> None:
        _check_topic(topic, url)
        now = self.clock.now()
        for _ in range(5):
            kv = await self.store.kv_find(cat=TOPICS, key=topic)
            if kv is None:
                value = orjson.dumps([{"url": url, "remark": remark}]).decode()
                if await self.store.kv_create(cat=TOPICS, key=topic, value=value, now=now):
                    return
                continue
            subs = _subs(kv)
            if any(s["url"] == url for s in subs):
                raise Failure(f"{url} already subscribes to {topic}")
            subs.append({"url": url, "remark": remark})
            if await self.store.kv_update(
                cat=TOPICS, key=topic, value=orjson.dumps(subs).decode(),
                expect_version=kv.version, now=now,
            ):
                return
        raise Failure(f"topic {topic} kept changing; retry")

    async def unsubscribe(self, topic: str, url: str) -> None:
        _check_topic(topic, url)
        now = self.clock.now()
        for _ in range(5):
            kv = await self.store.kv_find(cat=TOPICS, key=topic)
            if kv is None:
                raise NotFound(f"no such topic: {topic}")
            subs = _subs(kv)
            rest = [s for s in subs if s["url"] != url]
            if len(rest) == len(subs):
                raise NotFound(f"{url} does not subscribe to {topic}")
            if await self.store.kv_update(
                cat=TOPICS, key=topic, value=orjson.dumps(rest).decode(),
                expect_version=kv.version, now=now,
            ):
                return
        raise Failure(f"topic {topic} kept changing; retry")

    async def delete_topic(self, topic: str) -> None:
        if not topic:
            raise BadRequest("empty topic")
        if not await self.store.kv_delete(cat=TOPICS, key=topic):
            raise NotFound(f"no such topic: {topic}")

    async def scan_kv(self, *, cat: str, position: str, limit: int) -> tuple[list[KV], str]:
        return await self.store.kv_scan(cat=cat, position=position, limit=limit)

    async def query_kv(self, *, cat: str, key: str) -> list[KV]:
        kv = await self.store.kv_find(cat=cat, key=key)
        return [kv] if kv else []

    async def close(self) -> None:
        """Stop in-flight runs; their leases lapse and the poller resumes them later."""
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def _check_topic(topic: str, url: str) -> None:
    if not topic:
        raise BadRequest("empty topic")
    if not url:
        raise BadRequest("empty url")


def _subs(kv: KV | None) -> list[dict[str, str]]:
    if kv is None:
        return []
    try:
        subs = orjson.loads(kv.v)
    except orjson.JSONDecodeError:
        return []
    return [s for s in subs if isinstance(s, dict) and isinstance(s.get("url"), str)]
