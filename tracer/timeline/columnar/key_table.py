"""A sorted table of fixed-width keys and their int64 values, looked up and
grown a batch at a time (pass 1's keys: links.py).

Why not a dict: a 10 M-event trace has ~330 k keys (tuples, sockets,
threads, contexts) and ~110 k context tails; as Python ints in dicts they
took ~45 MiB (an int object per key and per value, and the dict's slots),
which pymalloc keeps after they are freed, so they set the peak of pass 2
as well. Here a key takes its bytes and a value 8, in arrays whose memory
goes back to the system when freed.

Keys of several integer columns are one void scalar of their bytes
(8 per column): numpy sorts and searches them by their bytes, an order
used only to find them again.
"""

from __future__ import annotations

import numpy as np


def row_keys(*cols: np.ndarray) -> np.ndarray:
    """Each row's columns as one fixed-width key (void, 8 bytes a column;
    equal rows, equal keys)."""
    if len(cols) == 1 and cols[0].dtype.itemsize == 8:
        return np.ascontiguousarray(cols[0]).view(np.uint64)
    stacked = np.empty((len(cols[0]), len(cols)), dtype=np.uint64)
    for i, col in enumerate(cols):
        stacked[:, i] = col.astype(np.uint64, copy=False) if col.dtype.kind == "u" \
            else col.astype(np.int64, copy=False).view(np.uint64)
    return stacked.view(f"V{8 * len(cols)}").reshape(-1)


class KeyTable:
    """Distinct keys (row_keys of one width) and per key its values, one
    int64 array per name."""

    def __init__(self, *names: str) -> None:
        self.keys: np.ndarray | None = None  # sorted
        self.values = {name: np.zeros(0, dtype=np.int64) for name in names}

    def __len__(self) -> int:
        return 0 if self.keys is None else len(self.keys)

    def find(self, keys: np.ndarray) -> np.ndarray:
        """Each key's row in the table, -1 when absent."""
        if self.keys is None or not len(self.keys) or not len(keys):
            return np.full(len(keys), -1, dtype=np.int64)
        at = np.searchsorted(self.keys, keys)
        inside = np.minimum(at, len(self.keys) - 1)
        return np.where((at < len(self.keys)) & (self.keys[inside] == keys), inside, -1)

    def add(self, keys: np.ndarray, **values: np.ndarray) -> None:
        """New keys (distinct, none in the table yet) with their values."""
        if not len(keys):
            return
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if self.keys is None or not len(self.keys):
            self.keys = keys
            for name in self.values:
                self.values[name] = values[name][order].astype(np.int64)
            return
        at = np.searchsorted(self.keys, keys)
        self.keys = np.insert(self.keys, at, keys)
        for name, column in self.values.items():
            self.values[name] = np.insert(column, at, values[name][order])

    def set(self, keys: np.ndarray, **values: np.ndarray) -> None:
        """Values of distinct keys, added where absent, replaced where present."""
        row = self.find(keys)
        known = row >= 0
        for name, column in self.values.items():
            column[row[known]] = values[name][known]
        fresh = ~known
        self.add(keys[fresh], **{name: v[fresh] for name, v in values.items()})
