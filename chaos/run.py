"""One chaos run: start everything, inject the schedule while the workload runs, let it all
settle, check, report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import aiosqlite

from chaos import bank as bank_mod
from chaos.check import FINAL, Findings, check
from chaos.faults import Event, Fault, schedule
from chaos.procs import (
    DtmxServer,
    Proc,
    StoreUnderTest,
    free_port,
    holds_socket,
    socket_inode,
)
from chaos.proxy import ProxyThread
from chaos.workload import Workload

ACCOUNTS = 10
INITIAL = 100_000
#: the servers' timing: short, so a run sees many retries, timeouts and lease expiries
TIMING: dict[str, float | str] = {
    "TransCronInterval": 0.1, "RetryInterval": 0.3, "MaxRetryInterval": 2,
    "TimeoutToFail": 4, "RequestTimeout": 2, "LeaseSeconds": 5, "LogLevel": "warn",
    # each branch call names the claim that made it: the two-owners check reads it
    "BranchOwnerHeader": bank_mod.OWNER_HEADER}


@dataclass
class Config:
    """What a run does; the seed decides everything random in it."""

    store: str = "sqlite"
    servers: int = 2
    seconds: float = 60.0
    seed: int = 1
    workers: int = 6
    branch_fault_rate: float = 0.2
    clock_jumps: bool = True
    #: seconds between server kills / between store faults: uniform in (min, max)
    kill_every: tuple[float, float] = (1.0, 3.0)
    store_fault_every: tuple[float, float] = (1.0, 2.5)
    quiesce_timeout: float = 120.0
    workdir: str = ""
    keep: bool = False


@dataclass
class Result:
    """What the report prints."""

    config: Config
    faults: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    client_errors: int = 0
    findings: Findings = field(default_factory=Findings)
    quiescence: float = 0.0
    branch_calls: int = 0
    transfers: int = 0
    #: the servers' calls of the workflow resume endpoint, by answer status
    workflow_resumes: Counter[str] = field(default_factory=Counter)
    workdir: str = ""


class Harness:
    """Owns the processes of one run."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.workdir = Path(cfg.workdir or tempfile.mkdtemp(prefix=f"chaos-{cfg.store}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.store = StoreUnderTest(cfg.store, self.workdir)
        self.proxy: ProxyThread | None = None
        self.servers: list[DtmxServer] = []
        self.bank: Proc | None = None
        self.bank_port = free_port()
        self.bank_db = str(self.workdir / "bank.db")
        #: every server process of the run, by pid (owner tokens name the pid)
        self.names: dict[int, str] = {}
        self.result = Result(cfg, workdir=str(self.workdir))
        self._restarts: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        #: set by SIGINT/SIGTERM: the workload ends early, the run settles and reports
        self.stop_requested = False
        self.finished = False  # the run directory is kept unless the run got to its end

    # ---- set-up -----------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self.store.start()
        port = self.store.port
        if self.store.proxied:
            self.proxy = ProxyThread(self.store.port)
            self.proxy.proxy.kill_owner = self._kill_owner
            self.proxy.start()
            port = self.proxy.proxy.port
        conf = {**TIMING, "Store": self.store.block(port)}
        for i in range(cfg.servers):
            skewed = cfg.clock_jumps and cfg.servers > 1 and i == cfg.servers - 1
            self.servers.append(DtmxServer(i, self.workdir, conf, skewed=skewed))
        for s in self.servers:  # one at a time: the first creates the schema
            s.start(wait=False)
            await self._wait_up(s)
        self._note_pids()
        await bank_mod.init_db(self.bank_db, ACCOUNTS, INITIAL)
        self.bank = Proc([sys.executable, "-m", "chaos.bank", "--port", str(self.bank_port),
                          "--db", self.bank_db, "--seed", str(cfg.seed),
                          "--rate", str(cfg.branch_fault_rate),
                          "--timeout", str(TIMING["RequestTimeout"])],
                         self.workdir, "bank").start()
        await self._wait_http(f"http://127.0.0.1:{self.bank_port}/chaos/calls", "bank")

    def _note_pids(self) -> None:
        for s in self.servers:
            for pid in s.pids:
                self.names[pid] = f"server{s.index}"

    async def _wait_up(self, s: DtmxServer) -> None:
        url = f"http://127.0.0.1:{s.http_port}/api/ping"
        await self._wait_http(url, f"server{s.index}", s.proc)

    async def _wait_http(self, url: str, what: str, proc: Proc | None = None) -> None:
        end = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < end:
                if proc is not None and not proc.alive():
                    raise RuntimeError(f"{what} exited: {proc.log_tail()}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url, timeout=aiohttp.ClientTimeout(total=1)) as r:
                        if r.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise RuntimeError(f"{what} not up within 60 s")

    # ---- faults -----------------------------------------------------------------------
    async def inject(self, plan: list[Fault], t0: float) -> None:
        for fault in plan:
            await asyncio.sleep(max(0.0, t0 + fault.at - time.monotonic()))
            self._apply(fault)

    def _apply(self, fault: Fault) -> None:
        counts = self.result.faults
        if fault.event is Event.KILL:
            s = self.servers[fault.target]
            if not s.proc.alive():
                return  # already down: not a fault of its own
            s.proc.kill9()
            counts[fault.event.value] += 1
            task = asyncio.create_task(self._restart(s, fault.duration))
            self._restarts.add(task)
            task.add_done_callback(self._restarts.discard)
        elif fault.event is Event.CLOCK_JUMP:
            self.servers[fault.target].skew_path.write_text(str(fault.amount))
            counts[fault.event.value] += 1
        elif self.proxy is not None:
            p = self.proxy.proxy
            if fault.event is Event.STORE_PAUSE:
                self.proxy.spawn(p.pause(fault.duration))
            elif fault.event is Event.STORE_SLOW:
                self.proxy.spawn(p.slow(fault.duration, fault.amount))
            elif fault.event is Event.STORE_DROP:
                self.proxy.loop.call_soon_threadsafe(p.drop)
            elif fault.event is Event.STORE_CUT_AFTER_WRITE:
                self.proxy.loop.call_soon_threadsafe(p.arm_cut)
            elif fault.event is Event.KILL_AFTER_WRITE:
                self.proxy.loop.call_soon_threadsafe(p.arm_kill)
            elif fault.event is Event.STORE_RESTART:
                task = asyncio.create_task(self._restart_store(fault.duration))
                self._restarts.add(task)
                task.add_done_callback(self._restarts.discard)
            counts[fault.event.value] += 1

    async def _restart_store(self, after: float) -> None:
        self.store.kill_redis()
        await asyncio.sleep(after)
        await asyncio.to_thread(self.store.start_redis)

    def _kill_owner(self, port: int) -> bool:
        """(In the proxy's thread.) kill -9 the server whose store connection comes from
        `port`, at once; its restart is left to the harness's loop."""
        assert self.proxy is not None
        inode = socket_inode(port, self.proxy.proxy.port)
        for s in self.servers:
            if inode and s.proc.alive() and holds_socket(s.proc.pid, inode):
                os.kill(s.proc.pid, signal.SIGKILL)
                assert self.loop is not None
                self.loop.call_soon_threadsafe(self._restart_later, s)
                return True
        return False

    def _restart_later(self, s: DtmxServer) -> None:
        task = asyncio.create_task(self._restart(s, 0.5))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _restart(self, s: DtmxServer, after: float) -> None:
        await asyncio.sleep(after)
        for _ in range(30):
            if s.proc.alive():
                return
            s.start(wait=False)
            self._note_pids()
            try:
                await self._wait_up(s)
                return
            except RuntimeError:
                # the store was down or cut while it started (dtmx serve then exits, as it
                # should): start it again, as a process supervisor would
                s.proc.kill9()
                self.result.faults["server_start_failed (store down)"] += 1
                await asyncio.sleep(0.5)

    async def settle_faults(self) -> None:
        """Stop every fault: servers up, clocks true, the proxy forwarding."""
        for task in list(self._restarts):
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await task
        if self.proxy is not None:
            p = self.proxy.proxy
            p.cut_armed = p.kill_armed = False  # an armed fault would hit a starting server
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(
                p.resumed.wait(), self.proxy.loop))
        for s in self.servers:
            s.skew_path.write_text("0")
            for attempt in range(3):
                if s.proc.alive():
                    break
                s.start(wait=False)
                self._note_pids()
                try:
                    await self._wait_up(s)
                except RuntimeError:
                    if attempt == 2:
                        raise
                    await asyncio.sleep(1)

    # ---- the run --------------------------------------------------------------------
    async def run(self) -> Result:
        cfg = self.cfg
        self.loop = asyncio.get_running_loop()
        await self.start()
        plan = schedule(cfg.seed, cfg.seconds, servers=cfg.servers,
                        proxy=self.store.proxied, clock_jumps=cfg.clock_jumps,
                        store_restarts=self.store.kind == "redis",
                        kill_every=cfg.kill_every, store_every=cfg.store_fault_every)
        workload = Workload(seed=cfg.seed, bank_url=f"http://127.0.0.1:{self.bank_port}/bank",
                            bank_db=self.bank_db, server_urls=[s.url for s in self.servers],
                            accounts=ACCOUNTS, workers=cfg.workers,
                            prepared_timeout=int(float(TIMING["TimeoutToFail"])),
                            callback_port=free_port(), owner_header=bank_mod.OWNER_HEADER)
        t0 = time.monotonic()
        injector = asyncio.create_task(self.inject(plan, t0))
        try:
            await workload.run(
                lambda: self.stop_requested or time.monotonic() - t0 >= cfg.seconds)
        finally:
            injector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await injector
        await self.settle_faults()
        if self.proxy is not None:
            done = self.proxy.proxy.counts
            self.result.faults["store_writes_cut (done)"] += done["cut_after_write"]
            self.result.faults["servers_killed_after_write (done)"] += done["killed_after_write"]
        try:
            t_quiet = time.monotonic()
            statuses = await self._quiesce(workload)
            self.result.quiescence = time.monotonic() - t_quiet
        finally:
            await workload.close()
        await self._check(workload, statuses)
        self.finished = True
        return self.result

    async def _quiesce(self, workload: Workload) -> dict[str, str | None]:
        """Poll every gid until all are final (or absent); give up after the timeout."""
        statuses: dict[str, str | None] = {}
        pending = [t.gid for t in workload.transfers]
        end = time.monotonic() + self.cfg.quiesce_timeout
        sem = asyncio.Semaphore(16)
        url = f"{self.servers[0].url}/query"
        async with aiohttp.ClientSession() as http:

            async def one(gid: str) -> None:
                async with sem:
                    for _ in range(5):
                        try:
                            async with http.get(url, params={"gid": gid},
                                                timeout=aiohttp.ClientTimeout(total=10)) as r:
                                body = await r.json()
                            break
                        except (aiohttp.ClientError, TimeoutError):
                            await asyncio.sleep(0.5)
                    else:
                        return
                    trans = body.get("transaction")
                    statuses[gid] = trans["status"] if trans else None

            while True:
                await asyncio.gather(*(one(g) for g in pending))
                pending = [g for g in pending if statuses.get(g, "?") not in (*FINAL, None)]
                if not pending or time.monotonic() > end:
                    return statuses
                await asyncio.sleep(0.5)

    async def _check(self, workload: Workload, statuses: dict[str, str | None]) -> None:
        async with aiohttp.ClientSession() as http, http.get(
                f"http://127.0.0.1:{self.bank_port}/chaos/calls",
                timeout=aiohttp.ClientTimeout(total=600)) as r:
            log = await r.json()
        # calls.json stays in the run directory for a look afterwards
        log["calls"] = json.loads(Path(log["calls_file"]).read_text())
        # the servers' workflow resume calls, logged by the workload's endpoint
        resumes = workload.workflows.calls
        (self.workdir / "resume_calls.json").write_text(json.dumps(resumes))
        log["calls"] += resumes
        for kind, n in log["faults"].items():
            self.result.faults[f"branch_{kind}"] += n
        async with aiosqlite.connect(self.bank_db) as conn:
            effects = [tuple(row) for row in await conn.execute_fetchall(
                "SELECT gid, branch_id, op, account, delta FROM effects")]
            balances = {int(a): int(b) for a, b in await conn.execute_fetchall(
                "SELECT id, balance FROM accounts")}
            barrier = {(str(g), str(b), str(o)) for g, b, o in await conn.execute_fetchall(
                f"SELECT gid, branch_id, op FROM {bank_mod.TABLE}")}
        skewed = {f"server{s.index}" for s in self.servers if s.skewed}
        res = self.result
        res.findings = check(workload.transfers, statuses, effects,
                             balances, INITIAL, log["calls"], skewed,
                             request_timeout=float(TIMING["RequestTimeout"]),
                             names=self.names)
        for gid, bid, op, _acc, _delta in effects:
            if (gid, bid, op) not in barrier:
                res.findings.add("barrier", f"{gid}: effect ({bid}, {op}) without its barrier row")
        res.branch_calls = len(log["calls"])
        res.transfers = len(workload.transfers)
        res.client_errors = sum(1 for t in workload.transfers if t.error)
        resubmits = sum(t.resubmits for t in workload.transfers)
        if resubmits:
            res.faults["saga_resubmitted_elsewhere"] += resubmits
        wf = workload.workflows
        if wf.stopped:
            res.faults["workflow_client_stopped_halfway"] += wf.stopped
        res.workflow_resumes = Counter(str(c["status"]) for c in wf.calls)
        late = sum(1 for t in workload.transfers if t.late_try)
        if late:
            res.faults["late_try_after_cancel"] += late
        for t in workload.transfers:
            res.outcomes[(t.kind.value, statuses.get(t.gid) or "absent")] += 1

    def request_stop(self) -> None:
        """End the workload now; quiescence, checks and the report still run."""
        self.stop_requested = True
        print("chaos: stop requested: settling and checking", file=sys.stderr, flush=True)

    async def close(self) -> None:
        for s in self.servers:
            s.proc.stop()
            s.release_ports()
        if self.bank is not None:
            self.bank.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self.store.stop()
        if not self.cfg.keep and self.finished and not self.result.findings.violations:
            shutil.rmtree(self.workdir, ignore_errors=True)


async def run(cfg: Config) -> Result:
    """Run once; the processes are stopped whatever happens."""
    h = Harness(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, h.request_stop)
    try:
        return await h.run()
    finally:
        await h.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
