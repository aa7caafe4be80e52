"""The regops benchmark, shipped with the package so `python -m regops bench` runs from an installed wheel.

harness      the timing protocol (providers of one (op, size) timed round-robin), peak memory, table and CSV
cases/       one module per op family; each exposes ``cases(quick, device) -> list[Case]``
baselines/   the official formulations the cases time against (our own rewrites of the papers' code)
progress     the overall count and time left (tqdm where installed, else printed lines)

Kept free of imports: `python -m regops bench --memory-case` and the tests import single modules of it.
"""
