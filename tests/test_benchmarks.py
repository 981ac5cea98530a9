"""benchmarks/: both scripts run end to end in --quick mode and write what docs/benchmarks.md shows.

The two scripts run concurrently in subprocesses (each sets up its own TF runtime, and XLA
compilation is mostly single-threaded, so two cores overlap them well). No timing asserts:
only that every variant was measured, the ratios and targets exist, replicas agree, and the
warmup experiment wrote its plot and table with both arms.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from trainer import schedules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIANTS = {  # the mlp's (small_cnn adds device_loop_xla_spl100)
    "ours_spl100", "ours_const_lr_spl100", "ours_spl1", "ours_tfdata_spl100",
    "ours_tfdata_spl1", "device_step_xla_spl100", "orbit_spl100",
    "fit_spe1", "fit_spe100", "limit_step_xla", "limit_no_xla", "limit_loop_xla",
    "input_device", "input_tfdata"}
RATIOS = {"ours_vs_limit", "ours_vs_orbit", "ours_vs_fit_spe1", "schedule_vs_constant"}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
  """Runs both scripts with --quick at once; returns {module: (out_dir, CompletedProcess)}."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  procs = {}
  for module in ("benchmarks.throughput", "benchmarks.warmup_experiment"):
    base = tmp_path_factory.mktemp(module.split(".")[1])
    out_dir = base / "out"
    # Separate data_dirs: two processes preparing digits in one directory would race.
    args = [sys.executable, "-m", module, "--quick", f"--out_dir={out_dir}",
            f"--data_dir={base / 'tfds'}"]
    procs[module] = (out_dir, subprocess.Popen(args, cwd=base, env=env, text=True,
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  results = {}
  for module, (out_dir, proc) in procs.items():
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{module} failed:\n{stderr[-4000:]}"
    results[module] = (out_dir, stdout)
  return results


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_throughput_measures_every_variant_and_reports_ratios_and_targets(quick_runs):
  out_dir, stdout = quick_runs["benchmarks.throughput"]
  results = json.loads((out_dir / "throughput.json").read_text())
  mlp = results["models"]["mlp"]
  assert set(mlp["variants"]) == VARIANTS
  for name, v in mlp["variants"].items():
    assert _positive(v["examples_per_sec"]), name
    assert v["compile_s"] >= 0 and _positive(v["first_call_s"]), name
    assert _positive(v["rss_mb_after_first_call"]) and _positive(v["process_peak_rss_mb"])
  assert mlp["limit"] in ("limit_step_xla", "limit_no_xla", "limit_loop_xla")
  assert RATIOS <= set(mlp["ratios"])
  assert all(_positive(r) for r in mlp["ratios"].values())
  rows = {t["ratio"]: t for t in results["targets"] if t["model"] == "mlp"}
  assert set(rows) == RATIOS
  for t in rows.values():
    assert t["pass"] == (t["value"] >= t["minimum"])
    assert ("PASS" if t["pass"] else "FAIL") in stdout
  assert results["machine"]["tensorflow"] and results["machine"]["cores"] >= 1
  markdown = (out_dir / "throughput.md").read_text()  # the tables docs/benchmarks.md shows
  assert "| `ours_spl100` |" in markdown and "| mlp | ours_vs_limit |" in markdown


def test_throughput_replicas_train_to_the_same_weights(quick_runs):
  out_dir, _ = quick_runs["benchmarks.throughput"]
  scaling = json.loads((out_dir / "throughput.json").read_text())["scaling"]["mlp"]
  assert set(scaling["variants"]) == {"one_device", "mirrored_1", "mirrored_2"}
  for name, v in scaling["variants"].items():
    assert _positive(v["examples_per_sec"]), name
    assert v["weights_match"], (name, v["max_rel_update_diff"])
    assert v["loss_rel_diff"] < 1e-3, name
  assert scaling["variants"]["mirrored_2"]["replicas"] == 2


def test_warmup_experiment_writes_plot_and_table_with_both_arms(quick_runs):
  out_dir, stdout = quick_runs["benchmarks.warmup_experiment"]
  png = out_dir / "warmup_experiment.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  table = (out_dir / "warmup_experiment.md").read_text()
  assert "| warmup |" in table and "| no_warmup |" in table and "| warmup |" in stdout
  blob = json.loads((out_dir / "warmup_experiment.json").read_text())
  assert set(blob["table"]) == {"warmup", "no_warmup"}
  runs = {r["arm"]: r for r in blob["runs"]}
  assert set(runs) == {"warmup", "no_warmup"}
  steps = blob["settings"]["total_steps"]
  for arm, run in runs.items():
    assert run["train_loss"], arm  # curves come from the workdir's TensorBoard events
    assert max(int(s) for s in run["train_loss"]) == steps or run["diverged"]
    if not run["nonfinite"]:
      assert 0.0 <= run["eval_accuracy"] <= 1.0
    assert blob["table"][arm]["divergences"] in (0, 1)
  # Each arm trained with its own schedule: warmup from the base LR, or the scaled peak at once.
  st = blob["settings"]
  for arm, (warmup, start) in {"warmup": (st["warmup_steps"], st["base_lr"]),
                               "no_warmup": (0, 0.0)}.items():
    for step, lr in runs[arm]["learning_rate"].items():
      assert lr == pytest.approx(schedules.lr_warmup_cosine_decay(
          int(step), warmup, 0, steps, start, st["peak_lr"]), rel=1e-5)
