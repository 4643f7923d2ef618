"""The table, and bench/RESULTS.md."""

from __future__ import annotations

from collections.abc import Sequence

from measure import Row

HEADER = ("measure", "ours", "compared with", "ratio", "target", "result")


def cells(row: Row) -> tuple[str, ...]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    return (row.measure, row.ours, row.baseline, ratio, row.target, row.result)


def text_table(rows: Sequence[Row]) -> str:
    lines = [HEADER, *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(
            cell.ljust(w) if i in (0, 2, 4, 5) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        )

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(HEADER), rule, *(fmt(c) for c in lines[1:])])


def markdown_table(rows: Sequence[Row]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|---|---:|---|---:|---|---|"]
    for row in rows:
        c = list(cells(row))
        c[0] = c[0].replace("  ", "&nbsp;&nbsp;", 1) if c[0].startswith("  ") else c[0]
        out.append("| " + " | ".join(x.replace("|", "\\|") for x in c) + " |")
    return "\n".join(out)


def details(rows: Sequence[Row]) -> list[str]:
    return [note for row in rows for note in row.notes]
