"""Weight import: torchvision ResNet files, reference SDE checkpoints, CLI."""

import os

from absl.testing import absltest
import flax
import jax
import jax.numpy as jnp
import numpy as np

from sdeseg_jax.models import pretrained
from sdeseg_jax.models.joint import SDENet
from tests.models import _helpers as H


TR = H.load_torch_ref()


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
    want = pretrained.resnet_variables(TR.state_dict_numpy(net), 18)
    flat_l = flax.traverse_util.flatten_dict(loaded)
    flat_w = flax.traverse_util.flatten_dict(want)
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
