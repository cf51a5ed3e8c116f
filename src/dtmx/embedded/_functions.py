"""Local functions: the application's branch code, registered by name, called in process.

A local function takes a `LocalBranch` (which transaction, which op, the payload) and
follows the branch result rule of the HTTP SDK (`dtmx.client.result_for`): returning is
success, `Failure` rolls the transaction back, `Ongoing` asks again later, any other
exception is retried with backoff. Registered with `db=`, it also gets a connection from
that source and runs inside the sub-transaction barrier on it, in one local transaction.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

import orjson

from dtmx.client._branch import result_for
from dtmx.client.barrier import BranchBarrier, ensure_table
from dtmx.client.barrier._sql import DEFAULT_TABLE
from dtmx.core.local import LOCAL_PREFIX, is_local, local_name
from dtmx.core.models import Outcome
from dtmx.invoke.base import BranchCall, CallResult
from dtmx.invoke.http_invoker import classify
from dtmx.invoke.local import LocalFn

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

ConnSource = Callable[[], AbstractAsyncContextManager[Any]]
"""Where a barrier-guarded function's connection comes from: a callable returning an async
context manager that yields one, e.g. SQLAlchemy's `AsyncEngine.connect` or asyncpg's
`Pool.acquire`."""


@dataclass(frozen=True, slots=True)
class LocalBranch:
    """One call of a local function: the same facts an HTTP branch reads from its query."""

    gid: str
    trans_type: str
    branch_id: str
    op: str
    payload: bytes
    headers: Mapping[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        """The payload parsed as JSON (None when it is empty)."""
        return orjson.loads(self.payload) if self.payload else None

    def barrier(self, table: str = DEFAULT_TABLE) -> BranchBarrier:
        """The sub-transaction barrier of this call (`await barrier.call(conn, busi)`)."""
        return BranchBarrier(self.trans_type, self.gid, self.branch_id, self.op, table=table)


Plain = Callable[[LocalBranch], Awaitable[object]]
WithConn = Callable[[LocalBranch, Any], Awaitable[object]]
F = TypeVar("F", bound=Callable[..., Awaitable[object]])


@dataclass(frozen=True, slots=True)
class LocalFunction(Generic[F]):
    """A registered function: call it as before; `url` is what a transaction step names."""

    name: str
    fn: F
    db: ConnSource | None = None
    table: str = DEFAULT_TABLE
    # whether the barrier table is known to exist (created on the first call, once)
    _ready: list[bool] = field(default_factory=list, compare=False, repr=False)

    @property
    def url(self) -> str:
        """`local://<name>`."""
        return LOCAL_PREFIX + self.name

    async def invoke(self, call: BranchCall) -> CallResult:
        """Run the function for one branch call and map its outcome as an HTTP branch's
        answer would be mapped (one rule for both)."""
        b = LocalBranch(call.gid, call.trans_type.value, call.branch_id, str(call.op),
                        call.payload, call.headers)
        err: BaseException | None = None
        try:
            if self.db is None:
                await self.fn(b)
            else:
                fn = self.fn
                async with self.db() as conn:
                    if not self._ready:
                        await ensure_table(conn, self.table)
                        self._ready.append(True)
                    await b.barrier(self.table).call(conn, lambda c: fn(b, c))
        except Exception as e:
            err = e
        status, body = result_for(err)
        outcome = classify(status, "")
        return CallResult(outcome, "" if outcome is Outcome.SUCCESS
                          else f"{status} {body.get('message', '')}")


class Functions(Mapping[str, LocalFn]):
    """A registry of local functions, by name; the embedded engine calls what it holds.

    `dtmx.embedded.functions` is the default one, shared by the module-level decorator.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, LocalFunction[Any]] = {}

    @overload
    def local(self, name: str | None = None) -> Callable[[F], LocalFunction[F]]: ...
    @overload
    def local(self, name: str | None = None, *, db: ConnSource,
              table: str = DEFAULT_TABLE) -> Callable[[F], LocalFunction[F]]: ...

    def local(self, name: str | None = None, *, db: ConnSource | None = None,
              table: str = DEFAULT_TABLE) -> Callable[[F], LocalFunction[F]]:
        """Decorator: register an async function as `local://<name>` (default: its
        module and name: `pkg.mod.fn`). With `db`, the function is `f(branch, conn)` and runs in
        the barrier on a connection from `db` (idempotent, safe against null
        compensation and hanging requests)."""

        def register(fn: F) -> LocalFunction[F]:
            return self.add(fn, name or f"{fn.__module__}.{fn.__name__}", db=db,
                            table=table)

        return register

    def add(self, fn: F, name: str, *, db: ConnSource | None = None,
            table: str = DEFAULT_TABLE) -> LocalFunction[F]:
        """Register `fn` under `name`; ValueError for a bad name or one taken by another
        function (registering the same function again is a no-op)."""
        if not _NAME.match(name):
            raise ValueError(f"local function name {name!r}: 1-128 of A-Z a-z 0-9 _ . -")
        have = self._by_name.get(name)
        if have is not None and have.fn is not fn:
            raise ValueError(f"local function {name!r} is already registered")
        entry = LocalFunction(name, fn, db, table)
        self._by_name[name] = entry
        return entry

    def url(self, ref: LocalFunction[Any] | str) -> str:
        """The URL of a registered function, its name, or a URL (checked to be known)."""
        name = ref.name if isinstance(ref, LocalFunction) else (
            local_name(ref) if is_local(ref) else ref)
        if name not in self._by_name:
            raise KeyError(f"no local function {name!r} is registered")
        return LOCAL_PREFIX + name

    def __getitem__(self, name: str) -> LocalFn:
        return self._by_name[name].invoke

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)


#: The default registry (what `dtmx.embedded.local` registers into).
functions = Functions()
