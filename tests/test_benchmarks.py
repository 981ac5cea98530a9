"""benchmarks/: the scripts run end to end in --quick mode and write what docs/benchmarks.md shows.

Four runs go concurrently in subprocesses (each sets up its own TF runtime, and XLA
compilation is mostly single-threaded, so two cores overlap them well): the throughput
script's variants and replicas suites, its seed and pipeline suites, the warmup
experiment and the range-test sweep. No timing asserts: only that every variant was
measured, the ratios and targets exist, replicas agree, the seed and pipeline suites measured
every way and wrote their tables, the warmup experiment wrote its plot and table with both
arms, and the sweep trained every peak and each proposal.
"""

import json
import math
import os
import subprocess
import sys

import pytest

from benchmarks import imagenet_pipeline, seed_recipe
from trainer import schedules

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

VARIANTS = {  # the mlp's (small_cnn adds device_loop_xla_spl100)
    "ours_spl100", "ours_const_lr_spl100", "ours_accum4_spl100", "ours_spl1",
    "ours_tfdata_spl100",
    "ours_tfdata_spl1", "device_step_xla_spl100", "orbit_spl100",
    "fit_spe1", "fit_spe100", "limit_step_xla", "limit_no_xla", "limit_loop_xla",
    "input_device", "input_tfdata"}
RATIOS = {"ours_vs_limit", "ours_vs_orbit", "ours_vs_fit_spe1", "schedule_vs_constant"}


RUNS = {  # name -> (module, extra flags)
    "benchmarks.throughput": ("benchmarks.throughput", ["--suite=variants,replicas"]),
    "suites": ("benchmarks.throughput", ["--suite=seed,pipeline"]),
    # With the accumulating twins: k = 4 micro-batches of 16 reach the quick run's batch.
    "benchmarks.warmup_experiment": ("benchmarks.warmup_experiment",
                                     ["--accum_micro_batch=16"]),
    "benchmarks.lr_sweep": ("benchmarks.lr_sweep", []),
}


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
  """Runs the scripts with --quick at once; returns {run name: (out_dir, stdout)}."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  procs = {}
  for name, (module, extra) in RUNS.items():
    base = tmp_path_factory.mktemp(name.split(".")[-1])
    out_dir = base / "out"
    # Separate data_dirs: two processes preparing digits in one directory would race.
    args = [sys.executable, "-m", module, "--quick", f"--out_dir={out_dir}",
            f"--data_dir={base / 'tfds'}", *extra]
    procs[name] = (out_dir, subprocess.Popen(args, cwd=base, env=env, text=True,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE))
  results = {}
  for name, (out_dir, proc) in procs.items():
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 0, f"{name} failed:\n{stderr[-4000:]}"
    results[name] = (out_dir, stdout)
  return results


def _positive(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow  # the benchmarks' quick runs: the slow tier
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
  assert mlp["ratios"]["accum4_vs_ours"] > 0  # the cost of accumulation per example
  assert all(_positive(r) for r in mlp["ratios"].values())
  rows = {t["ratio"]: t for t in results["targets"]
          if t["model"] == "mlp" and t["bound"].startswith(">=")}  # <=: the scaling suite's
  assert set(rows) == RATIOS
  for t in rows.values():
    assert t["bound"].startswith(">= ") and t["pass"] == (t["value"] >= float(t["bound"][3:]))
    assert ("PASS" if t["pass"] else "FAIL") in stdout
  assert results["machine"]["tensorflow"] and results["machine"]["cores"] >= 1
  markdown = (out_dir / "throughput.md").read_text()  # the tables docs/benchmarks.md shows
  assert "| `ours_spl100` |" in markdown and "| mlp | ours_vs_limit |" in markdown


@pytest.mark.slow  # the benchmarks' quick runs: the slow tier
def test_throughput_replicas_train_to_the_same_weights(quick_runs):
  out_dir, _ = quick_runs["benchmarks.throughput"]
  scaling = json.loads((out_dir / "throughput.json").read_text())["scaling"]["mlp"]
  assert set(scaling["variants"]) == {"one_device", "mirrored_1", "mirrored_2",
                                      "mirrored_1_tfdata", "mirrored_2_tfdata"}
  for name, v in scaling["variants"].items():
    assert _positive(v["examples_per_sec"]) and _positive(v["time_vs_one_device"]), name
    assert v["weights_match"], (name, v["max_rel_update_diff"])
    assert v["loss_rel_diff"] < 1e-3, name
    assert v["input"] == ("tf.data" if name.endswith(("_tfdata", "device")) else "device")
  assert scaling["variants"]["mirrored_2"]["replicas"] == 2
  assert set(scaling["time_ratios"]) == {"mirrored_1_vs_tfdata", "mirrored_2_vs_tfdata"}
  results = json.loads((out_dir / "throughput.json").read_text())
  [row] = [t for t in results["targets"] if t["ratio"] == "mirrored_2_time_vs_one_device"]
  assert row["bound"] == "<= 1.3" and row["pass"] == (row["value"] <= 1.3)


@pytest.mark.slow  # the benchmarks' quick runs: the slow tier
def test_seed_suite_measures_every_variant_in_its_own_process(quick_runs):
  out_dir, stdout = quick_runs["suites"]
  results = json.loads((out_dir / "throughput.json").read_text())
  assert results["settings"]["suites"] == ["seed", "pipeline"]
  assert "models" not in results or not results["models"]  # the variants suite did not run
  m = results["seed"]["models"]["mlp"]
  assert set(m["variants"]) == set(seed_recipe.VARIANTS)
  for name, v in m["variants"].items():
    assert _positive(v["examples_per_sec"]) and _positive(v["us_per_step"]), name
    assert v["compile_s"] >= 0 and _positive(v["first_call_s"]), name
    assert _positive(v["peak_rss_mb"]) and len(v["repeats_s"]) == m["repeats"], name
  for name in ("fit_schedule", "fit_callback", "fit_spe"):  # the guide's: jit_compile=True
    assert "XLA program" in m["variants"][name]["xla"], name
  assert m["variants"]["fit_spe_nojit"]["xla"].startswith("nothing")
  assert m["variants"]["ours"]["xla"].startswith("input device")  # the trainer's Execution
  assert m["best_guide_fit"] in seed_recipe.GUIDE
  assert set(m["ratios"]) == {"ours_vs_best_guide_fit", "ours_vs_best_fit",
                              "fit_spe_jit_vs_nojit"}
  assert all(_positive(r) for r in m["ratios"].values())
  markdown = (out_dir / "throughput.md").read_text()
  assert "| `ours` |" in markdown and "| `fit_callback` |" in markdown
  assert "ours / best guide fit" in markdown and "fit_schedule" in stdout


@pytest.mark.slow  # the benchmarks' quick runs: the slow tier
def test_pipeline_suite_measures_every_way_and_the_cores_to_feed(quick_runs):
  out_dir, stdout = quick_runs["suites"]
  p = json.loads((out_dir / "throughput.json").read_text())["pipeline"]
  assert set(p["cores"]) == {"1"}
  assert set(p["cores"]["1"]) == set(imagenet_pipeline.WAYS)
  for way, v in p["cores"]["1"].items():
    assert _positive(v["images_per_s"]) and _positive(v["images_per_cpu_s"]), way
    assert all(x["images"] == p["batch"] * p["batches_per_pass"] for x in v["passes"]), way
  assert set(p["feeding"]) == set(imagenet_pipeline.ACCELERATORS)
  for name, f in p["feeding"].items():
    assert _positive(f["images_per_s"]) and f["source"], name
    assert set(f["host_cores"]) == set(imagenet_pipeline.WAYS), name
    assert all(_positive(c) for c in f["host_cores"].values()), name
  assert _positive(p["mean_jpeg_bytes"])
  markdown = (out_dir / "throughput.md").read_text()
  assert "| `trainer_streaming` | 1 |" in markdown and "Host cores to feed" in markdown
  assert "ASSUMPTION" in markdown and "keras_directory" in stdout


def test_throughput_refuses_an_unknown_suite(tmp_path):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--suite=seed,bogus",
                         f"--out_dir={tmp_path}"], cwd=tmp_path, env=env, text=True,
                        capture_output=True, timeout=300)
  assert proc.returncode != 0 and "--suite: unknown bogus" in proc.stderr + proc.stdout
  assert not (tmp_path / "throughput.json").exists()


ARMS = {"warmup", "no_warmup", "warmup_accum", "no_warmup_accum"}


@pytest.mark.slow  # the benchmarks' quick runs: the slow tier
def test_warmup_experiment_writes_plot_and_table_with_both_arms(quick_runs):
  out_dir, stdout = quick_runs["benchmarks.warmup_experiment"]
  png = out_dir / "warmup_experiment.png"
  assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  table = (out_dir / "warmup_experiment.md").read_text()
  assert "| warmup |" in table and "| no_warmup |" in table and "| warmup |" in stdout
  assert "| warmup_accum |" in table
  blob = json.loads((out_dir / "warmup_experiment.json").read_text())
  assert set(blob["table"]) == ARMS
  runs = {r["arm"]: r for r in blob["runs"]}
  assert set(runs) == ARMS
  assert blob["settings"]["grad_accum_steps"] == 4
  # The twins compute the same updates in slices: their curves agree up to float rounding.
  assert blob["twins"]["warmup"]["max_abs_train_loss_curve_diff"] < 1e-2
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
    for step, lr in [*runs[arm]["learning_rate"].items(),
                     *runs[arm + "_accum"]["learning_rate"].items()]:  # the same schedule
      assert lr == pytest.approx(schedules.lr_warmup_cosine_decay(
          int(step), warmup, 0, steps, start, st["peak_lr"]), rel=1e-5)


@pytest.mark.slow
def test_lr_sweep_trains_every_peak_and_each_proposal(quick_runs):
  out_dir, stdout = quick_runs["benchmarks.lr_sweep"]
  blob = json.loads((out_dir / "lr_sweep.json").read_text())
  assert set(blob["results"]) == {"default", "mlp"}
  for job, r in blob["results"].items():
    # Every (peak, seed) trained, and scored as an accuracy (a diverged run scores 0).
    assert set(r["accuracy"]) == {f"{lr:g}" for lr in blob["grid"]}, job
    for accs in r["accuracy"].values():
      assert len(accs) == len(blob["seeds"]) and all(0.0 <= a <= 1.0 for a in accs), job
    assert r["best_lr"] in blob["grid"]
    # One range test per seed, and the job trained again at each proposal it made.
    assert len(r["proposals"]) == len(r["at_proposal"]) == len(blob["seeds"])
    assert all(p is None or _positive(p) for p in r["proposals"]), r["proposals"]
    assert all(0.0 <= a <= 1.0 for a in r["at_proposal"])
  table = (out_dir / "lr_sweep.md").read_text()
  assert "**default**" in table and "**mlp**" in table and "Range test proposals" in table
  assert (out_dir / "lr_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert "best peak" in stdout
