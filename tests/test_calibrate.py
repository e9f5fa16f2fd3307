"""Calibration and validation on the committed measurements (default allocator on the H100, expandable
segments on the H200): the committed profile is what ``qplan calibrate`` computes from them, held-out folds
never share a scenario's twin, and the plan's default safety margin is the one the validation justified."""

import json
import math
import subprocess
import sys

import pytest

from planner.fit.calibrate import calibrate, cross_validate, least_squares, load_measurements, split_halves
from planner.errors import QPlanError
from planner.memory.overhead import select_profile
from planner.pricing.price import PlanRequest, price
from planner.profiles import profiles_dir

MEASUREMENTS = profiles_dir() / "measurements" / "core-h100.jsonl"
EXPANDABLE = profiles_dir() / "measurements" / "core-expandable-h200.jsonl"
CALIBRATION = [MEASUREMENTS, EXPANDABLE] + [profiles_dir() / "measurements" / name
                                           for name in ("expandable-setting-h200.jsonl", "expandable-2-h200.jsonl")]
PROFILE = "h100-torch2.11"


def test_least_squares_recovers_coefficients_and_zeroes_empty_columns():
    rows = [[1.0, x, 0.0, x * x] for x in range(6)]
    ys = [3 + 2 * x - 0.5 * x * x for x in range(6)]
    assert least_squares(rows, ys) == pytest.approx([3, 2, 0, -0.5])


def test_least_squares_refuses_columns_it_cannot_separate():
    with pytest.raises(QPlanError, match="singular"):
        least_squares([[1.0, 2.0], [2.0, 4.0]], [1.0, 2.0])


def test_halves_keep_twins_together():
    records = load_measurements([MEASUREMENTS])
    first, second = split_halves(records)
    assert len(first) + len(second) == len(records)
    half_of = {r.scenario.name: 0 for r in first} | {r.scenario.name: 1 for r in second}
    for twin, original in (("llama-2-7b-r64-s2048-b1-trainer", "llama-2-7b-r64-s2048-b1"),
                           ("llama-2-7b-r64-s2048-b1-cap24", "llama-2-7b-r64-s2048-b1"),
                           ("llama-3.1-8b-r16-s2048-b1-paged8-trainer", "llama-3.1-8b-r16-s2048-b1-paged8")):
        assert half_of[twin] == half_of[original]


def test_committed_profile_is_what_calibrate_computes():
    committed = json.loads((profiles_dir() / "overhead" / f"{PROFILE}.json").read_text())
    fitted = calibrate(load_measurements(CALIBRATION), PROFILE, select_profile(name="literature-defaults"))
    assert json.loads(json.dumps(fitted.model_dump())) == committed


def test_held_out_accuracy_is_what_the_profile_records():
    report = cross_validate(load_measurements(CALIBRATION), select_profile(name="literature-defaults"))
    validation = select_profile(name=PROFILE).validation
    for stats, published in ((report.default, validation), (report.allocators["expandable_segments"], validation["expandable_segments"])):
        assert stats.median_device_error == pytest.approx(published["median_abs_device_error"], abs=5e-5)
        assert stats.max_device_error == pytest.approx(published["max_abs_device_error"], abs=5e-5)
        assert stats.max_allocated_error < 0.02  # the tensor formulas: every run within 2% of max_memory_allocated
    assert report.false_fits == []


def test_expandable_runs_are_predicted_with_their_own_terms_and_margin():
    """A run whose process had expandable segments is predicted with the profile's expandable terms, whether its
    scenario says so or only its provenance does; the plan's margin follows the allocator."""
    from planner.fit.calibrate import record_settings
    from planner.inputs.catalog import resolve_model
    from planner.memory.estimate import estimate

    profile = select_profile(name=PROFILE)
    record = load_measurements([EXPANDABLE])[0]
    assert not record.scenario.settings.expandable_segments and record_settings(record).expandable_segments
    arch, settings = resolve_model(record.scenario.model), record_settings(record)
    default = estimate(arch, settings.model_copy(update={"expandable_segments": False}), profile)
    expandable = estimate(arch, settings, profile)
    assert expandable.allocated_peak == default.allocated_peak and expandable.reserved_peak != default.reserved_peak
    assert profile.margin_share(True) == profile.expandable_segments.safety_margin != profile.margin_share(False)


def test_default_margin_is_the_profiles_share_of_the_uncertain_part_and_an_explicit_one_wins():
    from planner.inputs.catalog import resolve_model
    from planner.memory.estimate import estimate

    profile = select_profile(name=PROFILE)
    default = price(PlanRequest.named("7b", "h100")).plan
    est = estimate(resolve_model("7b"), default.settings, profile)
    assert 0 < est.exact_bytes < est.device_peak
    assert default.margin_bytes == math.ceil(profile.safety_margin * est.uncertain_bytes)
    assert default.gpu.budget_bytes == default.gpu.usable_bytes
    assert default.headroom_bytes == default.gpu.usable_bytes - default.peak_bytes - default.margin_bytes
    explicit = price(PlanRequest.named("7b", "h100", margin=0.02)).plan
    assert explicit.margin_bytes == 0 and "--margin" in explicit.gpu.margin_rule
    assert explicit.gpu.budget_bytes == int(explicit.gpu.usable_bytes * 0.98)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "planner.cli", *args], capture_output=True, text=True, timeout=120)


def test_validate_cli_prints_held_out_errors():
    result = run_cli("validate", str(MEASUREMENTS))
    assert result.returncode == 0, result.stderr
    assert "two-fold held-out fits" in result.stdout and "median |error|" in result.stdout


def test_calibrate_writes_a_user_profile_and_never_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    before = sorted(p.name for p in (profiles_dir() / "overhead").iterdir())
    result = run_cli("calibrate", str(MEASUREMENTS), "--name", "mine")
    assert result.returncode == 0, result.stderr
    written = tmp_path / "qplan" / "profiles" / "mine.json"
    assert written.is_file() and f"--profile {written}" in result.stdout
    assert sorted(p.name for p in (profiles_dir() / "overhead").iterdir()) == before
    assert select_profile("NVIDIA H100 80GB HBM3").name == PROFILE  # the new one is not a silent default
    assert select_profile(name=str(written)).name == "mine"
    again = run_cli("calibrate", str(MEASUREMENTS), "--name", "mine")
    assert again.returncode == 2 and "pass --force" in again.stderr and "Traceback" not in again.stderr


@pytest.mark.parametrize("name", ["../evil", "/tmp/x", "a/b", ""])
def test_calibrate_refuses_a_name_that_is_a_path(name):
    result = run_cli("calibrate", str(MEASUREMENTS), "--name", name)
    assert result.returncode == 2 and "not a path" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("field,value", [("peak_device", -5), ("peak_reserved", 10**30)])
def test_calibrate_refuses_impossible_peaks(tmp_path, field, value):
    rows = [json.loads(line) for line in MEASUREMENTS.read_text().splitlines() if line.strip()]
    first = next(row for row in rows if row["status"] == "ok")
    first[field] = value
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    result = run_cli("calibrate", str(bad), "--name", "x", "--out", str(tmp_path / "x.json"))
    assert result.returncode == 2 and "is not a peak a GPU of" in result.stderr
    assert not (tmp_path / "x.json").exists()


def test_corrupt_measurements_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(MEASUREMENTS.read_text().splitlines()[0] + "\n{\"scenario\": 1}\n")
    result = run_cli("validate", str(bad))
    assert result.returncode == 2 and "bad.jsonl: line 2" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_readme_publishes_the_profiles_validation():
    path = profiles_dir().parent / "README.md"
    if not path.is_file():
        pytest.skip("README not beside profiles/ (installed package)")
    readme = path.read_text()
    profile = select_profile(name=PROFILE)
    v = profile.validation
    e = v["expandable_segments"]
    assert f"| peak device memory (NVML) | {v['scenarios']} | {v['median_abs_device_error']:.1%} | {v['max_abs_device_error']:.1%} |" in readme
    assert f"| peak device memory, expandable segments | {e['scenarios']} | {e['median_abs_device_error']:.1%} | {e['max_abs_device_error']:.1%} |" in readme
    assert (f"| peak allocated (`max_memory_allocated`) | {v['scenarios']} | {v['median_abs_allocated_error']:.1%} | "
            f"{v['max_abs_allocated_error']:.1%} |") in readme
    assert f"{profile.safety_margin:.0%} of the estimated part for the default allocator" in readme
    assert f"{profile.expandable_segments.safety_margin:.0%} with expandable segments" in readme


@pytest.mark.parametrize("content", [b"\xff\xfe", b"[]", b'{"name": "x", "safety_margin": NaN}', b"{"])
def test_a_malformed_profile_fails_only_the_plans_that_name_it(tmp_path, monkeypatch, content):
    import shutil

    from planner.memory import overhead

    shutil.copytree(profiles_dir() / "overhead", tmp_path / "overhead")
    (tmp_path / "overhead" / "broken.json").write_bytes(content)
    monkeypatch.setattr(overhead, "profiles_dir", lambda: tmp_path)
    assert overhead.select_profile("NVIDIA H100 80GB HBM3").name == PROFILE
    with pytest.raises(QPlanError, match="broken.json"):
        overhead.select_profile(name="broken")
