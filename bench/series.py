"""What the benchmarks that measure along an axis share (``curves.py``: step budgets, ``translation.py``: translation
starts): cells grouped by row and position, their mean and spread over seeds, and publications merged across the
parts a table runs in."""

from __future__ import annotations

import statistics


def mean_sd(cells: list[dict], column: str) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value) of ``column`` over the cells that have it."""
    values = [cell[column] for cell in cells if cell.get(column) is not None]
    if not values:
        return float("nan"), None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def grouped(cells: list[dict], target: str, row: str, position: str) -> dict[str, dict[int, list[dict]]]:
    """``row value -> position -> cells`` of one target, rows in the order they first come, positions sorted."""
    table: dict[str, dict[int, list[dict]]] = {}
    for cell in cells:
        if cell["target"] == target:
            table.setdefault(cell[row], {}).setdefault(cell[position], []).append(cell)
    return {name: dict(sorted(positions.items())) for name, positions in table.items()}


def merged_entries(earlier: list[dict], entries: list[dict], key: tuple[str, ...]) -> list[dict]:
    """``entries`` after the ``earlier`` ones that they do not redo (the same values of ``key``)."""
    redone = {tuple(entry[k] for k in key) for entry in entries}
    return [entry for entry in earlier if tuple(entry[k] for k in key) not in redone] + entries


def merged_commands(earlier: str, later: str) -> str:
    """The commands of an earlier publication, then a later one's, each once (either may itself be a merged
    publication, its commands joined by "; ")."""
    return "; ".join(dict.fromkeys([*earlier.split("; "), *later.split("; ")]))


def merged_settings(earlier: dict, settings: dict) -> dict:
    """``settings`` with the targets and commands of an ``earlier`` publication before its own."""
    return {
        **settings,
        "targets": list(dict.fromkeys([*earlier["targets"], *settings["targets"]])),
        "command": merged_commands(earlier["command"], settings["command"]),
    }
