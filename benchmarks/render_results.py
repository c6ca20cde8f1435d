"""The latest headline result of each benchmark, written once: benchmarks/results.json, rendered into the
README's "Measured" table and the summary at the top of RESULTS.md.

A benchmark records its headline with ``_common.record_result(key, what, result)`` (host, date and
command filled in), which rewrites results.json and renders both tables again; tests/test_docs.py
checks that the README and RESULTS.md hold exactly this rendering, so a number is written once.

    python benchmarks/render_results.py          # rewrite both tables from results.json
    python benchmarks/render_results.py --check  # exit 1 when either is out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
README = HERE.parent / "README.md"
RESULTS_MD = HERE / "RESULTS.md"
START, END = "<!-- measured:start (rendered from benchmarks/results.json) -->", "<!-- measured:end -->"


def load_rows() -> list[dict]:
    return json.loads(RESULTS_JSON.read_text(encoding="utf-8"))["rows"]


def save_rows(rows: list[dict]) -> None:
    RESULTS_JSON.write_text(json.dumps({"rows": rows}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def table(rows: list[dict]) -> str:
    """The markdown table: what was measured, the result, the host it holds on, and the run."""
    lines = ["| what | result | host | run |", "|---|---|---|---|"]
    lines += [f"| {r['what']} | {r['result']} | {r['host']} | {r['date']}, `{r['command']}` |" for r in rows]
    return "\n".join(lines)


def block(rows: list[dict]) -> str:
    return f"{START}\n{table(rows)}\n{END}"


def _replace(text: str, rows: list[dict], where: Path) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"{where} has no {START} ... {END} block to render into")
    head, rest = text.split(START, 1)
    return head + block(rows) + rest.split(END, 1)[1]


def render(rows=None) -> dict[Path, str]:
    """The README and RESULTS.md with their tables rendered from ``rows`` (default: results.json)."""
    rows = load_rows() if rows is None else rows
    return {path: _replace(path.read_text(encoding="utf-8"), rows, path) for path in (README, RESULTS_MD)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rendered = render()
    if "--check" in argv:
        stale = [str(p) for p, text in rendered.items() if p.read_text(encoding="utf-8") != text]
        if stale:
            print(f"out of date with benchmarks/results.json: {', '.join(stale)} (run benchmarks/render_results.py)")
            return 1
        return 0
    for path, text in rendered.items():
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
