"""A blocking face of the async SDK, for code without an event loop.

Every class here is generated from its async twin: its methods run the async ones on a
private event loop in one background thread and wait for the result, so nothing is written
twice. Because the loop is private, the wrappers also work from a thread that is running
an event loop of its own (they block it while they wait, as any blocking call does).

    with SyncDtmClient("http://127.0.0.1:36789/api/dtmsvr") as client:
        saga = client.saga(client.new_gid()).add(a_url, c_url, {"amount": 30})
        saga.submit()
        with client.tcc(client.new_gid()) as tcc:
            tcc.call_branch(data, try_url, confirm_url, cancel_url)

Type checkers read `sync.pyi`, generated from the async classes by
scripts/gen_sync_stub.py (a test fails when it is stale).

Callbacks you pass (`Msg.do_and_submit`'s busi, `tcc_global_transaction`'s fn) may be
plain functions: they run in a worker thread, so they may use the sync API themselves.

`SyncWorkflows` executes workflows from blocking code and answers the server's resume call
in a blocking web app (`resume`); the workflow functions themselves stay `async def`
(docs/workflow.md says why).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from dtmx.client._client import DtmClient
from dtmx.client._msg import Msg
from dtmx.client._saga import Saga
from dtmx.client._tcc import Tcc
from dtmx.client._tcc import tcc_global_transaction as _async_tcc_global_transaction
from dtmx.client._xa import Xa
from dtmx.client._xa import xa_global_transaction as _async_xa_global_transaction
from dtmx.client._xa_local import xa_local_transaction_sync
from dtmx.client.barrier._sql import DEFAULT_TABLE
from dtmx.client.workflow._callback import resume as _async_workflow_resume
from dtmx.client.workflow._registry import Workflows, require_async

__all__ = [
    "SyncDtmClient",
    "SyncMsg",
    "SyncSaga",
    "SyncTcc",
    "SyncWorkflows",
    "SyncXa",
    "tcc_global_transaction",
    "xa_global_transaction",
    "xa_local_transaction",
]


class _LoopThread:
    """One private event loop, started on first use in a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="dtmx-sync", daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        loop = self.loop()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("the dtmx sync API cannot be called from its own loop thread")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


_RUNNER = _LoopThread()
# async class -> generated sync class, so results are wrapped in their sync twin.
_TWINS: dict[type, type[_SyncProxy]] = {}


def _wrap(value: Any) -> Any:
    twin = _TWINS.get(type(value))
    return twin._of(value) if twin is not None else value


def _unwrap(value: Any) -> Any:
    if isinstance(value, _SyncProxy):
        return object.__getattribute__(value, "_target")
    if callable(value) and not isinstance(value, type) and not _is_async(value):
        return _in_worker(value)
    return value


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def _in_worker(fn: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A sync callback made async: it runs in a worker thread and sees sync twins."""

    async def call(*args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *map(_wrap, args)))

    return call


def _blocking(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Call `fn` with sync twins unwrapped, wait for it on the loop, wrap its result."""

    def call(*args: Any, **kwargs: Any) -> Any:
        result = fn(*map(_unwrap, args), **{k: _unwrap(v) for k, v in kwargs.items()})
        if inspect.iscoroutine(result):
            result = _RUNNER.run(result)
        return _wrap(result)

    functools.update_wrapper(call, fn)
    return call


class _SyncProxy:
    """Base of the generated sync twins: forwards attributes to the async object."""

    _async_cls: type
    __slots__ = ("_target",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        target = self._async_cls(*map(_unwrap, args), **kwargs)
        object.__setattr__(self, "_target", target)

    @classmethod
    def _of(cls, target: Any) -> Any:
        obj = cls.__new__(cls)
        object.__setattr__(obj, "_target", target)
        return obj

    def __getattr__(self, name: str) -> Any:
        value = getattr(object.__getattribute__(self, "_target"), name)
        return _blocking(value) if callable(value) else _wrap(value)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(object.__getattribute__(self, "_target"), name, _unwrap(value))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {object.__getattribute__(self, '_target')!r}>"

    def __enter__(self) -> Any:
        target = object.__getattribute__(self, "_target")
        _RUNNER.run(target.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> Any:
        return _RUNNER.run(object.__getattribute__(self, "_target").__aexit__(*exc))


def _method(name: str) -> Callable[..., Any]:
    def method(self: _SyncProxy, *args: Any, **kwargs: Any) -> Any:
        bound = getattr(object.__getattribute__(self, "_target"), name)
        return _blocking(bound)(*args, **kwargs)

    return method


def _sync_class(cls: type, doc: str) -> type[_SyncProxy]:
    """Generate the sync twin of `cls`: one blocking method per public async/sync method."""
    namespace: dict[str, Any] = {"__doc__": doc, "__slots__": (), "_async_cls": cls}
    for name, attr in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, classmethod):
            namespace[name] = staticmethod(_blocking(attr))
        elif inspect.isfunction(raw):
            method = _method(name)
            functools.update_wrapper(method, raw)
            namespace[name] = method
    twin = type(f"Sync{cls.__name__}", (_SyncProxy,), namespace)
    _TWINS[cls] = twin
    return twin


SyncSaga = _sync_class(Saga, "Blocking twin of `dtmx.client.Saga`.")
SyncTcc = _sync_class(Tcc, "Blocking twin of `dtmx.client.Tcc` (use it with `with`).")
SyncMsg = _sync_class(Msg, "Blocking twin of `dtmx.client.Msg`.")
SyncXa = _sync_class(Xa, "Blocking twin of `dtmx.client.Xa` (use it with `with`).")
SyncDtmClient = _sync_class(
    DtmClient, "Blocking twin of `dtmx.client.DtmClient`; `close()` releases connections."
)
SyncDtmClient.close = _method("aclose")  # type: ignore[attr-defined]

SyncWorkflows = _sync_class(
    Workflows,
    "Blocking twin of `dtmx.client.workflow.Workflows`: `execute` runs a workflow and waits; "
    "`resume` answers the server's resume call in a blocking web app. The functions "
    "registered stay `async def`.",
)


def _add_workflow(self: _SyncProxy, name: str, fn: Any, **options: Any) -> None:
    # checked before the call: `_unwrap` would turn a plain function into a coroutine one
    require_async(name, fn)
    object.__getattribute__(self, "_target").add(name, fn, **options)


def _resume_workflow(self: _SyncProxy, query: Mapping[str, str], body: bytes
                     ) -> tuple[int, Any]:
    """Run the workflow that the server's resume call names (its query and body) and wait:
    (HTTP status, JSON body) to answer it with. For the `callback` endpoint of a blocking
    web app (WSGI, Flask, Django); the same answers as the async endpoints'."""
    target = object.__getattribute__(self, "_target")
    result: tuple[int, Any] = _RUNNER.run(_async_workflow_resume(target, query, body))
    return result


functools.update_wrapper(_add_workflow, Workflows.add)
SyncWorkflows.add = _add_workflow  # type: ignore[attr-defined]
SyncWorkflows.resume = _resume_workflow  # type: ignore[attr-defined]

#: Blocking twin of `dtmx.client.tcc_global_transaction`; `fn` gets a `SyncTcc`.
tcc_global_transaction = _blocking(_async_tcc_global_transaction)

#: Blocking twin of `dtmx.client.xa_global_transaction`; `fn` gets a `SyncXa`.
xa_global_transaction = _blocking(_async_xa_global_transaction)


def xa_local_transaction(
    client: Any,
    query: Mapping[str, Any],
    conn: Any,
    busi: Callable[[Any], object],
    *,
    table: str = DEFAULT_TABLE,
) -> None:
    """Blocking twin of `dtmx.client.xa_local_transaction`, for a PyMySQL connection or a
    psycopg connection in autocommit mode; `client` is a `SyncDtmClient` (or `DtmClient`).
    `busi(conn)` runs in the calling thread."""
    target = _unwrap(client)

    def register(body: dict[str, str]) -> None:
        _RUNNER.run(target.transport.register_branch(body))

    xa_local_transaction_sync(register, query, conn, busi, table=table)
