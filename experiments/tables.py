"""The one table renderer: rows of raw values + column specs -> console (rich), markdown, JSON and W&B.

A :class:`Table` holds the rows as they are computed (plain dicts of numbers and strings, what the JSON
files keep) and a list of :class:`Column` specs that say how each cell is shown. Every table attune
prints or writes goes through it, so a table reads the same in the terminal, in a ``.md`` file, in the
``.json`` beside it and in W&B::

    table = Table([Column("variant", align="left"), mean_column("improvement"), interval_column("win_rate")],
                  rows, title="variants on the same users", caption="n = 32 ...")
    console.print(table.to_rich()); path.write_text(table.to_markdown()); table.to_records(); table.to_wandb()

Cells that need several fields (a mean and its half-width, a value and its interval) are formatted with
:func:`experiments.stats.format_mean` / :func:`~experiments.stats.format_interval` from the row's
``<prefix>ci95`` / ``<prefix>ci_low`` / ``<prefix>ci_high`` fields, the names every estimate is stored under
(:meth:`experiments.stats.Estimate.as_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.stats import format_interval, format_mean

Row = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Column:
    """One column: the row field it shows, its header, and how a cell is written.

    ``format`` is a format string applied to ``row[key]`` (``"{:+.3f}"``) or a callable that gets the whole
    row and returns the cell's text (for cells built from several fields). A row without the field (or with
    None) shows ``missing``. ``console_width`` caps the column in the terminal (long error messages).
    """

    key: str
    header: str | None = None
    format: str | Callable[[Row], str] = "{}"
    align: str = "right"
    missing: str = ""
    console_width: int | None = None

    @property
    def title(self) -> str:
        return self.header if self.header is not None else self.key

    def cell(self, row: Row) -> str:
        value = row.get(self.key)
        if value is None:
            return self.missing
        if callable(self.format):
            return self.format(row)
        try:
            return self.format.format(value)
        except (TypeError, ValueError):  # a number format given text: show the text
            return str(value)


def mean_column(key: str, header: str | None = None, prefix: str | None = None, **options: Any) -> Column:
    """``+0.123 ± 0.045``: ``row[key]`` with the half-width ``row[prefix + "ci95"]`` (prefix: ``key + "_"``)."""
    prefix = f"{key}_" if prefix is None else prefix
    return Column(key, header, lambda row: format_mean(row[key], row.get(f"{prefix}ci95")), **options)


def interval_column(key: str, header: str | None = None, prefix: str | None = None, digits: int = 2,
                    **options: Any) -> Column:
    """``0.62 [0.55, 0.69]``: ``row[key]`` with ``row[prefix + "ci_low"]`` and ``row[prefix + "ci_high"]``."""
    prefix = f"{key}_" if prefix is None else prefix
    return Column(key, header, lambda row: format_interval(row[key], row.get(f"{prefix}ci_low", math.nan),
                                                           row.get(f"{prefix}ci_high", math.nan), digits), **options)


def count_column(key: str, count_key: str, header: str | None = None, prefix: str | None = None, n_key: str = "n",
                 digits: int = 2, **options: Any) -> Column:
    """``20/32 = 0.62 [0.45, 0.77]``: a count of ``row[n_key]``, its rate ``row[key]`` and the rate's interval."""
    prefix = f"{key}_" if prefix is None else prefix

    def text(row: Row) -> str:
        rate = format_interval(row[key], row.get(f"{prefix}ci_low", math.nan), row.get(f"{prefix}ci_high", math.nan),
                               digits)
        return f"{row[count_key]}/{row[n_key]} = {rate}"

    return Column(key, header, text, **options)


def _markdown_cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _wandb_value(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    return json.dumps(value, default=str) if isinstance(value, (dict, list, tuple)) else str(value)


@dataclasses.dataclass
class Table:
    """Rows of raw values shown through column specs; one title and one caption (n, seeds, interval kinds).

    ``records`` are what :meth:`to_records`, :meth:`to_json` and :meth:`to_wandb` give (default: the rows
    themselves, every field, not only the shown ones): the machine-readable side keeps the numbers, the
    console and markdown sides show them formatted.
    """

    columns: Sequence[Column]
    rows: Sequence[Row]
    title: str = ""
    caption: str = ""
    records: Sequence[Row] | None = None

    def cells(self) -> list[list[str]]:
        return [[column.cell(row) for column in self.columns] for row in self.rows]

    def to_markdown(self, title: bool = True) -> str:
        """The title and caption as paragraphs, then a GitHub table (numbers right-aligned)."""
        lines = []
        if title and self.title:
            lines += [self.title, ""]
        if self.caption:
            lines += [self.caption, ""]
        def line(cells: Sequence[str]) -> str:
            return "|" + "|".join(f" {_markdown_cell(cell)} " if cell.strip() else " " for cell in cells) + "|"

        lines.append(line([c.title for c in self.columns]))
        lines.append(line(["---:" if c.align == "right" else "---" for c in self.columns]))
        lines += [line(cells) for cells in self.cells()]
        return "\n".join(lines) + "\n"

    def to_rich(self) -> Any:
        """A :class:`rich.table.Table` to ``console.print``."""
        from rich.table import Table as RichTable

        out = RichTable(title=self.title or None, caption=self.caption or None)
        for column in self.columns:
            options: dict[str, Any] = {"justify": column.align}
            if column.console_width:
                options |= {"max_width": column.console_width, "no_wrap": True, "overflow": "ellipsis"}
            out.add_column(column.title, **options)
        for cells in self.cells():
            out.add_row(*cells)
        return out

    def to_records(self) -> list[dict[str, Any]]:
        """The rows as plain dicts, every field (what the ``.json`` files hold)."""
        return [dict(r) for r in (self.records if self.records is not None else self.rows)]

    def to_json(self) -> str:
        return json.dumps(self.to_records(), indent=2, default=str) + "\n"

    def to_wandb(self) -> Any:
        """A :class:`wandb.Table` of the records: numbers stay numbers (sortable in W&B), a column whose values
        are not all numbers is written as text, so W&B's column types never clash."""
        import wandb

        from experiments.redact import redact

        records = self.to_records()
        keys: list[str] = []
        for record in records:
            keys += [k for k in record if k not in keys]

        def numeric(key: str) -> bool:
            values = [r.get(key) for r in records if r.get(key) is not None]
            return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)

        as_text = {k for k in keys if not numeric(k)}
        data = [[(None if r.get(k) is None else redact(str(_wandb_value(r[k])))) if k in as_text else r.get(k) for k in keys]
                for r in records]
        return wandb.Table(columns=keys, data=data)


def log_tables_to_wandb(tracking: Any, folder: Path, name: str, group: str, tables: Mapping[str, Table],
                        images: Mapping[str, Path] | None = None, config: dict[str, Any] | None = None) -> None:
    """One short W&B run holding summary tables (a sweep's results, a reward comparison), grouped with its runs.

    ``tracking`` is the config's ``tracking`` block: nothing is logged when W&B is disabled.
    """
    if tracking.wandb == "disabled" or not any(t.rows for t in tables.values()):
        return
    import os

    import wandb

    from experiments.tracking import wandb_settings

    os.environ.setdefault("WANDB_SILENT", "true")
    run = wandb.init(project=tracking.project, name=name, group=group, dir=str(folder), mode=tracking.wandb,
                     config=config, settings=wandb_settings())
    logged: dict[str, Any] = {key: table.to_wandb() for key, table in tables.items()}
    logged |= {key: wandb.Image(str(path)) for key, path in (images or {}).items() if Path(path).is_file()}
    run.log(logged)
    run.finish()


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``a/b/c`` keys, numbers and strings only: how a result lands in a W&B run's summary."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        elif isinstance(value, (int, float, str)):
            flat[name] = value
    return flat


def rows_of(items: Iterable[Any]) -> list[dict[str, Any]]:
    """Dataclasses (e.g. :class:`experiments.stats.SeedSummary`) or mappings as table rows."""
    out = []
    for item in items:
        if hasattr(item, "as_dict"):
            out.append(item.as_dict())
        elif dataclasses.is_dataclass(item):
            out.append(dataclasses.asdict(item))
        else:
            out.append(dict(item))
    return out
