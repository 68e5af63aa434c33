"""What the data-set generators share: writing a bundled CSV beside the loader."""

import csv
from pathlib import Path


def write_bundled(name: str, rows: list[dict], fields: list[str]) -> None:
    """Write ``rows`` to calibkit/datasets/<name>.csv (relative to this tools folder)."""
    out = Path(__file__).resolve().parents[1] / "calibkit" / "datasets" / f"{name}.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {out}")
