"""``qplan ... --report plan.html|plan.png``: the page is self-contained, the figure shows the plan's numbers,
bad report paths are refused before any work, and the page renders in a real browser (headless Chromium,
skipped where it is not installed)."""

from __future__ import annotations

import base64
import re
import shutil
import struct
import subprocess
import sys

import pytest

from planner.cli import main
from planner.inputs.settings import TrainSettings
from planner.inputs.units import gib
from planner.pricing.price import PlanRequest, price
from planner.search.grid import doubling_seq_lens

matplotlib = pytest.importorskip("matplotlib")

from planner.output import figures  # noqa: E402  (after the skip: it needs matplotlib only when drawing)
from planner.output.report import figures_data, html_report, plan_png  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURE_SIZE = (1200, 1000)  # 12 x 10 inches at 100 dpi


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def priced(model: str = "70b", gpu: str = "48GB", **fields):
    request = PlanRequest.named(model, gpu, **fields)
    return price(request).plan, request


@pytest.fixture(scope="module")
def plan_48():
    return priced()


def drawn(plan, request):
    fig = figures.plan_figure(figures_data(plan, request))
    bar, legend, step, curves = fig.axes
    return fig, bar, legend, step, curves


def by_gid(artists, prefix: str) -> list:
    return [a for a in artists if (a.get_gid() or "").startswith(prefix)]


# ---- the files ------------------------------------------------------------------------------------

def test_html_report_is_self_contained(tmp_path, capsys):
    path = tmp_path / "plan.html"
    assert main(["--model", "70b", "--gpu", "48GB", "--report", str(path)]) == 0
    assert f"wrote {path}" in capsys.readouterr().out
    page = path.read_text()
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*(https?:)?//""", page, re.I)  # nothing fetched
    assert "<script" not in page.lower() and "<link" not in page.lower() and "url(" not in page.lower()
    srcs = re.findall(r"<img[^>]*\ssrc='([^']*)'", page)
    assert len(srcs) >= 1
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert png_size(base64.b64decode(src.split(",", 1)[1], validate=True)) == FIGURE_SIZE
    assert "llama-2-70b" in page and "FITS with 1.25 GiB headroom" in page and "32.89" in page
    assert path.stat().st_size < 400_000


def test_png_report_is_the_figure_alone(tmp_path):
    path = tmp_path / "plan.png"
    assert main(["--model", "70b", "--gpu", "24GB", "--report", str(path)]) == 0
    data = path.read_bytes()
    assert png_size(data) == FIGURE_SIZE
    assert len(data) > 50_000  # a drawn figure, not an empty canvas


def test_json_output_is_unchanged_by_a_report(tmp_path, capsys):
    main(["--model", "70b", "--gpu", "48GB", "--json"])
    plain = capsys.readouterr().out
    main(["--model", "70b", "--gpu", "48GB", "--json", "--report", str(tmp_path / "p.png")])
    out = capsys.readouterr()
    assert out.out == plain  # the JSON contract is the same, and "wrote" goes to stderr
    assert f"wrote {tmp_path / 'p.png'}" in out.err


# ---- refusals, before any work -----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["plan.pdf", "plan.svg", "plan", "plan.html.txt"])
def test_a_suffix_other_than_html_or_png_is_refused(tmp_path, capsys, name):
    assert main(["--model", "70b", "--gpu", "48GB", "--report", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name it .html" in err and ".png" in err
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_needs_force(tmp_path, capsys):
    path = tmp_path / "plan.html"
    path.write_text("mine")
    assert main(["--model", "70b", "--gpu", "48GB", "--report", str(path)]) == 2
    captured = capsys.readouterr()
    assert "already exists; pass --force" in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""  # refused before the plan was priced or printed
    assert path.read_text() == "mine"
    assert main(["--model", "70b", "--gpu", "48GB", "--report", str(path), "--force"]) == 0
    assert path.read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.html"]  # no temp file left


def test_missing_matplotlib_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` fails, find_spec finds nothing
    assert main(["--model", "70b", "--gpu", "48GB", "--report", str(tmp_path / "plan.png")]) == 2
    err = capsys.readouterr().err
    assert err == 'qplan: error: reports need matplotlib: pip install "qplan[report]"\n'
    with pytest.raises(Exception, match=re.escape('pip install "qplan[report]"')):
        figures.plan_figure(None)


def test_planning_without_report_imports_no_matplotlib_or_numpy():
    code = ("import sys; from planner.cli import main; main(['--model', '70b', '--gpu', '24GB']); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'numpy', 'torch', 'PIL')); "
            "assert 'planner.output.report' not in sys.modules and not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# ---- what the figure shows -------------------------------------------------------------------------

def test_the_figure_has_its_panels(plan_48):
    fig, bar, legend, step, curves = drawn(*plan_48)
    assert len(fig.axes) == 4
    assert not legend.axison and legend.get_legend() is not None  # the components' names, beside the bar
    assert "GiB" in bar.get_ylabel() and "GiB" in step.get_ylabel() and "GiB" in curves.get_ylabel()
    assert "seq_len" in curves.get_xlabel()


def test_bar_segments_are_the_breakdown_in_gib_with_the_margin_on_top(plan_48):
    plan, _ = plan_48
    _, bar, legend, _, _ = drawn(*plan_48)
    segments = by_gid(bar.patches, "component:")
    assert [s.get_gid().removeprefix("component:") for s in segments] == list(plan.breakdown)
    assert [s.get_height() for s in segments] == pytest.approx([gib(b) for b in plan.breakdown.values()])
    bottoms = [s.get_y() for s in segments]
    assert bottoms == pytest.approx([0] + [sum(gib(b) for b in list(plan.breakdown.values())[:i])
                                           for i in range(1, len(segments))])
    (margin,) = by_gid(bar.patches, "margin")
    assert margin.get_y() == pytest.approx(gib(plan.peak_bytes))  # the stack adds up to the device peak
    assert margin.get_height() == pytest.approx(gib(plan.margin_bytes)) and margin.get_hatch()
    (usable,) = by_gid(bar.lines, "usable")
    assert usable.get_ydata()[0] == pytest.approx(gib(plan.gpu.usable_bytes))
    (words,) = by_gid(bar.texts, "headroom")
    assert f"{gib(plan.headroom_bytes):.2f} GiB" in words.get_text()
    names = [t.get_text() for t in legend.get_legend().get_texts()]
    assert "NF4 weights + double-quant constants: 32.89" in names and "safety margin: 1.58" in names


def test_overflow_is_labelled_when_nothing_fits():
    plan, request = priced(gpu="24GB")
    _, bar, *_ = drawn(plan, request)
    assert by_gid(bar.texts, "headroom") == []
    (words,) = by_gid(bar.texts, "overflow")
    assert f"over by\n{gib(-plan.headroom_bytes):.2f} GiB" == words.get_text() == "over by\n16.22 GiB"


def test_a_fixed_margin_draws_the_budget_line_and_no_hatched_margin():
    plan, request = priced("llama-3.1-8b", "24GB", margin=0.10)
    assert plan.margin_bytes == 0 and plan.gpu.budget_bytes < plan.gpu.usable_bytes
    _, bar, _, step, curves = drawn(plan, request)
    assert by_gid(bar.patches, "margin") == []
    for ax in (bar, step, curves):
        (budget,) = by_gid(ax.lines, "budget")
        assert budget.get_ydata()[0] == pytest.approx(gib(plan.gpu.budget_bytes))
        assert budget.get_linestyle() == "--"


def test_the_step_is_the_plans_phases_with_their_components(plan_48):
    plan, _ = plan_48
    _, _, _, step, _ = drawn(*plan_48)
    (line,) = by_gid(step.lines, "timeline")
    assert list(line.get_ydata()) == pytest.approx([gib(b) for b in plan.phases.values()])
    assert [t.get_text() for t in step.get_xticklabels()] == ["load", "forward", "backward", "optimizer"]
    stacks = by_gid(step.patches, "stack:")
    tops = {}
    for patch in stacks:  # the families of each phase add up to the phase's peak
        x = round(patch.get_x() + patch.get_width() / 2)
        tops[x] = tops.get(x, 0) + patch.get_height()
    assert [tops[x] for x in range(4)] == pytest.approx([gib(b) for b in plan.phases.values()])
    (device,) = by_gid(step.collections, "device-peak")
    assert device.get_offsets()[0][1] == pytest.approx(gib(plan.peak_bytes))


def test_the_timeline_hook_draws_any_points():
    """The hook a traced timeline (planner/trace) will use: (label, bytes) points, as many as there are."""
    from matplotlib.figure import Figure

    points = [(f"t{i}", (i % 4 + 1) * 2**30) for i in range(9)]
    ax = Figure().add_subplot()
    figures.timeline_axes(ax, points, figures.Card("card", 6 * 2**30, 5 * 2**30), title="traced")
    (line,) = by_gid(ax.lines, "timeline")
    assert list(line.get_ydata()) == [1, 2, 3, 4, 1, 2, 3, 4, 1]
    assert [t.get_text() for t in ax.get_xticklabels()] == [label for label, _ in points]
    assert by_gid(ax.patches, "stack:") == [] and ax.get_title(loc="left") == "traced"
    (budget,) = by_gid(ax.lines, "budget")
    assert budget.get_ydata()[0] == 5


def test_seq_len_curves_are_the_pricing_of_each_rank_over_the_grid(plan_48):
    plan, request = plan_48
    _, _, _, _, curves = drawn(*plan_48)
    ranks = sorted({plan.settings.rank, *(r.settings.rank for r in plan.recommendations)})
    assert ranks == [8, 16, 32]
    lines = by_gid(curves.lines, "curve:")
    assert [l.get_gid() for l in lines] == [f"curve:r={r}" for r in ranks]
    grid = doubling_seq_lens(plan.model.max_positions)
    assert grid == [256, 512, 1024, 2048, 4096]
    s = plan.settings
    for rank, line in zip(ranks, lines):
        assert list(line.get_xdata()) == grid
        for seq_len, y in zip(grid, line.get_ydata()):  # each point is what qplan prices for those settings
            exact = TrainSettings(**{**s.model_dump(), "rank": rank, "seq_len": seq_len})
            alone = price(PlanRequest.named("70b", "48GB", settings=exact, fixed=set(TrainSettings.model_fields))).plan
            assert y == pytest.approx(gib(alone.peak_bytes))
    (star,) = by_gid(curves.collections, "chosen")
    assert tuple(star.get_offsets()[0]) == pytest.approx((s.seq_len, gib(plan.peak_bytes)))
    (usable,) = by_gid(curves.lines, "usable")
    assert usable.get_ydata()[0] == pytest.approx(gib(plan.gpu.usable_bytes))


def test_points_that_do_not_fit_are_hollow(plan_48):
    plan, request = plan_48
    data = figures_data(plan, request)
    r32 = next(c for c in data.curves if c.label == "r=32")
    assert [fits for _, _, fits in r32.points] == [True, True, True, False, False]
    r16 = next(c for c in data.curves if c.label == "r=16")
    # r=16 at 2048 peaks below the usable line but not with its margin: the margin decides
    seq, peak, fits = r16.points[3]
    assert seq == 2048 and peak < plan.gpu.usable_bytes and not fits


# ---- in a browser ------------------------------------------------------------------------------------

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("headless Chromium is not installed (apt-get install chromium)")


def test_the_page_renders_in_headless_chromium(tmp_path, plan_48):
    browser = _chromium()
    plan, request = plan_48
    page = html_report(plan, plan_png(plan, request))
    # a copy with a probe (the report itself has no script): the title says whether each image decoded
    probe = page.replace("</body>", "<script>window.onload=()=>{document.title='loaded:'+[...document.images]"
                                    ".map(i=>i.complete&&i.naturalWidth+'x'+i.naturalHeight).join(',')}</script></body>")
    (tmp_path / "probe.html").write_text(probe)
    (tmp_path / "plan.html").write_text(page)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600"]
    dom = subprocess.run([browser, *flags, "--dump-dom", f"file://{tmp_path / 'probe.html'}"],
                         capture_output=True, text=True, timeout=120).stdout
    assert f"<title>loaded:{FIGURE_SIZE[0]}x{FIGURE_SIZE[1]}</title>" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", f"file://{tmp_path / 'plan.html'}"],
                   capture_output=True, timeout=120)
    from PIL import Image

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 1600)
    colours = image.getcolors(maxcolors=1 << 20)
    assert len(colours) > 50  # text, the bar's blues, greens and oranges, the lines: not a blank page
    nf4_blue = tuple(int(255 * c) for c in matplotlib.colormaps["Blues"](0.85)[:3])
    assert any(max(abs(a - b) for a, b in zip(rgb, nf4_blue)) <= 3 for _, rgb in colours)  # the figure is drawn


def test_components_fall_into_their_colour_families():
    expect = {"NF4 weights + double-quant constants": "frozen", "embeddings": "frozen", "lm_head": "frozen",
              "4-bit quant_state (whole on every GPU)": "frozen", "LoRA adapters (fp32)": "training",
              "gradients (accumulating)": "training", "optimizer state (paged, managed memory)": "training",
              "autocast copies of LoRA weights": "training", "lm_head autocast bf16 copy": "step",
              "activations kept for backward": "step", "dequantized weight (transient)": "step",
              "logits + cross-entropy backward": "step", "allocator fragmentation": "overhead",
              "CUDA context and other non-torch memory": "overhead", "cuBLAS workspace": "overhead"}
    assert {name: figures.family(name) for name in expect} == expect


def test_a_sharded_plan_is_drawn_per_gpu():
    from planner.inputs.settings import Parallel

    plan, request = priced(gpu="24GB", parallel=Parallel(gpus=3))
    _, bar, _, _, curves = drawn(plan, request)
    assert "each GPU" in bar.get_ylabel() and "each GPU" in curves.get_ylabel()
    segments = by_gid(bar.patches, "component:")
    assert sum(s.get_height() for s in segments) == pytest.approx(gib(plan.peak_bytes))
    assert gib(plan.peak_bytes) < 24  # the per-GPU peak, not the three cards' total


def test_the_committed_example_is_what_qplan_writes_now(tmp_path, plan_48):
    """examples/report/: the page for ``qplan --model 70b --gpu 48GB`` (its text; the PNG's pixels depend on the
    matplotlib build) and its Chromium screenshot, both small. Regenerate as examples/README.md says."""
    from pathlib import Path

    folder = Path(__file__).parents[1] / "examples" / "report"
    page, shot = folder / "plan-70b-48gb.html", folder / "plan-70b-48gb.png"
    assert page.stat().st_size < 400_000 and shot.stat().st_size < 400_000
    assert png_size(shot.read_bytes()) == (1200, 1600)
    plan, request = plan_48
    strip = lambda text: re.sub(r"base64,[A-Za-z0-9+/=]*", "base64,...", text)  # noqa: E731
    assert strip(page.read_text()) == strip(html_report(plan, b"")), "regenerate examples/report (examples/README.md)"
