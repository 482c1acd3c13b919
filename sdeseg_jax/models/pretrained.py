"""Import of PyTorch weights: torchvision ImageNet ResNets and SDE checkpoints.

Flax submodule names mirror the torch parameter names (``layer1_0/conv1`` is
``layer1.0.conv1``), so conversion walks the *expected* flax variable tree
(from ``jax.eval_shape`` of the module's init), derives each torch key and
transforms the tensor: conv ``weight`` OIHW -> ``kernel`` HWIO, BN ``weight``
-> ``scale``, ``running_mean``/``running_var`` -> ``batch_stats`` ``mean`` /
``var``. Missing keys, shape mismatches and (when ``strict``) unused keys
raise one ``ValueError`` naming the file and the keys.

Reference checkpoint files (PyTorch state dicts):
  * ``encoder.pth``: ``encoder.<torchvision name>`` (+ scalar entries
    ``height``/``width``/``use_stereo`` that are ignored);
  * ``depth.pth``: ``decoder.N.*``, the decoder's ``nn.ModuleList`` in
    insertion order: for stage i = 4..0: ``(upconv, i, 0)``, ``(skip_proj,
    i)`` (i > 0 only; parameter-free, but it takes an index), ``(upconv, i,
    1)``; then ``(dispconv, s)`` for s = 0..3. So with 4 scales: upconv_4_0=0,
    upconv_4_1=2, upconv_3_0=3, upconv_3_1=5, ..., upconv_1_1=11,
    upconv_0_0=12, upconv_0_1=13, dispconv_0..3=14..17. Inside an index the
    ASPP keeps its names (``convs.0.0``), a ConvBlock is ``block.0.conv``
    (conv) and ``block.1`` (BN), a dispconv ``conv``;
  * ``pose_encoder.pth``: ``encoder.*`` of the 2-image ResNet-18;
  * ``pose.pth``: ``net.0..3`` = squeeze, pose_0, pose_1, pose_2.

CLI::

  python -m sdeseg_jax.models.pretrained --torch-resnet R.pth --depth 101 \
      --out DIR [--num-input-images 2]

writes ``DIR/resnet{depth}[_x{n}].npz`` (keys ``params/conv1/kernel``,
``batch_stats/bn1/mean``, ...), which ``config.model.encoder_init`` /
``pose_encoder_init`` point to and ``load_npz`` / ``merge_variables`` read.
"""

from __future__ import annotations

import argparse
import os
import pickle
from typing import Any, Callable, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax import errors
from sdeseg_jax.models.decoders import ALL_STAGES, UNetDecoder, decoder_kwargs
from sdeseg_jax.models.pose import PoseDecoder
from sdeseg_jax.models.resnet import ResNetEncoder, num_ch_enc

StateDict = dict[str, np.ndarray]
Variables = dict[str, Any]

_LEAF_TO_TORCH = {"kernel": "weight", "bias": "bias", "scale": "weight",
                  "mean": "running_mean", "var": "running_var"}
# Entries of a torch state dict that have no flax counterpart.
_ALWAYS_IGNORED = ("num_batches_tracked",)


def load_state_dict(path: str) -> StateDict:
  """Reads a torch state dict (``.pth``/``.pt``/``.pkl`` or ``.safetensors``).

  Nested ``{"state_dict": ...}`` / ``{"model_state": ...}`` wrappers are
  unwrapped; non-tensor entries (e.g. monodepth2's ``height``) are dropped.

  Args:
    path: file path.

  Returns:
    ``{torch key: float32/int numpy array}``.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  if path.endswith(".safetensors"):
    try:
      # pylint: disable-next=g-import-not-at-top
      from safetensors.numpy import load_file
    except ImportError as e:
      raise ImportError(f"reading {path} needs the 'safetensors' package "
                        "(pip install safetensors)") from e
    return dict(load_file(path))
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"reading {path} needs torch (CPU build suffices)") from e
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except (pickle.UnpicklingError, RuntimeError, EOFError) as e:
    raise ValueError(
        f"{path}: not a readable torch state dict (torch.load: "
        f"{type(e).__name__}); pass a .pth file of "
        "torch.save(model.state_dict()) or a .safetensors file") from e
  for wrapper in ("state_dict", "model_state"):
    if isinstance(sd, Mapping) and isinstance(sd.get(wrapper), Mapping):
      sd = sd[wrapper]
  if not isinstance(sd, Mapping):
    raise ValueError(f"{path}: expected a state dict, got {type(sd)}")
  return {k: v.detach().cpu().numpy() for k, v in sd.items()
          if isinstance(v, torch.Tensor)}


def convert(expected: Variables, state_dict: Mapping[str, np.ndarray],
            torch_key: Callable[[tuple[str, ...]], str], *,
            source: str = "state dict", strict: bool = True,
            used_prefix: str = "", ignore: Sequence[str] = ()) -> Variables:
  """Fills the variable tree ``expected`` from a torch state dict.

  Args:
    expected: ``{"params": ..., "batch_stats": ...}`` of arrays or
      ``ShapeDtypeStruct``s giving the flax names and shapes.
    state_dict: torch key -> array.
    torch_key: maps a flax module path (without collection and leaf name)
      to the torch module key prefix, e.g. ``("layer1_0", "conv1")`` ->
      ``"layer1.0.conv1"``.
    source: name of the file, for error messages.
    strict: raise on torch keys under ``used_prefix`` that were not used.
    used_prefix: only keys starting with it count as unused in strict mode.
    ignore: key prefixes (after ``used_prefix``) that may stay unused.

  Returns:
    The filled tree of float32 numpy arrays, same structure as ``expected``.
  """
  flat = flax.traverse_util.flatten_dict(expected)
  out, used, missing, mismatched = {}, set(), [], []
  for path, leaf in flat.items():
    key = f"{torch_key(path[1:-1])}.{_LEAF_TO_TORCH[path[-1]]}"
    if key not in state_dict:
      missing.append(key)
      continue
    used.add(key)
    value = np.asarray(state_dict[key], dtype=np.float32)
    if path[-1] == "kernel":
      value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
      want_in, got_in = leaf.shape[2], value.shape[2]
      if (value.shape != tuple(leaf.shape) and got_in and
          want_in % got_in == 0 and value.shape[:2] == leaf.shape[:2] and
          value.shape[3] == leaf.shape[3]):
        # ImageNet conv1 for an n-image input: tile along the input channels
        # and divide by n (monodepth2 resnet_multiimage_input).
        n = want_in // got_in
        value = np.concatenate([value] * n, axis=2) / n
    if value.shape != tuple(leaf.shape):
      mismatched.append(f"{key}: file {tuple(value.shape)} vs model "
                        f"{tuple(leaf.shape)} (flax {'/'.join(path)})")
      continue
    out[path] = value
  errors = []
  if missing:
    errors.append(f"missing keys ({len(missing)}): {missing[:20]}")
  if mismatched:
    errors.append(f"shape mismatches: {mismatched[:20]}")
  if strict:
    unused = sorted(
        k for k in state_dict if k.startswith(used_prefix) and k not in used
        and not k.endswith(_ALWAYS_IGNORED)
        and not k[len(used_prefix):].startswith(tuple(ignore)))
    if unused:
      errors.append(f"unused keys ({len(unused)}): {unused[:20]}")
  if errors:
    raise ValueError(f"cannot convert {source}: " + "; ".join(errors))
  return flax.traverse_util.unflatten_dict(out)


def dotted_torch_path(path: tuple[str, ...]) -> str:
  """Flax module path -> torch module path: ``("layer1_0", "downsample_0")``
  -> ``"layer1.0.downsample.0"``."""
  return ".".join(p.replace("_", ".") for p in path)


def resnet_variables(state_dict: Mapping[str, np.ndarray], depth: int, *,
                     num_input_images: int = 1, width: int = 64,
                     prefix: str = "", strict: bool = True,
                     source: str = "state dict") -> Variables:
  """Converts a torchvision ResNet state dict into ``ResNetEncoder`` vars.

  Args:
    state_dict: torch key -> array, keys ``{prefix}conv1.weight`` etc.; the
      ImageNet classifier ``fc.*`` is ignored.
    depth: ResNet depth of the target encoder.
    num_input_images: 2 for the pose encoder; a 3-channel conv1 is then
      tiled and divided by 2, a 6-channel one is taken as is.
    width: base width of the target encoder.
    prefix: key prefix, e.g. ``"encoder."`` for reference ``encoder.pth``.
    strict: raise on unused keys under ``prefix``.
    source: file name for error messages.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` for ``ResNetEncoder(depth,
    num_input_images=..., width=...)`` (the output stride does not change
    any shape).
  """
  enc = ResNetEncoder(depth, 32, num_input_images=num_input_images,
                      width=width)
  expected = jax.eval_shape(
      enc.init, jax.random.key(0),
      jnp.zeros((1, 64, 64, 3 * num_input_images)))
  return convert(dict(expected), state_dict,
                 lambda p: prefix + dotted_torch_path(p), source=source,
                 strict=strict,
                 used_prefix=prefix, ignore=("fc.",))


def decoder_module_indices(scales: Sequence[int] = (0, 1, 2, 3)
                           ) -> dict[str, int]:
  """Flax decoder submodule name -> index ``N`` of ``decoder.N`` in depth.pth.
  """
  idx, n = {}, 0
  for i in ALL_STAGES:
    idx[f"upconv_{i}_0"] = n
    n += 2 if i > 0 else 1  # (skip_proj, i) takes an index for i > 0
    idx[f"upconv_{i}_1"] = n
    n += 1
  for s in scales:
    idx[f"dispconv_{s}"] = n
    n += 1
  return idx


def _decoder_torch_key(prefix: str, scales: Sequence[int]
                       ) -> Callable[[tuple[str, ...]], str]:
  indices = decoder_module_indices(scales)

  def key(path: tuple[str, ...]) -> str:
    head, rest = path[0], path[1:]
    base = f"{prefix}{indices[head]}"
    if head == "upconv_4_0":
      return f"{base}.{dotted_torch_path(rest)}"
    if head.startswith("dispconv"):
      return f"{base}.conv"
    return f"{base}.block.0.conv" if rest == ("conv",) else f"{base}.block.1"

  return key


def decoder_variables(state_dict: Mapping[str, np.ndarray], *,
                      decoder: str, encoder_channels: Sequence[int],
                      enable_disp: bool = True,
                      scales: Sequence[int] = (0, 1, 2, 3),
                      prefix: str = "decoder.", strict: bool = True,
                      source: str = "state dict") -> Variables:
  """Converts a reference ``depth.pth`` into ``UNetDecoder`` variables.

  Args:
    state_dict: keys ``{prefix}N.*`` (see the module docstring).
    decoder: decoder variant name of the target.
    encoder_channels: channels of ``f0..f4`` of the encoder it decodes.
    enable_disp: whether the target has ``dispconv`` layers; when False the
      file's dispconv entries are ignored (PAD ``seg_dec``, transfer head).
    scales: disparity scales of the reference decoder (fixes the indices).
    prefix: key prefix.
    strict: raise on unused keys under ``prefix``.
    source: file name for error messages.

  Returns:
    ``{"params": ..., "batch_stats": ...}`` of the decoder.
  """
  dec = UNetDecoder(**decoder_kwargs(decoder), enable_disp=enable_disp,
                    scales=tuple(scales))
  feats = {f"f{k}": jnp.zeros((1, 32 >> k, 32 >> k, c))
           for k, c in enumerate(encoder_channels)}
  expected = jax.eval_shape(dec.init, jax.random.key(0), feats)
  indices = decoder_module_indices(scales)
  ignore = () if enable_disp else tuple(
      f"{indices[f'dispconv_{s}']}." for s in scales)
  return convert(dict(expected), state_dict, _decoder_torch_key(prefix, scales),
                 source=source, strict=strict, used_prefix=prefix,
                 ignore=ignore)


def pose_decoder_variables(state_dict: Mapping[str, np.ndarray], *,
                           prefix: str = "net.", strict: bool = True,
                           source: str = "state dict") -> Variables:
  """Converts a reference ``pose.pth`` into ``PoseDecoder`` variables."""
  names = {"squeeze": 0, "pose_0": 1, "pose_1": 2, "pose_2": 3}
  expected = jax.eval_shape(PoseDecoder().init, jax.random.key(0),
                            jnp.zeros((1, 2, 2, 512)))
  return convert(dict(expected), state_dict,
                 lambda p: f"{prefix}{names[p[0]]}", source=source,
                 strict=strict, used_prefix=prefix)


def sde_variables_from_checkpoint(directory: str, *, encoder_depth: int = 101,
                                  decoder: str = "dec6",
                                  pose_depth: int = 18, pose: bool = True,
                                  strict: bool = True) -> Variables:
  """Loads a released reference SDE checkpoint directory into SDENet vars.

  Args:
    directory: folder with ``encoder.pth``, ``depth.pth`` and, if ``pose``,
      ``pose_encoder.pth`` and ``pose.pth``.
    encoder_depth: depth of the SDE encoder (101 for the released models).
    decoder: decoder variant of the checkpoint (dec6 for Cityscapes SDE).
    pose_depth: pose encoder depth.
    pose: also load the pose network.
    strict: raise on unused keys.

  Returns:
    ``{"params": {"encoder", "depth"[, "pose": {"encoder", "decoder"}]},
    "batch_stats": {...}}`` matching ``SDENet`` (merge it into initialised
    variables with ``merge_variables``).
  """
  def path(name):
    return os.path.join(directory, name)

  parts = {}
  f = path("encoder.pth")
  parts["encoder"] = resnet_variables(load_state_dict(f), encoder_depth,
                                      prefix="encoder.", strict=strict,
                                      source=f)
  f = path("depth.pth")
  parts["depth"] = decoder_variables(
      load_state_dict(f), decoder=decoder,
      encoder_channels=num_ch_enc(encoder_depth), strict=strict, source=f)
  if pose:
    f = path("pose_encoder.pth")
    pose_enc = resnet_variables(load_state_dict(f), pose_depth,
                                num_input_images=2, prefix="encoder.",
                                strict=strict, source=f)
    f = path("pose.pth")
    pose_dec = pose_decoder_variables(load_state_dict(f), strict=strict,
                                      source=f)
    parts["pose"] = {"params": {"encoder": pose_enc["params"],
                                "decoder": pose_dec["params"]},
                     "batch_stats": {"encoder": pose_enc["batch_stats"]}}
  out = {"params": {}, "batch_stats": {}}
  for name, v in parts.items():
    for col in out:
      if v.get(col):
        out[col][name] = v[col]
  return out


def merge_variables(variables: Variables, loaded: Variables,
                    at: Sequence[str] = ()) -> Variables:
  """Returns ``variables`` with the leaves of ``loaded`` put at path ``at``.

  Every loaded leaf must exist in ``variables`` with the same shape; leaves
  of ``variables`` absent from ``loaded`` are kept (e.g. decoder init when
  only the encoder is loaded). Dtypes follow ``variables``.

  Args:
    variables: ``{"params": ..., "batch_stats": ...}`` of the full model.
    loaded: a tree with the same collections, rooted at submodule ``at``.
    at: submodule path, e.g. ``("encoder",)`` or ``("pose", "encoder")``.

  Returns:
    The merged tree (a new dict; inputs are not modified).
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(variables))
  errors = []
  for path, value in flax.traverse_util.flatten_dict(dict(loaded)).items():
    target = (path[0], *at, *path[1:])
    if target not in flat:
      errors.append(f"{'/'.join(target)} not in the model")
    elif tuple(flat[target].shape) != tuple(np.shape(value)):
      errors.append(f"{'/'.join(target)}: loaded {np.shape(value)} vs model "
                    f"{tuple(flat[target].shape)}")
    else:
      flat[target] = jnp.asarray(value, dtype=flat[target].dtype)
  if errors:
    raise ValueError(f"cannot merge weights at {'/'.join(at) or '<root>'}: "
                     + "; ".join(errors[:20]))
  return flax.traverse_util.unflatten_dict(flat)


def save_npz(path: str, variables: Variables) -> None:
  """Writes a variable tree as ``.npz`` with ``/``-joined keys."""
  flat = flax.traverse_util.flatten_dict(dict(variables), sep="/")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **{k: np.asarray(v) for k, v in flat.items()})


def load_npz(path: str) -> Variables:
  """Reads a tree written by ``save_npz``."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"weights file not found: {path}")
  with np.load(path) as data:
    flat = {k: data[k] for k in data.files}
  if not flat or not all(k.split("/")[0] in ("params", "batch_stats")
                         for k in flat):
    raise ValueError(f"{path}: expected keys 'params/...' and "
                     f"'batch_stats/...' as written by save_npz")
  return flax.traverse_util.unflatten_dict(flat, sep="/")


@errors.cli_main
def main(argv: Sequence[str] | None = None) -> str:
  """CLI entry point; returns the written path."""
  parser = argparse.ArgumentParser(
      description="Convert a torchvision ResNet state dict to sdeseg_jax "
      "encoder variables (.npz).")
  parser.add_argument("--torch-resnet", required=True,
                      help=".pth or .safetensors torchvision ResNet weights")
  parser.add_argument("--depth", type=int, required=True,
                      choices=(18, 34, 50, 101))
  parser.add_argument("--num-input-images", type=int, default=1,
                      help="2 for the pose encoder (6 input channels)")
  parser.add_argument("--prefix", default="",
                      help="key prefix in the file, e.g. 'encoder.'")
  parser.add_argument("--out", required=True, help="output directory")
  args = parser.parse_args(argv)
  sd = load_state_dict(args.torch_resnet)
  variables = resnet_variables(sd, args.depth,
                               num_input_images=args.num_input_images,
                               prefix=args.prefix, source=args.torch_resnet)
  suffix = f"_x{args.num_input_images}" if args.num_input_images > 1 else ""
  out = os.path.join(args.out, f"resnet{args.depth}{suffix}.npz")
  save_npz(out, variables)
  print(f"wrote {out}")
  return out


if __name__ == "__main__":
  main()
