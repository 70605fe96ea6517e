#!/usr/bin/env python3
"""A cost-model profile from the output of llama.cpp's own `llama-batched-bench`.

    python scripts/batched_bench_profile.py NAME=TABLE.md [NAME=TABLE.md ...] --machine TEXT --out profile.json

Where specs-local cannot run (a GPU machine without it, or figures someone published), llama.cpp's
`llama-batched-bench -npp P1,P2,... -ntg T -npl 1,2,4,...` measures what the cost model needs: per
model NAME, its table (the `main: ... n_ubatch = U ...` line and the rows `| PP | TG | B | ...`) gives

- decode_tps: S_TG by B at the smallest PP (B sequences decoding together, one row each);
- prefill_tps and prefill_tps_by_batch: S_PP at the smallest PP, by the rows a call held (PP x B,
  at most the micro-batch U);
- decode_row_seconds_by_depth: what a row of a 4-sequence decode pays more at PP + TG/2 cells
  than at the smallest PP (`specs-local profile` measures it with 4 forks too);
- prefill_row_seconds_by_depth: what a prefill row pays more at PP/2 cells, from B = 1.

Decodes of 16 to 32 rows and prefills shorter than PP are not in such a table; the cost model
interpolates between the sizes it has. `specs-local bench --report-only --predict-on profile.json
--model-map RUN-FILE=NAME,...` then prices a run's recorded decodes on that machine.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from specs_local.costmodel import save_profile  # noqa: E402
from specs_local.errors import SpecsError  # noqa: E402

COLUMNS = ("PP", "TG", "B", "N_KV", "T_PP", "S_PP", "T_TG", "S_TG", "T", "S")
DEPTH_ROWS = 4  # the decode width of the depth table, as `specs-local profile` measures it


def read_table(text: str) -> tuple[list[dict], int | None]:
    """The numeric rows of a batched-bench table, and its micro-batch (n_ubatch), if stated."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == len(COLUMNS) and all(re.fullmatch(r"\d+(\.\d+)?", c) for c in cells):
            rows.append(dict(zip(COLUMNS, map(float, cells))))
    ubatch = re.search(r"n_ubatch\s*=\s*(\d+)", text)
    return rows, int(ubatch.group(1)) if ubatch else None


def model_entry(rows: list[dict], ubatch: int | None) -> dict:
    """One model's profile entry (see the module's doc)."""
    shallow = min(r["PP"] for r in rows)
    top = [r for r in rows if r["PP"] == shallow]
    single = {r["PP"]: r for r in rows if r["B"] == 1}
    if shallow not in single:
        raise SpecsError("the table needs a row with B = 1 at its smallest PP")
    prefill_by_batch = {}
    for r in sorted(top, key=lambda r: r["B"]):
        size = int(r["PP"] * r["B"]) if ubatch is None else min(int(r["PP"] * r["B"]), ubatch)
        prefill_by_batch.setdefault(str(size), r["S_PP"])
    entry = {"prefill_tps": single[shallow]["S_PP"], "prefill_tps_by_batch": prefill_by_batch,
             "decode_tps": {str(int(r["B"])): r["S_TG"] for r in top}}
    width = min({r["B"] for r in rows}, key=lambda b: abs(b - DEPTH_ROWS))
    decode_row = {r["PP"]: (r["TG"], r["T_TG"] / (r["B"] * r["TG"])) for r in rows if r["B"] == width}
    if len(decode_row) > 1:
        base = decode_row[shallow][1]
        entry["decode_row_seconds_by_depth"] = {str(int(pp + tg / 2)): round(max(seconds - base, 0.0), 9)
                                                for pp, (tg, seconds) in sorted(decode_row.items())}
    if len(single) > 1:
        base = single[shallow]["T_PP"] / shallow
        entry["prefill_row_seconds_by_depth"] = {str(int(pp / 2)): round(max(r["T_PP"] / pp - base, 0.0), 9)
                                                 for pp, r in sorted(single.items())}
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", nargs="+", metavar="NAME=TABLE", help="a model's name and its batched-bench output")
    parser.add_argument("--machine", required=True, help="what ran it, e.g. 'NVIDIA GB10, llama.cpp b6989'")
    parser.add_argument("--n-gpu-layers", type=int, default=-1, help="the layers offloaded (-1: all)")
    parser.add_argument("--source", default=None, help="where the figures come from, kept in the profile")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    models = {}
    try:
        for pair in args.tables:
            name, sep, path = pair.partition("=")
            if not sep or not name or not path:
                raise SpecsError(f"{pair!r} is not NAME=TABLE")
            try:
                rows, ubatch = read_table(Path(path).read_text(encoding="utf-8"))
            except OSError as error:
                raise SpecsError(f"cannot read {path}: {error.strerror or error}") from None
            if not rows:
                raise SpecsError(f"{path} has no llama-batched-bench rows (| PP | TG | B | N_KV | ... |)")
            models[name] = model_entry(rows, ubatch)
        profile = {"machine": args.machine, "threads": None, "n_gpu_layers": args.n_gpu_layers, "models": models}
        if args.source:
            profile["source"] = args.source
        save_profile(profile, args.out)
    except SpecsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {', '.join(models)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
