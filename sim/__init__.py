"""Deterministic simulation of the engine and the poller (issue 14).

One process, one seed: several real `dtmx.engine.Engine`s and `dtmx.poller.Poller`s run
over `sim.store.MemoryStore` (the `Store` contract in memory), simulated branches
(`sim.net`) and a simulated workflow app (`sim.workflow`), on an event loop whose time is
virtual (`sim.loop`). A fake network delays, drops, duplicates and loses answers; nodes
crash at any await point, losing everything they had not written, and restart fresh on
the same store. `sim.check` states the invariants; `python -m sim --seeds N` explores
seeds and shrinks a failing one.
"""
