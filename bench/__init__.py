"""Benchmarks of dtmx against direct calls and DBOS (issue 7); run as `python -m bench`.

Not part of the test suite. Every load hits 127.0.0.1 only, is bounded in time and stops by
itself. See bench/README.md for the command and bench/REPORT.md for the latest numbers.
"""
