"""Report objects: a titled table of rows that prints, and converts to dict, JSON and markdown.

Every pass of the toolkit (sparsity, shrink, export, pruning, planting) returns a subclass of
:class:`Report` instead of printing, so the caller decides where it goes.

Examples:
    >>> from tf_groupsparse.report import Report
    >>> r = Report("demo", [{"layer": "conv1", "params": 320}], totals={"params": 320})
    >>> print(r.to_markdown().splitlines()[0])
    | layer | params |
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.3e}"
        return f"{value:.4g}"
    return str(value)


def _plain(value):
    """Python scalars and lists only, so the result is JSON-serializable."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass
class Report:
    """A titled table (one dict per row) with optional totals and free-form metadata.

    Args:
        title: one-line heading.
        rows: list of dicts; the columns are the union of their keys, in first-seen order.
        totals: dict of summary figures (printed under the table).
        meta: anything else worth keeping (settings, versions); kept in ``to_dict``.

    Examples:
        >>> import json
        >>> r = Report("Layers", [{"layer": "conv1", "params": 320}, {"layer": "fc", "params": 1290}],
        ...            totals={"params": 1610})
        >>> print(r)
        Layers
        layer  params
        -----  ------
        conv1     320
           fc   1,290
        params: 1,610
        >>> Report(**json.loads(r.to_json())) == r    # what to_json writes loads back
        True
    """

    title: str
    rows: list = field(default_factory=list)
    totals: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    @property
    def columns(self) -> list:
        cols: list = []
        for row in self.rows:
            cols.extend(k for k in row if k not in cols)
        return cols

    def to_dict(self) -> dict[str, Any]:
        return _plain(
            {"title": self.title, "rows": self.rows, "totals": self.totals, "meta": self.meta}
        )

    def to_json(self, path=None, indent=2) -> str:
        """The report as JSON text; also written to `path` when given."""
        text = json.dumps(self.to_dict(), indent=indent)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        return text

    def to_markdown(self) -> str:
        cols = self.columns
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in cols) + " |")
        if self.totals:
            lines.append("")
            lines.extend(f"- {k}: {_fmt(v)}" for k, v in self.totals.items())
        return "\n".join(lines)

    def __str__(self) -> str:
        cols = self.columns
        cells = [[_fmt(row.get(c, "")) for c in cols] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(cols)]
        out = [self.title]
        if cols:
            out.append("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
            out.append("  ".join("-" * w for w in widths))
            out.extend("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells)
        out.extend(f"{k}: {_fmt(v)}" for k, v in self.totals.items())
        return "\n".join(out)

    def _repr_markdown_(self) -> str:  # shown as a table in Jupyter
        return f"**{self.title}**\n\n" + self.to_markdown()
