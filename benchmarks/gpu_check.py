r"""The prepared GPU check: correctness on the GPU, then full-size step costs.

  # on a machine with one NVIDIA GPU (jax[cuda12]==0.10.2 from the pins):
  python benchmarks/gpu_check.py
  # end to end on the CPU at a tiny size (what CI-less sessions can run):
  python benchmarks/gpu_check.py --dry_run

1. Correctness: one jitted training step of a tiny SSL config (the
   multi-task DepthMix row, random weights, a random batch) on the
   accelerator and on the CPU from the same state; loss, gradient norm and
   updated parameters must agree (float32, matmul precision "highest").
2. The three ``step_cost`` benchmarks (SDE stage-2 step, SSL multi-task
   step, SSDA step) at full size (ResNet-101 OS16, 512x512) in float32 and
   bfloat16, each in its own process (an out-of-memory run is recorded,
   not fatal): images/s, compile time, compiled memory (arguments +
   temporaries), the device's peak memory, and model FLOP/s utilisation
   (XLA's cost-analysis FLOPs per step / step time / the device's peak).
3. Writes ``docs/gpu_check.json`` (every figure) and ``docs/gpu_check.md``
   (a table), or ``--out`` elsewhere; ``--dry_run`` (tiny sizes, CPU,
   unoptimised XLA compiles, so its figures mean nothing) writes
   ``gpu_check_dry_run.{json,md}`` into a temporary folder unless ``--out``.

Sized to finish in under 8 minutes on one H100/H200 (``--budget_s``: the
remaining benchmarks are skipped, and said to be, once it is spent).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import _report

HERE = os.path.dirname(os.path.abspath(__file__))

# Dense peak FLOP/s by device kind and compute dtype (vendor datasheets:
# H100/H200 SXM 989 TFLOP/s bf16 tensor, 67 TFLOP/s fp32 without TF32).
PEAK_FLOPS = {
    "H100": {"float32": 67e12, "bfloat16": 989e12},
    "H200": {"float32": 67e12, "bfloat16": 989e12},
    "A100": {"float32": 19.5e12, "bfloat16": 312e12},
}

# (name, script, args, images per step)
FULL = (
    ("sde", "step_cost.py", ["--mode=sde", "--batch=4", "--steps=3"], 4),
    ("ssl", "step_cost_ssl.py", ["--batch=2", "--steps=3"], 4),
    ("ssda", "step_cost_ssda.py", ["--batch=2", "--steps=3",
                                   "--warmup=1"], 2 + 2 * 5 + 2),
)
TINY = {"sde": ["--depth=18", "--height=32", "--width=32", "--batch=2",
                "--steps=1"],
        "ssl": ["--depth=18", "--size=32", "--batch=2", "--steps=1"],
        "ssda": ["--depth=18", "--height=32", "--width=32", "--batch=2",
                 "--steps=1", "--warmup=1"]}


def correctness(dry_run: bool) -> dict:
  """One tiny SSL step on the accelerator and on the CPU, compared."""
  # pylint: disable=g-import-not-at-top
  import jax
  import numpy as np
  import step_cost_ssl
  from configs import ssl_cityscapes
  from sdeseg_jax.train import ssl
  from sdeseg_jax.train import step as step_lib
  from sdeseg_jax.train import trainer
  from sdeseg_jax.utils import sharding
  # pylint: enable=g-import-not-at-top
  accel = jax.devices()[0]
  cpu = jax.devices("cpu")[0]
  config = ssl_cityscapes.get_config("row=mtl_depthmix")
  config.model.update(encoder_depth=10, width=8, pose_depth=10,
                      decoder="dec_tiny")
  config.train.batch_size = config.ssl.unlabeled_batch_size = 2
  host = step_cost_ssl.ssl_batch(2, 32, 32)
  task = ssl.SSLTask(config)
  create = trainer.create_state_fn(task, config,
                                   trainer.abstract_batch(host))
  with jax.default_matmul_precision("highest"):
    with jax.default_device(cpu):
      state0 = jax.device_get(jax.jit(create)())
    out = {}
    for name, dev in (("accelerator", accel), ("cpu", cpu)):
      mesh = sharding.make_mesh([dev])
      shapes = jax.eval_shape(create)
      jstep = step_lib.jit_train_step(task, config, mesh, shapes)
      state = jax.device_put(state0, sharding.replicated(mesh))
      state, metrics = jstep(state, sharding.host_to_global(host, mesh))
      out[name] = jax.device_get((state.params, metrics))
  (pa, ma), (pc, mc) = out["accelerator"], out["cpu"]
  diffs = [float(np.max(np.abs(a - c)) / (np.max(np.abs(c)) + 1e-12))
           for a, c in zip(jax.tree.leaves(pa), jax.tree.leaves(pc))]
  loss_rel = abs(float(ma["loss"]) - float(mc["loss"])) / abs(
      float(mc["loss"]))
  res = {"device": accel.device_kind, "platform": accel.platform,
         "loss_accelerator": float(ma["loss"]), "loss_cpu": float(mc["loss"]),
         "loss_rel_diff": loss_rel,
         "grad_norm_rel_diff": abs(float(ma["grad_norm"]) -
                                   float(mc["grad_norm"])) /
                               float(mc["grad_norm"]),
         "param_max_rel_diff": max(diffs)}
  res["ok"] = bool(loss_rel < 1e-3 and res["grad_norm_rel_diff"] < 1e-2 and
                   res["param_max_rel_diff"] < 1e-2 and
                   float(ma["finite"]) == 1.0)
  if dry_run:
    res["note"] = "dry run: the accelerator is the CPU"
  return res


def last_json(text: str) -> dict | None:
  for line in reversed(text.strip().splitlines()):
    if line.startswith("{"):
      try:
        return json.loads(line)
      except json.JSONDecodeError:
        return None
  return None


def step_time_s(res: dict) -> float | None:
  if res.get("step_median_s") is not None:
    return float(res["step_median_s"])
  if res.get("step_ms") is not None:
    return float(res["step_ms"]) / 1e3
  return None


def bench(name, script, args, images, dtype, timeout, device_kind) -> dict:
  cmd = [sys.executable, os.path.join(HERE, script), *args,
         f"--dtype={dtype}"]
  t = time.time()
  try:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                       env=dict(os.environ))
  except subprocess.TimeoutExpired:
    return {"name": name, "dtype": dtype, "ok": False,
            "error": f"timed out after {timeout:.0f} s"}
  res = last_json(p.stdout)
  if p.returncode != 0 or res is None:
    tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
    return {"name": name, "dtype": dtype, "ok": False,
            "error": " | ".join(tail)[-400:], "wall_s": time.time() - t}
  step_s = step_time_s(res)
  peak = next((v for k, v in PEAK_FLOPS.items() if k in device_kind), None)
  flops = res.get("flops")
  out = {"name": name, "dtype": dtype, "ok": True,
         "wall_s": round(time.time() - t, 1),
         "compile_s": res.get("compile_s"),
         "step_s": step_s,
         "images_per_s": round(images / step_s, 2) if step_s else None,
         "mem_argument_plus_temp_mib": res.get("mem_argument_plus_temp_mib"),
         "mem_temp_mib": res.get("mem_temp_mib"),
         "peak_device_mib": res.get("peak_device_mib"),
         "tflop_per_step": round(flops / 1e12, 3) if flops else None,
         "mfu": (round(flops / step_s / peak[dtype], 4)
                 if flops and step_s and peak else None),
         "raw": res}
  return out


def markdown(result: dict) -> str:
  c = result["correctness"]
  lines = [
      f"# GPU check ({result['device']})", "",
      f"Command: `{result['command']}`; {result['date']}; jax "
      f"{result['jax']}.", "",
      f"Correctness (tiny SSL step, accelerator vs CPU): "
      f"{'OK' if c['ok'] else 'FAILED'}; loss rel. diff "
      f"{c['loss_rel_diff']:.2e}, grad-norm rel. diff "
      f"{c['grad_norm_rel_diff']:.2e}, max param rel. diff "
      f"{c['param_max_rel_diff']:.2e}.", "",
      "| step | dtype | images/s | step s | compile s | args+temp MiB | "
      "peak MiB | TFLOP/step | MFU |",
      "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
  fmt = lambda v, f: "–" if v is None else format(v, f)  # noqa: E731
  for r in result["benchmarks"]:
    if not r["ok"]:
      lines.append(f"| {r['name']} | {r['dtype']} | {r['error']} |||||||")
      continue
    lines.append(
        f"| {r['name']} | {r['dtype']} | {fmt(r['images_per_s'], '.2f')} | "
        f"{fmt(r['step_s'], '.3f')} | {fmt(r['compile_s'], '.1f')} | "
        f"{fmt(r['mem_argument_plus_temp_mib'], '.0f')} | "
        f"{fmt(r['peak_device_mib'], '.0f')} | "
        f"{fmt(r['tflop_per_step'], '.2f')} | {fmt(r['mfu'], '.1%')} |")
  if result.get("skipped"):
    lines += ["", "Skipped (time budget): " + ", ".join(result["skipped"])]
  return "\n".join(lines) + "\n"


def main(argv=None):
  p = _report.parser(__doc__)
  p.add_argument("--dry_run", action="store_true",
                 help="CPU, tiny sizes: checks the script end to end")
  p.add_argument("--out", default="",
                 help="folder for gpu_check.{json,md} (default docs/)")
  p.add_argument("--budget_s", type=float, default=450.0,
                 help="stop starting benchmarks after this many seconds")
  p.add_argument("--only", default="",
                 help="comma-separated subset of sde,ssl,ssda")
  args = _report.parse(p, argv)
  t0 = time.time()
  if args.dry_run:
    # The dry run checks the script, not XLA: unoptimised compiles (here
    # and in the benchmark processes) make it several times faster.
    os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
  import jax  # pylint: disable=g-import-not-at-top
  if not args.dry_run and jax.default_backend() == "cpu":
    raise SystemExit("gpu_check: no accelerator found (jax backend is cpu);"
                     " install jax[cuda12]==0.10.2 or use --dry_run")
  device_kind = jax.devices()[0].device_kind
  result = {"benchmark": "gpu_check", "device": device_kind,
            "dry_run": args.dry_run, "jax": jax.__version__,
            "command": "python benchmarks/gpu_check.py" +
                       (" --dry_run" if args.dry_run else ""),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
  result["correctness"] = correctness(args.dry_run)
  print("correctness:", json.dumps(result["correctness"]), flush=True)
  only = set(args.only.split(",")) if args.only else None
  benches, skipped = [], []
  for name, script, bargs, images in FULL:
    if only and name not in only:
      continue
    if args.dry_run:
      bargs = [a for a in bargs if not a.startswith(("--batch", "--steps",
                                                     "--warmup"))]
      bargs = bargs + TINY[name]
      images = {"sde": 2, "ssl": 4, "ssda": 2 + 2 * 5 + 2}[name]
    for dtype in ("float32", "bfloat16"):
      left = args.budget_s - (time.time() - t0)
      if left < 20:
        skipped.append(f"{name}/{dtype}")
        continue
      r = bench(name, script, bargs, images, dtype, left, device_kind)
      print(name, dtype, json.dumps({k: v for k, v in r.items()
                                     if k != "raw"}), flush=True)
      benches.append(r)
  result["benchmarks"] = benches
  result["skipped"] = skipped
  result["total_s"] = round(time.time() - t0, 1)
  out = args.out or (tempfile.mkdtemp() if args.dry_run else
                     os.path.join(os.path.dirname(HERE), "docs"))
  os.makedirs(out, exist_ok=True)
  stem = "gpu_check_dry_run" if args.dry_run else "gpu_check"
  with open(os.path.join(out, stem + ".json"), "w") as f:
    json.dump(result, f, indent=1)
  with open(os.path.join(out, stem + ".md"), "w") as f:
    f.write(markdown(result))
  print(markdown(result))
  _report.emit_json({k: v for k, v in result.items() if k != "benchmarks"} |
                    {"written": os.path.join(out, stem + ".json"),
                     "ok": result["correctness"]["ok"] and
                     all(b["ok"] for b in benches)})


if __name__ == "__main__":
  main()
