"""Weight import: torchvision ResNet files, reference SDE checkpoints, CLI."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.models import pretrained
from sdeseg_jax.models.joint import SDENet
from sdeseg_jax.models.resnet import ResNetEncoder
from tests.models import _helpers as H
from tests.models import _torchvision


TR = H.load_torch_ref()
TV = _torchvision.load_models()


def _expected_from_torch(sd):
  """The flax tree a torch ResNet state dict should become, derived here
  from the naming rules (not by the converter): ``layer1.0.downsample.1.
  running_var`` -> ``batch_stats/layer1_0/downsample_1/var``; conv weights
  OIHW -> HWIO; ``fc.*`` and ``num_batches_tracked`` are not encoder
  variables."""
  leaf_names = {"bias": "bias", "running_mean": "mean", "running_var": "var"}
  out = {}
  for key, value in sd.items():
    parts = key.split(".")
    if parts[0] == "fc" or parts[-1] == "num_batches_tracked":
      continue
    value = np.asarray(value, np.float32)
    *module, leaf = parts
    if module[0].startswith("layer"):
      module = [f"{module[0]}_{module[1]}"] + module[2:]
    if len(module) == 3:  # downsample.0 / downsample.1
      module = module[:1] + [f"{module[1]}_{module[2]}"]
    if leaf == "weight":
      leaf = "kernel" if value.ndim == 4 else "scale"
      if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
    else:
      leaf = leaf_names[leaf]
    coll = "batch_stats" if leaf in ("mean", "var") else "params"
    out[(coll, *module, leaf)] = value
  return out


def _r18(seed, in_ch=3):
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(seed)
  net = TR.ResNet(TR.BasicBlock, (2, 2, 2, 2), in_ch=in_ch)
  TR.randomize_bn(net, torch.Generator().manual_seed(seed))
  return net.eval()


@absltest.skipIf(TR is None, "torch not installed")
class ResNetImportTest(absltest.TestCase):

  def test_errors_name_file_and_keys(self):
    sd = TR.state_dict_numpy(_r18(0))
    missing = dict(sd)
    del missing["layer2.1.bn2.running_var"]
    with self.assertRaisesRegex(ValueError,
                                r"r18\.pth.*missing.*layer2\.1\.bn2\."
                                r"running_var"):
      pretrained.resnet_variables(missing, 18, source="r18.pth")
    bad = dict(sd)
    bad["layer3.0.conv1.weight"] = np.zeros((256, 128, 1, 1), np.float32)
    with self.assertRaisesRegex(ValueError, r"layer3\.0\.conv1\.weight: file "
                                r"\(1, 1, 128, 256\) vs model"):
      pretrained.resnet_variables(bad, 18)
    extra = dict(sd, **{"layer5.0.conv1.weight": np.zeros(1, np.float32)})
    with self.assertRaisesRegex(ValueError, r"unused keys.*layer5"):
      pretrained.resnet_variables(extra, 18)
    loose = pretrained.resnet_variables(extra, 18, strict=False)
    self.assertIn("layer4_1", loose["params"])
    with self.assertRaisesRegex(ValueError, "missing keys"):
      pretrained.resnet_variables(sd, 50)

  def test_pose_encoder_conv1_is_tiled_and_halved(self):
    sd = TR.state_dict_numpy(_r18(1))
    v = pretrained.resnet_variables(sd, 18, num_input_images=2)
    kernel = v["params"]["conv1"]["kernel"]
    self.assertEqual(kernel.shape, (7, 7, 6, 64))
    hwio = sd["conv1.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_allclose(kernel[:, :, :3], hwio / 2)
    np.testing.assert_allclose(kernel[:, :, 3:], hwio / 2)
    # A genuine 6-channel file is taken as is.
    sd6 = TR.state_dict_numpy(_r18(2, in_ch=6))
    v6 = pretrained.resnet_variables(sd6, 18, num_input_images=2)
    np.testing.assert_allclose(v6["params"]["conv1"]["kernel"],
                               sd6["conv1.weight"].transpose(2, 3, 1, 0))

  def test_safetensors_reads_like_pth(self):
    import torch  # pylint: disable=g-import-not-at-top
    from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    net = _r18(4)
    pth = os.path.join(tmp, "r18.pth")
    st = os.path.join(tmp, "r18.safetensors")
    torch.save(net.state_dict(), pth)
    save_file(TR.state_dict_numpy(net), st)
    a = pretrained.load_state_dict(pth)
    b = pretrained.load_state_dict(st)
    self.assertEqual(set(a), set(b))
    for k in a:
      np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    va = pretrained.resnet_variables(b, 18, source=st)
    self.assertEqual(va["params"]["conv1"]["kernel"].shape, (7, 7, 3, 64))

  def test_cli_writes_npz_that_merges(self):
    import torch  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    net = _r18(3)
    src = os.path.join(tmp, "resnet18.pth")
    torch.save(net.state_dict(), src)
    out = pretrained.main(["--torch-resnet", src, "--depth", "18", "--out",
                           os.path.join(tmp, "out")])
    self.assertEqual(os.path.basename(out), "resnet18.npz")
    loaded = pretrained.load_npz(out)
    flat_w = _expected_from_torch(TR.state_dict_numpy(net))
    flat_l = flax.traverse_util.flatten_dict(loaded)
    self.assertEqual(set(flat_l), set(flat_w))
    for k in flat_w:
      np.testing.assert_array_equal(flat_l[k], flat_w[k])
    # Merge into a (not yet materialised) SDENet at the encoder.
    model = SDENet(encoder_depth=18, output_stride=32, decoder="dec_tiny",
                   use_pose=False)
    x = jnp.zeros((1, 1, 64, 64, 3))
    abstract = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x), x)
    merged = pretrained.merge_variables(abstract, loaded, at=("encoder",))
    np.testing.assert_array_equal(
        merged["params"]["encoder"]["layer1_0"]["conv1"]["kernel"],
        flat_w[("params", "layer1_0", "conv1", "kernel")])
    self.assertIsInstance(merged["params"]["depth"]["dispconv_0"]["kernel"],
                          jax.ShapeDtypeStruct)
    with self.assertRaisesRegex(ValueError, "pose/layer1_0.*not in the model"):
      pretrained.merge_variables(abstract, loaded, at=("pose",))
    with self.assertRaisesRegex(FileNotFoundError, "nope.npz"):
      pretrained.load_npz(os.path.join(tmp, "nope.npz"))


@absltest.skipIf(TV is None, "torchvision (or torch) not installed")
class TorchvisionResNetTest(parameterized.TestCase):
  """The converter on the real torchvision ResNet state dicts."""

  @parameterized.parameters(18, 34, 50, 101)
  def test_every_key_and_shape(self, depth):
    net = getattr(TV, f"resnet{depth}")(weights=None)
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    variables = pretrained.resnet_variables(sd, depth, source=f"r{depth}")
    flat = flax.traverse_util.flatten_dict(variables)
    want = _expected_from_torch(sd)
    self.assertEqual(set(flat), set(want))
    for path, value in want.items():
      self.assertEqual(flat[path].shape, value.shape, path)
    # Spot checks written out by hand.
    self.assertEqual(flat[("params", "conv1", "kernel")].shape,
                     (7, 7, 3, 64))
    last = 2048 if depth >= 50 else 512
    self.assertEqual(
        flat[("batch_stats", "layer4_0", "downsample_1", "var")].shape,
        (last,))
    np.testing.assert_array_equal(
        flat[("params", "layer3_1", "conv2", "kernel")],
        sd["layer3.1.conv2.weight"].transpose(2, 3, 1, 0))

  @parameterized.parameters(18, 50)
  def test_features_match_torchvision_forward(self, depth):
    import torch  # pylint: disable=g-import-not-at-top
    torch.manual_seed(depth)
    net = getattr(TV, f"resnet{depth}")(weights=None)
    with torch.no_grad():  # non-trivial BatchNorm statistics
      for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
          m.running_mean.uniform_(-0.1, 0.1)
          m.running_var.uniform_(0.5, 1.5)
          m.weight.uniform_(0.5, 1.5)
          m.bias.uniform_(-0.1, 0.1)
    net.eval()
    sd = {k: v.numpy() for k, v in net.state_dict().items()}
    variables = pretrained.resnet_variables(sd, depth)
    x = np.random.default_rng(depth).uniform(size=(1, 64, 64, 3)).astype(
        np.float32)
    out = ResNetEncoder(depth, 32).apply(variables, x, False)
    with torch.no_grad():
      t = (H.nhwc_to_torch(x) - 0.45) / 0.225  # monodepth2's normalisation
      f = [net.relu(net.bn1(net.conv1(t)))]
      f.append(net.layer1(net.maxpool(f[0])))
      for layer in (net.layer2, net.layer3, net.layer4):
        f.append(layer(f[-1]))
    for k in range(5):
      ref = H.nchw(f[k])
      # fp32 rounding grows with the activations (randomly initialised deep
      # nets reach magnitudes in the hundreds): bound relative to them.
      np.testing.assert_allclose(out[f"f{k}"], ref,
                                 atol=1e-5 * max(1.0, np.abs(ref).max()),
                                 rtol=0, err_msg=f"f{k}")


@absltest.skipIf(TR is None, "torch not installed")
class SDECheckpointTest(absltest.TestCase):

  def test_reference_checkpoint_matches_torch_forward(self):
    import torch  # pylint: disable=g-import-not-at-top
    from torch import nn  # pylint: disable=g-import-not-at-top
    tmp = self.create_tempdir().full_path
    enc, pose_enc = _r18(4), _r18(5, in_ch=6)
    torch.manual_seed(6)
    dec = TR.DepthDecoder((64, 64, 128, 256, 512), (8, 8, 16, 16, 32),
                          (1, 2, 3), False).eval()
    pose_dec = TR.PoseDecoder(512).eval()
    with torch.no_grad():
      pose_dec.net[3].weight.mul_(50.0)
    # The reference saves module state dicts: ResnetEncoder wraps the
    # torchvision net as ``encoder``; depth.pth holds ``decoder.N.*``.
    for name, module in (("encoder", nn.ModuleDict({"encoder": enc})),
                         ("depth", dec),
                         ("pose_encoder", nn.ModuleDict({"encoder": pose_enc})),
                         ("pose", pose_dec)):
      sd = module.state_dict()
      if name == "encoder":
        sd["height"], sd["width"] = 64, 64  # monodepth2 extras, ignored
      torch.save(sd, os.path.join(tmp, f"{name}.pth"))

    loaded = pretrained.sde_variables_from_checkpoint(
        tmp, encoder_depth=18, decoder="dec_tiny")
    model = SDENet(encoder_depth=18, output_stride=32, decoder="dec_tiny")
    rng = np.random.default_rng(7)
    x = rng.uniform(size=(2, 2, 64, 64, 3)).astype(np.float32)
    abstract = jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, (0, 1)), x)
    variables = pretrained.merge_variables(abstract, loaded)
    for leaf in jax.tree.leaves(variables):
      self.assertNotIsInstance(leaf, jax.ShapeDtypeStruct)

    out = jax.jit(lambda v, x: model.apply(v, x, (0, 1)))(variables, x)
    with torch.no_grad():
      feats = enc.features(H.nhwc_to_torch(x[:, 0]))
      want = dec(feats)
      pair = np.concatenate([x[:, 0], x[:, 1]], axis=-1)
      axisangle, translation = pose_dec(
          pose_enc.features(H.nhwc_to_torch(pair))[-1])
    for s in range(4):
      np.testing.assert_allclose(out["disp"][s], H.nchw(want[("disp", s)]),
                                 atol=1e-5, err_msg=f"disp{s}")
    np.testing.assert_allclose(out["axisangle"][1], axisangle.numpy(),
                               atol=1e-6, rtol=1e-3)
    np.testing.assert_allclose(out["translation"][1], translation.numpy(),
                               atol=1e-6, rtol=1e-3)

  def test_module_indices(self):
    idx = pretrained.decoder_module_indices()
    self.assertEqual(
        [idx[f"upconv_{i}_{j}"] for i in (4, 3, 2, 1, 0) for j in (0, 1)],
        [0, 2, 3, 5, 6, 8, 9, 11, 12, 13])
    self.assertEqual([idx[f"dispconv_{s}"] for s in range(4)],
                     [14, 15, 16, 17])


if __name__ == "__main__":
  absltest.main()
