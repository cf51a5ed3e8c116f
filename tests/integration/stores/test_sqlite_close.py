"""Closing the SQLite store while its background checkpoint runs in a worker thread.

The checkpoint connection used to be closed under the thread still using it: the server
died of SIGSEGV on stop now and then (its last log line lost). Here a reader holds the WAL,
so the checkpoint's RESTART waits in the thread when `close()` comes; the close must wait
for it and the process exit cleanly. In a child process, so a crash cannot take pytest down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent("""
    import asyncio, sqlite3, sys, threading, time
    from dtmx.stores.sql.sqlite_driver import CHECKPOINT_PAGES, SqliteBackend

    async def main(path):
        b = SqliteBackend(path)
        await b.open(create=True)
        await b.run(lambda db: db.execute("CREATE TABLE t (x BLOB)"))
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM t").fetchall()  # holds a WAL snapshot
        pages = 5 * CHECKPOINT_PAGES  # over the RESTART threshold
        await b.run(lambda db: db.executemany("INSERT INTO t VALUES (randomblob(4096))",
                                              [()] * pages))
        # the checkpointer's first round starts its worker thread; it then waits for the reader
        deadline = time.monotonic() + 10
        while not any(t.name.startswith("asyncio_") for t in threading.enumerate()):
            assert time.monotonic() < deadline, "the checkpoint never started"
            await asyncio.sleep(0.01)
        await b.close()
        reader.close()
        print("closed")

    asyncio.run(main(sys.argv[1]))
""")


def test_close_waits_for_a_running_checkpoint(tmp_path: Path) -> None:
    for i in range(3):
        p = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"db{i}.sqlite")],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.strip() == "closed", (p.returncode, p.stderr)
