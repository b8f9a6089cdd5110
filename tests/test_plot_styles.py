"""Plots stay readable with many optimizers: every line its own colour, style and marker."""

import math
from pathlib import Path

from matplotlib.colors import to_rgba

from dirgrad_opt.sweeps import analysis, plots


def _key(style):
    return (to_rgba(style["color"]), style["linestyle"], style["marker"])


def test_line_styles_are_distinct_for_up_to_forty_lines():
    for n in (3, 10, 11, 18, 20, 40):
        styles = [plots.line_style(i, n) for i in range(n)]
        assert len({_key(s) for s in styles}) == n, n
        # Up to 20 lines even the colours alone differ (the issue: colours repeated after 10).
        assert len({to_rgba(s["color"]) for s in styles}) == min(n, 20), n
    assert [plots.line_style(i, 4)["color"] for i in range(4)] == ["C0", "C1", "C2", "C3"]


def test_a_profile_of_eighteen_optimizers_draws_eighteen_distinct_lines(tmp_path, monkeypatch):
    names = [f"Opt{i:02d}" for i in range(18)]
    table = {
        f"p{j}": {o: (float(i + j + 1) if (i + j) % 3 else math.inf) for i, o in enumerate(names)}
        for j in range(4)
    }
    profile = analysis.performance_profile(table, "steps")
    seen = {}
    save = plots._save

    def capture(plt, fig, path):
        ax = fig.axes[0]
        seen["lines"] = [
            (line.get_label(), to_rgba(line.get_color()), line.get_linestyle(), line.get_marker())
            for line in ax.get_lines()
        ]
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        return save(plt, fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    path = plots.plot_profile(profile, tmp_path / "profile.png")
    assert Path(path).stat().st_size > 0
    assert sorted(label.split(" ")[0] for label, *_ in seen["lines"]) == names
    assert len({tuple(style) for _, *style in seen["lines"]}) == 18
    assert len(seen["legend"]) == 18
