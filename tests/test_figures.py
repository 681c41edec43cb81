"""The report's figures, checked through their artists: one colour per system in every panel and legend,
OOM marks without height, equal-precision speedups, names for YAML systems, no overprinted labels, and
vector output. Records are synthetic (the figures only read them), so these tests run no simulation."""

from __future__ import annotations

import itertools

import pytest
from matplotlib.colors import to_rgba

from kvnand.present.figures import figures, system_label, write_figures

STAGES = ("qkv", "attention", "ffn")


def rec(system, model, context, tps, precision="bf16"):
    oom = tps is None
    return {"system": system, "model": model, "context": context, "precision": precision, "mode": "fast",
            "oom": oom, "tokens_per_s": tps, "energy_j_per_token": None if oom else 1.0 / tps,
            "breakdown_s": {} if oom else dict.fromkeys(STAGES, 1 / tps / 3)}


# the first panel has base1 out of memory at every context (it used to shift the legend and the colours)
RESULTS = [rec("base1", "m1", 1000, None), rec("kvnand-c16", "m1", 1000, 4.0),
           rec("cambricon-llm-l", "m1", 1000, 3.0, "w8a8"),
           rec("base1", "m2", 1000, 2.0), rec("kvnand-c16", "m2", 1000, 5.0),
           rec("cambricon-llm-l", "m2", 1000, 2.5, "w8a8")]
REFS = [rec("base1", "m2", 1000, 4.0, "w8a8")]  # base1 at cambricon's precision


def _bars(ax):
    return [p for p in ax.patches if p.get_height() > 0]


def test_every_panel_and_legend_use_one_colour_per_system():
    figs = figures(RESULTS, REFS)
    assert set(figs) == {"throughput", "speedup", "energy", "breakdown"}
    for name in ("throughput", "speedup", "energy"):
        fig = figs[name]
        (legend,) = fig.legends
        labels = [t.get_text() for t in legend.get_texts()]
        assert labels == ["base1 (bf16)", "kvnand-c16 (bf16)", "cambricon-llm-l (w8a8)"]
        colour = {lab.split()[0]: to_rgba(h.get_facecolor()) for lab, h in zip(labels, legend.legend_handles,
                                                                                 strict=True)}
        assert len(set(colour.values())) == 3
        for ax in fig.axes:
            for bar in _bars(ax):  # each bar's colour is its system's legend colour
                assert to_rgba(bar.get_facecolor()) in colour.values()
        m2 = fig.axes[1]
        if name == "throughput":  # bars in system order: base1, kvnand-c16, cambricon
            assert [to_rgba(b.get_facecolor()) for b in _bars(m2)] == list(colour.values())


def test_oom_is_a_label_without_height():
    ax = figures(RESULTS, REFS)["throughput"].axes[0]
    assert len(_bars(ax)) == 2  # base1 is OOM: no bar, not even a stub
    ooms = [t for t in ax.texts if t.get_text() == "OOM"]
    assert len(ooms) == 1 and to_rgba(ooms[0].get_color()) == to_rgba("C0")


def test_speedup_is_at_equal_precision():
    ax = figures(RESULTS, REFS)["speedup"].axes[1]
    heights = sorted(round(b.get_height(), 6) for b in _bars(ax))
    # base1 1.0, kvnand-c16 5/2 (bf16), cambricon 2.5/4.0 (against base1 at w8a8, not 2.5/2)
    assert heights == [0.625, 1.0, 2.5]
    assert "equal precision" in ax.figure.get_suptitle()


def test_yaml_systems_are_labelled_by_name(tmp_path):
    from kvnand.paths import CONFIG_ROOT

    path = str(CONFIG_ROOT / "systems" / "base1.yaml")
    assert system_label(path) == "base1" and system_label(path + ":auto") == "base1:auto"
    assert system_label("kvnand-c16") == "kvnand-c16"


def _overlaps(texts, renderer) -> list:
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
    return [(a, b) for a, b in itertools.combinations(boxes, 2) if a.overlaps(b)]


def test_no_overprinted_tick_labels():
    long = [rec(f"some-long-custom-system-name-{i}", "m1", 1000, 1.0 + i) for i in range(8)]
    for fig in figures(long).values():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        inside = fig.bbox
        for legend in fig.legends:  # the legend fits inside the figure
            box = legend.get_window_extent(renderer)
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1
        for ax in fig.axes:
            assert not _overlaps(ax.get_xticklabels(), renderer)
            assert not _overlaps(ax.get_yticklabels(), renderer)


@pytest.mark.parametrize("suffix, magic", [(".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_vector_output(tmp_path, suffix, magic):
    written = write_figures(RESULTS, tmp_path / f"fig{suffix}", REFS)
    assert [p.name for p in written] == [f"fig{suffix}", f"fig-speedup{suffix}", f"fig-energy{suffix}",
                                         f"fig-breakdown{suffix}"]
    assert all(p.read_bytes().startswith(magic) for p in written)


def test_breakdown_axis_says_step_time_when_a_step_decodes_several_tokens():
    """breakdown_s sums to the decode step: per token without batching, a step of B sequences with it."""
    plain = figures(RESULTS, REFS)["breakdown"]
    assert {ax.get_xlabel() for ax in plain.axes if ax.get_xlabel()} == {"latency per token (ms)"}
    batched = [{**r, "step_latency_s": None if r["oom"] else 1 / r["tokens_per_s"]} for r in RESULTS]
    fig = figures(batched, REFS)["breakdown"]
    assert {ax.get_xlabel() for ax in fig.axes if ax.get_xlabel()} == {"decode step time (ms)"}
