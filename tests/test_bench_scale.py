"""bench/scale.py: a later run of some evaluate sizes keeps the rows of the others."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale  # noqa: E402


def row(images: int) -> dict:
    return {"images": images, "peak_rss_mib": 1000.0, "wall_s": 1.0, "cpu_s": 1.0}


def test_a_later_size_keeps_the_other_rows_and_both_commands():
    results = {"evaluate": [row(1000), row(10000)], "evaluate-date": "2026-12-03", "evaluate-command": "python bench/scale.py --evaluate-sizes 1000,10000"}
    scale.redo_evaluate_sizes(results, {"date": "2026-12-04", "command": "python bench/scale.py --evaluate-sizes 50000"}, [50000])
    assert [r["images"] for r in results["evaluate"]] == [1000, 10000]
    assert results["evaluate-date"] == "2026-12-03; 2026-12-04"
    assert results["evaluate-command"] == "python bench/scale.py --evaluate-sizes 1000,10000; python bench/scale.py --evaluate-sizes 50000"


def test_redoing_every_size_starts_afresh():
    results = {"evaluate": [row(1000)], "evaluate-date": "2026-12-03", "evaluate-command": "old"}
    scale.redo_evaluate_sizes(results, {"date": "2026-12-04", "command": "new"}, [1000])
    assert results == {"evaluate": [], "evaluate-date": "2026-12-04", "evaluate-command": "new"}
