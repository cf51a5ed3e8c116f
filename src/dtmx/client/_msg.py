"""Msg: a two-phase message whose steps the server delivers once the local work commits."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Self

import orjson

from dtmx.client._base import Payload, TransBase, encode_payload
from dtmx.client._consts import MSG_DO_BRANCH_ID, MSG_DO_OP, MSG_TOPIC_PREFIX, TransType
from dtmx.client._errors import DtmError, Failure

if TYPE_CHECKING:
    from dtmx.client._client import DtmClient
    from dtmx.client.barrier import BranchBarrier


class Msg(TransBase):
    """A msg transaction.

    >>> msg = client.msg(gid).add(in_url, {"amount": 30})
    >>> await msg.do_and_submit(query_prepared_url, local_work)
    """

    trans_type = TransType.MSG

    def __init__(self, client: DtmClient, gid: str) -> None:
        super().__init__(client, gid)
        self.steps: list[dict[str, str]] = []
        self.payloads: list[str | bytes] = []
        #: URL the server asks whether the local transaction committed.
        self.query_prepared = ""
        #: Seconds the server waits after submit before calling the steps.
        self.delay = 0

    def add(self, action_url: str, payload: Payload = None) -> Self:
        """Append a step the server will POST `payload` to (retrying until it succeeds)."""
        self.steps.append({"action": action_url})
        self.payloads.append(encode_payload(payload))
        return self

    def add_topic(self, topic: str, payload: Payload = None) -> Self:
        """Append a step delivered to every subscriber of `topic`."""
        return self.add(f"{MSG_TOPIC_PREFIX}{topic}", payload)

    def set_delay(self, seconds: int) -> Self:
        """Deliver the steps `seconds` after submit."""
        if seconds < 0:
            raise ValueError("delay must not be negative")
        self.delay = seconds
        return self

    def custom_data(self) -> str:
        """`{"delay": N}` when a delay is set, else ""."""
        return orjson.dumps({"delay": self.delay}).decode() if self.delay else ""

    def to_body(self) -> dict[str, Any]:
        """The prepare/submit body: steps, payloads, query_prepared, custom_data, options."""
        body = super().to_body()
        body["steps"] = [dict(s) for s in self.steps]
        body["payloads"] = list(self.payloads)
        if self.query_prepared:
            body["query_prepared"] = self.query_prepared
        return body

    async def prepare(self, query_prepared: str = "") -> None:
        """Store the msg as prepared; the server checks `query_prepared` if it stays so."""
        self.query_prepared = query_prepared or self.query_prepared
        await self.client.transport.prepare(self.to_body())

    async def submit(self) -> None:
        """Submit: the server delivers the steps."""
        await self._submit()

    async def abort(self) -> None:
        """Abort a prepared msg: it ends failed and nothing is delivered."""
        await self.client.transport.abort(self.to_body())

    async def do_and_submit(
        self,
        query_prepared: str,
        busi: Callable[[BranchBarrier], Awaitable[Any] | Any],
        *,
        barrier_table: str | None = None,
    ) -> None:
        """Prepare, run the local work `busi(barrier)`, then submit; re-raise busi's error.

        `barrier_table` names the barrier table when it is not DTM's `dtm_barrier.barrier`.

        If busi raises `Failure`, the msg is aborted. On any other error the outcome of the
        local transaction is unknown, so ask `query_prepared`: submit if it committed, abort
        if it answers FAILURE, and otherwise (ongoing, unreachable) leave the msg prepared
        for the server's own check.
        """
        from dtmx.client.barrier import BranchBarrier  # written separately; needs DB drivers

        barrier = BranchBarrier(
            trans_type=self.trans_type.value,
            gid=self.gid,
            branch_id=MSG_DO_BRANCH_ID,
            op=MSG_DO_OP.value,
        )
        if barrier_table is not None:
            barrier.table = barrier_table
        await self.prepare(query_prepared)
        try:
            result = busi(barrier)
            if inspect.isawaitable(result):
                await result
        except Failure as e:
            await self._abort_noting(e)
            raise
        except Exception as e:
            try:
                resp = await self.client.request_branch(
                    "GET", self.query_prepared, self, branch_id=MSG_DO_BRANCH_ID, op=MSG_DO_OP
                )
                resp.raise_for_result()
            except Failure:
                await self._abort_noting(e)
            except DtmError as qerr:
                e.add_note(f"dtmx: query_prepared undecided ({qerr}); left to the server")
            else:
                try:
                    await self.submit()
                except DtmError as serr:
                    e.add_note(f"dtmx: submit of {self.gid} failed: {serr}")
            raise
        await self.submit()

    async def _abort_noting(self, exc: BaseException) -> None:
        # A failed abort is not fatal: the server's query_prepared check resolves it later.
        try:
            await self.abort()
        except DtmError as abort_err:
            exc.add_note(f"dtmx: abort of {self.gid} failed: {abort_err}")
