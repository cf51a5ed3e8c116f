"""The chaos harness: a bank workload against real `dtmx serve` processes under seeded faults.

`python -m chaos --store sqlite --servers 2 --seconds 600 --seed N` runs it; see
`chaos/README.md` for what it injects and what it checks, and `chaos/REPORT.md` for runs.
"""
