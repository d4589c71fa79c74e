"""The report pieces: markdown and CSV tables, figures written atomically, the machine line."""

from pathlib import Path

import pytest

from pedconv.utils.reporting import csv_table, machine_description, markdown_table, pyplot, save_figure


def test_markdown_and_csv_tables() -> None:
    assert markdown_table(["a", "b"], [[1, "x"], [2.5, "y"]]) == "| a | b |\n| --- | --- |\n| 1 | x |\n| 2.5 | y |\n"
    assert csv_table([{"a": 1, "b": "x"}, {"a": 2, "b": "y, z"}]) == 'a,b\r\n1,x\r\n2,"y, z"\r\n'
    assert csv_table([]) == ""


def test_figures_are_written_atomically_and_closed(tmp_path: Path) -> None:
    plt = pyplot()
    if plt is None:
        pytest.skip("matplotlib not installed")
    fig = plt.figure()
    fig.gca().plot([1, 2], [3, 4])
    save_figure(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]
    assert not plt.fignum_exists(fig.number)


def test_machine_line() -> None:
    line = machine_description()
    assert " CPUs, torch " in line and line.endswith(" threads")
