"""tensors.json (checkpoint format 4) read and written the way a test edits it: as rows, from
the file's own JSON, not through the codec under test."""

import json
from pathlib import Path

COLUMNS = ("keys", "dtypes", "shapes", "pack", "offsets", "sizes")
DIGITS = 32  # an XXH3-128 in hex


def index_of(folder: Path) -> tuple[list[str], list[list]]:
    """The pack names and the rows [key, dtype, shape, pack number, offset, size, hash]."""
    index = json.loads((Path(folder) / "tensors.json").read_text())
    hashes = index["hashes"]
    rows = [[*row, hashes[DIGITS * i:DIGITS * (i + 1)]] for i, row in enumerate(zip(*(index[c] for c in COLUMNS)))]
    return index["packs"], rows


def rows_by_key(folder: Path) -> dict[str, list]:
    return {row[0]: row for row in index_of(folder)[1]}


def index_text(packs: list[str], rows: list[list]) -> bytes:
    """tensors.json of these rows."""
    columns = {name: [row[i] for row in rows] for i, name in enumerate(COLUMNS)}
    return json.dumps({"packs": packs, **columns, "hashes": "".join(row[6] for row in rows)}).encode()
