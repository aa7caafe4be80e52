"""The README's bad-input contract table, rendered from tests/contract_cases.py (ALL_CASES).

    python scripts/contract_table.py                  # print the table and its row counts
    python scripts/contract_table.py --write-readme   # replace the README section between the markers

One row per case, ops in the registry's order (regops._registry.OPS), each op's rejected inputs first, then the
edge inputs it accepts. tests/test_contract.py checks that the README holds exactly this table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START = "<!-- contract-table:start -->"
END = "<!-- contract-table:end -->"

HEADER = ("| op | argument | rejected input | exception | message (pattern) |\n"
          "|---|---|---|---|---|")


def _import_cases():
    # tests/ holds the cases; python/ the package, for a source tree without an install
    for path in (REPO / "python", REPO / "tests"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    import contract_cases
    from regops import _registry
    return contract_cases, _registry


def _cell(text: str) -> str:
    # a pipe would end the cell, in code spans too (GitHub tables)
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{_cell(text)}`"


def rows(cases=None) -> list:
    """The table's rows as (op, argument, input, exception, message) cells, unescaped."""
    contract_cases, registry = _import_cases()
    cases = contract_cases.ALL_CASES if cases is None else cases
    out = []
    for op in registry.OPS:
        op_cases = cases.get(op, [])
        for c in op_cases:
            if isinstance(c, contract_cases.Rejected):
                out.append((op, c.arg, c.what, c.exc.__name__, c.match))
        for c in op_cases:
            if isinstance(c, contract_cases.Accepted):
                out.append((op, "", "accepted: " + c.what, "", ""))
    return out


def render_markdown(cases=None) -> str:
    """The Markdown table (no trailing newline)."""
    lines = [HEADER]
    for op, arg, what, exc, match in rows(cases):
        if exc:
            lines.append(f"| {_code('regops.' + op)} | {_code(arg)} | {_cell(what)} | {_code(exc)} | {_code(match)} |")
        else:
            lines.append(f"| {_code('regops.' + op)} | — | **{_cell(what)}** | — | finite outputs |")
    return "\n".join(lines)


def counts(cases=None) -> tuple:
    """(rejected rows, accepted rows, ops)."""
    table = rows(cases)
    rejected = sum(1 for r in table if r[3])
    return rejected, len(table) - rejected, len({r[0] for r in table})


def readme_section(text: str):
    """The text between the markers (without the newlines that frame it), or None when a marker is missing."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        return None
    return text[start + len(START):end].strip("\n")


def replace_section(text: str, table: str) -> str:
    start, end = text.find(START), text.find(END)
    return text[:start + len(START)] + "\n" + table + "\n" + text[end:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-readme", action="store_true",
                        help=f"replace the section of {README.name} between {START} and {END}")
    args = parser.parse_args(argv)
    table = render_markdown()
    rejected, accepted, ops = counts()
    summary = f"{rejected + accepted} rows: {rejected} rejected, {accepted} accepted, {ops} ops"
    if not args.write_readme:
        try:
            print(table)
        except BrokenPipeError:  # piped into head: the rest is not wanted
            sys.stdout = None
        print(summary, file=sys.stderr)  # not part of the table
        return 0
    text = README.read_text()
    if readme_section(text) is None:
        print(f"error: {README} lacks the markers {START} and {END} (in that order); add them where the table "
              "goes, then run this again", file=sys.stderr)
        return 1
    new = replace_section(text, table)
    if new != text:
        README.write_text(new)
    print(f"{README}: {'updated' if new != text else 'already up to date'}; {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
