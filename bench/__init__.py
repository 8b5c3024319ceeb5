"""Benchmarks, run from the repository root as `python -m bench.<name> --help`.

Each writes its result as JSON through `bench.results` (with the command, commit, date
and machine); `bench.common` holds what the benches share.
"""
