"""The regops benchmark, shipped with the package so `python -m regops bench` runs from an installed wheel.

harness      the timing protocol (providers of one (op, size) timed round-robin), peak memory, table and CSV
cases/       one module per op family; each exposes ``cases(quick, device) -> list[Case]``
baselines/   the official formulations the cases time against (our own rewrites of the papers' code)
progress     the overall count and time left (tqdm where installed, else printed lines)
plot         --plot: per op, time and peak memory against the problem size (matplotlib, imported when asked)
report       --report: the Markdown summary, regops' fastest kernel against the reference, official and peers

Kept free of imports: `python -m regops bench --memory-case` and the tests import single modules of it.
"""
