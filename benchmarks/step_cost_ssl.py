r"""Benchmark: cost of one SSL training step (multi-task + DepthMix, 212).

  # Full size: ResNet-101 OS16 PAD multi-task net + R18 pose net, 512x512
  # crops, 2 labeled (frames -1/0/1, SDE loss) + 2 unlabeled (SDE loss,
  # online DepthMix, teacher), kornia04 augmentation; minutes to compile on
  # a CPU:
  python benchmarks/step_cost_ssl.py
  # reduced size for a shared CPU:
  python benchmarks/step_cost_ssl.py --depth=18 --size=128

Reports the compile time, ``compiled.memory_analysis()`` of the whole step,
the median step time after a warm-up step, and the time of the mask + mix +
augmentation part alone (DepthMix mask from a disparity, mixing of images,
teacher probabilities and labels with GT substitution, kornia04 jitter +
blur with both gates forced on), jitted separately on the same shapes, with
its share of the step. The last line is one JSON object.
"""

from __future__ import annotations

import _report
import numpy as np


def ssl_batch(b: int, h: int, w: int, seed: int = 0):
  """A random SSL batch (``train/ssl.py`` keys) with plausible K."""
  rs = np.random.RandomState(seed)
  img = lambda *s: rs.randint(0, 256, size=s + (3,), dtype=np.uint8)
  kk = _report.random_intrinsics(h, w)
  ks = np.repeat(kk[None], b, 0)

  def stream(labeled):
    color = img(b, 3, h, w)
    return {"color": color, "color_aug": color,
            "label": rs.randint(0, 19, size=(b, h, w)).astype(np.int32),
            "is_labeled": np.full((b,), labeled) if labeled else
                          np.arange(b) % 2 == 0,
            "K": ks, "inv_K": np.linalg.inv(ks).astype(np.float32),
            "pyramid": {f"s{s}": img(b, h >> s, w >> s) for s in (1, 2, 3)}}
  return {"labeled": stream(True), "unlabeled": stream(False)}


def main(argv=None):
  p = _report.parser(__doc__, first_line=False)
  _report.add_step_cost_args(p, batch=2, steps=3, image_size=False)
  p.add_argument("--size", type=int, default=512)
  args = _report.parse(p, argv)

  # Imported here so that --help does not pay for jax.
  # pylint: disable=g-import-not-at-top
  import jax
  import jax.numpy as jnp
  from configs import ssl_cityscapes
  from sdeseg_jax.mixing import masks as masks_lib
  from sdeseg_jax.mixing import consistency
  from sdeseg_jax.train import ssl
  from sdeseg_jax.utils import sharding

  config = ssl_cityscapes.get_config("row=mtl_depthmix")
  config.model.encoder_depth = args.depth
  config.model.dtype = args.dtype
  config.model.remat = args.remat
  config.train.batch_size = args.batch
  config.ssl.unlabeled_batch_size = args.batch
  b, h = args.batch, args.size
  batch = ssl_batch(b, h, h)
  mesh = sharding.make_mesh(jax.devices()[:1])
  task = ssl.SSLTask(config)
  cs = _report.compile_train_step(task, config, batch, mesh)
  compiled, compile_s, gbatch = cs.compiled, cs.compile_s, cs.batch
  n_params = cs.num_params
  state = cs.init()
  mem = compiled.memory_analysis()
  mem_d = {k: int(getattr(mem, k)) for k in (
      "argument_size_in_bytes", "output_size_in_bytes",
      "temp_size_in_bytes", "generated_code_size_in_bytes")
           if mem is not None and hasattr(mem, k)}
  # The first call pays one-time costs.
  state, _, times = _report.time_steps(compiled, state, gbatch, args.steps,
                                       warmup=1)
  step_s = float(np.median(times))

  mcfg = config.mix.copy_and_resolve_references()
  mcfg.jitter_prob = mcfg.blur_prob = 1.0  # always pay for both

  def mix_part(rng, images, probs, labels, is_labeled, disp):
    d = masks_lib.normalize_disparity(disp)
    # The part of the step's consistency loss before the student.
    k_mask, k_aug = jax.random.split(rng)
    mixed = consistency.mixed_batch(
        mcfg, *consistency.intra_batch(mcfg, images, probs, labels=labels,
                                       is_labeled=is_labeled, disp=d),
        mask_rng=k_mask, aug_rng=k_aug)
    return mixed.augmented, mixed.conf

  rs = np.random.RandomState(1)
  args_mix = (jax.random.PRNGKey(0),
              jnp.asarray(rs.uniform(size=(b, h, h, 3)), jnp.float32),
              jax.nn.softmax(jnp.asarray(rs.normal(size=(b, h, h, 19)),
                                         jnp.float32), -1),
              jnp.asarray(batch["unlabeled"]["label"]),
              jnp.asarray(batch["unlabeled"]["is_labeled"]),
              jnp.asarray(rs.uniform(size=(b, h, h)), jnp.float32))
  mix_c, _ = _report.compile_timed(jax.jit(mix_part), *args_mix)
  mt = _report.timed(lambda _: mix_c(*args_mix), 1 + max(3, args.steps),
                     warmup=1)
  mix_s = float(np.median(mt))
  full = args.depth == 101 and args.size == 512 and args.batch == 2
  print(f"SSL step (multi-task + DepthMix): ResNet-{args.depth}, "
        f"{h}x{h}, {b} labeled + {b} mixed, {n_params / 1e6:.1f} M params, "
        f"{jax.devices()[0].platform}{'' if full else ' (REDUCED size)'}")
  print(f"compile {compile_s:.1f} s; step {step_s * 1e3:.0f} ms "
        f"(median of {len(times)}); mask+mix+augment {mix_s * 1e3:.1f} ms "
        f"= {100 * mix_s / step_s:.1f}% of the step")
  for k, v in mem_d.items():
    print(f"  {k}: {v / 2**20:.1f} MiB")
  _report.emit_json({
      "benchmark": "step_cost_ssl", "encoder_depth": args.depth,
      "size": h, "batch": b, "full_size": full, "dtype": args.dtype,
      "remat": args.remat,
      "platform": jax.devices()[0].platform,
      "params_m": round(n_params / 1e6, 2), "compile_s": round(compile_s, 1),
      "step_ms": round(step_s * 1e3, 1),
      "mix_ms": round(mix_s * 1e3, 2),
      "mix_share": round(mix_s / step_s, 4), "memory": mem_d,
      **_report.memory_mib(compiled)})


if __name__ == "__main__":
  main()
