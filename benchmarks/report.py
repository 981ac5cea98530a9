"""The report: targets, the console table, the markdown of docs/benchmarks.md, the JSON."""

import json
import os
import platform
import subprocess

import tensorflow as tf

from benchmarks import imagenet_pipeline, seed_recipe

# (model, ratio) -> minimum. Ratios of throughputs measured in the same run.
TARGETS = {
    ("mlp", "ours_vs_limit"): 0.85,
    ("mlp", "ours_vs_orbit"): 2.0,
    ("mlp", "ours_vs_fit_spe1"): 4.0,
    ("mlp", "schedule_vs_constant"): 0.98,
    ("small_cnn", "ours_vs_limit"): 0.95,
    ("small_cnn", "schedule_vs_constant"): 0.98,
}


def machine():
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
               if line.startswith("Model name"))
  except (OSError, StopIteration):
    cpu = platform.processor()
  import keras  # pylint: disable=g-import-not-at-top
  return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
          "keras": keras.__version__, "python": platform.python_version(),
          "load_average_at_start": os.getloadavg()}


# (model, ratio) -> maximum, of the replica-scaling suite: time per step of the trainer's
# default mirrored path over the yardstick `one_device` (tf.data, the whole step XLA) and over
# the tf.data mirrored path of the same replica count, medians of per-repeat ratios.
SCALING_TARGETS = {
    ("mlp", "mirrored_2_time_vs_one_device"): 1.3,
    ("mlp", "mirrored_4_time_vs_one_device"): 1.8,
    ("small_cnn", "mirrored_2_vs_tfdata"): 1.05,
    ("small_cnn", "mirrored_4_vs_tfdata"): 1.05,
}


def targets(results):
  rows = []
  for (size, key), minimum in TARGETS.items():
    if size in results["models"]:
      value = results["models"][size]["ratios"][key]
      rows.append({"model": size, "ratio": key, "value": value, "bound": f">= {minimum}",
                   "pass": bool(value >= minimum)})
  for (size, key), maximum in SCALING_TARGETS.items():
    s = results.get("scaling", {}).get(size)
    if s is None:
      continue
    ratios = {**s["time_ratios"], **{f"{k}_time_vs_one_device": v["time_vs_one_device"]
                                     for k, v in s["variants"].items()}}
    if key in ratios:
      rows.append({"model": size, "ratio": key, "value": ratios[key], "bound": f"<= {maximum}",
                   "pass": bool(ratios[key] <= maximum)})
  return rows


def format_table(results):
  lines = []
  settings = results["settings"]
  for size, m in results["models"].items():
    lines.append(f"\n{size} (global batch {m['global_batch_size']}): median of "
                 f"{settings['repeats']} interleaved repeats (ours, its twin and the limit: "
                 f"{settings['repeats'] + settings['pair_repeats']})")
    lines.append(f"  {'variant':24s} {'examples/s':>11s} {'us/step':>9s} {'compile s':>9s} "
                 f"{'RSS MB':>7s} {'+MB':>5s}")
    for k, v in m["variants"].items():
      lines.append(f"  {k:24s} {v['examples_per_sec']:11.4g} {v['us_per_step']:9.1f} "
                   f"{v['compile_s']:9.2f} {v['rss_mb_after_first_call']:7.0f} "
                   f"{v['rss_growth_mb']:5.0f}")
    lines.append(f"  limit = {m['limit']}; ours compiles the whole loop: {m['whole_loop_xla']}")
    lines.append("  " + ", ".join(f"{k} {v:.3g}" for k, v in m["ratios"].items()))
  for s in results.get("scaling", {}).values():
    lines.append(f"\nreplica scaling, {s['model']} global batch {s['global_batch_size']}, "
                 f"weights after {s['check_steps']} steps vs {s['reference']}")
    for k, v in s["variants"].items():
      lines.append(f"  {k:18s} {v['examples_per_sec']:11.4g} examples/s "
                   f"{v['us_per_step']:8.0f} us/step  x{v['time_vs_one_device']:.2f}  "
                   f"input {v['input']:7s} XLA {v['xla']:9s} "
                   f"max |dw - dw_ref|/|dw_ref| {v['max_rel_update_diff']:.1e}  "
                   f"loss {v['loss_after_check']:.5f}  match {v['weights_match']}")
  if "seed" in results:
    lines.append(seed_recipe.format_table(results["seed"]))
  if "pipeline" in results:
    lines.append(imagenet_pipeline.format_table(results["pipeline"]))
  if results["targets"]:
    lines.append("\ntargets (ours = the trainer's default: input_mode=auto, jit_compile=True)")
  for t in results["targets"]:
    lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['model']:10s} {t['ratio']:30s} "
                 f"{t['value']:7.3f} {t['bound']}")
  return "\n".join(lines)


def format_markdown(results):
  """The tables of docs/benchmarks.md."""
  m0 = results["machine"]
  lines = [f"Measured on {m0['cpu']}, {m0['cores']} cores, TensorFlow {m0['tensorflow']}, "
           f"Keras {m0['keras']}, Python {m0['python']}; load average at start "
           f"{m0['load_average_at_start'][0]:.2f}; `{results['settings']['command']}` "
           f"took {results['seconds_total']:.0f} s.", ""]
  for size, m in results["models"].items():
    lines.append(f"**{size}**, global batch {m['global_batch_size']}, median of "
                 f"{results['settings']['repeats']} interleaved repeats (limit = `{m['limit']}`)")
    lines += _md_table(
        ["variant", "examples/s", "us/step", "compile s", "RSS MB after first call"],
        [[f"`{k}`", f"{v['examples_per_sec']:,.0f}", f"{v['us_per_step']:,.1f}",
          f"{v['compile_s']:.2f}", f"{v['rss_mb_after_first_call']:.0f}"]
         for k, v in m["variants"].items()])
    lines += ["Ratios: " + ", ".join(f"{k} **{v:.3g}**" for k, v in m["ratios"].items()), ""]
  for s in results.get("scaling", {}).values():
    lines.append(f"**Replica scaling, {s['model']}**, global batch {s['global_batch_size']}, "
                 f"update after {s['check_steps']} steps vs `{s['reference']}`")
    lines += _md_table(
        ["strategy", "input, XLA", "examples/s", "us/step", "time / one_device",
         "max rel. update diff", "same update"],
        [[f"`{k}`", f"{v['input']}, {v['xla']}", f"{v['examples_per_sec']:,.0f}",
          f"{v['us_per_step']:,.0f}", f"{v['time_vs_one_device']:.2f}",
          f"{v['max_rel_update_diff']:.1e}", "yes" if v["weights_match"] else "NO"]
         for k, v in s["variants"].items()])
  if results["targets"]:
    lines += _md_table(["model", "target", "measured", "bound", ""],
                       [[t["model"], t["ratio"], f"{t['value']:.3f}", t["bound"],
                         "PASS" if t["pass"] else "FAIL"] for t in results["targets"]])
  if "seed" in results:
    lines.append(seed_recipe.format_markdown(results["seed"]))
  if "pipeline" in results:
    lines.append(imagenet_pipeline.format_markdown(results["pipeline"]))
  return "\n".join(lines)


def _md_table(header, rows):
  """Lines of a markdown table (a blank line before and after); columns 3+ right-aligned."""
  align = ["---" if i < 2 else "---:" for i in range(len(header))]
  return ["", *("| " + " | ".join(r) + " |" for r in (header, align, *rows)), ""]


def write(results, out_dir):
  """Writes `<out_dir>/throughput.json` and `throughput.md`; returns the JSON's path."""
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, "throughput.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(out_dir, "throughput.md"), "w") as f:
    f.write(format_markdown(results))
  return path
