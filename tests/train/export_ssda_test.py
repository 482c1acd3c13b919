"""Pseudo depth of the source segmentation images, from export to SSDA.

A MiniCity dataset in the GTA5 layout stands in for GTA5. The ``export=``
variant of ``configs/sde_gta.py`` (a tiny SDE with random weights) writes
the pseudo depth into the folder ``configs/ssda_gta.py`` reads by default,
and the SSDA source stream must then find a file for every image, with the
stored values, aligned with the image under crop and flip.
"""

import json
import os
import shutil
import sys
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import jax
import ml_collections as mlc
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
from configs import sde_cityscapes  # noqa: E402
from configs import sde_gta  # noqa: E402
from configs import sde_synthia  # noqa: E402
from configs import ssda_gta  # noqa: E402
from configs import ssda_synthia  # noqa: E402
from sdeseg_jax import main as sdeseg_main  # noqa: E402
from sdeseg_jax.data import builder as builder_lib  # noqa: E402
from sdeseg_jax.data import minicity  # noqa: E402
from sdeseg_jax.data import pipeline  # noqa: E402
from sdeseg_jax.data import streams as streams_lib  # noqa: E402
from sdeseg_jax.train import checkpoint as ckpt_lib  # noqa: E402
from sdeseg_jax.train import export  # noqa: E402
from sdeseg_jax.train import sde  # noqa: E402
from sdeseg_jax.train import ssda  # noqa: E402
from sdeseg_jax.train import trainer  # noqa: E402
from sdeseg_jax.utils import sharding as sharding_lib  # noqa: E402

H, W = 32, 64


class ExportConfigsTest(parameterized.TestCase):
  """The export variants write what the SSDA streams read."""

  @parameterized.product(
      module=(sde_gta, sde_synthia, sde_cityscapes),
      depth_scale=("paper", "reference"))
  def test_export_variant_matches_the_ssda_stream(self, module,
                                                  depth_scale):
    path = "/data/x"
    config = module.get_config(f"export={depth_scale},path={path}")
    self.assertEqual(config.mode, "export_depth")
    self.assertEqual(config.export.splits, ("train", "val"))
    seg = config.data[config.export.stream]
    self.assertEqual(tuple(seg.frame_offsets), (0,))
    self.assertEqual(tuple(seg.crop_size), ())
    self.assertEqual(seg.path, path)
    ssda_module = ssda_synthia if module is sde_synthia else ssda_gta
    ssda_config = ssda_module.get_config(f"depth_scale={depth_scale}")
    role = "unlabeled" if module is sde_cityscapes else "source"
    domain = "target" if module is sde_cityscapes else "source"
    reader = mlc.ConfigDict(ssda_config.data[role].to_dict())
    reader.path = path
    # Same images, same size, same file format.
    self.assertEqual(tuple(seg.image_size), tuple(reader.image_size))
    self.assertEqual(config.export.encoding, reader.pseudo_depth_encoding)
    self.assertEqual(
        (config.export.encoding, config.export.normalize),
        ssda_gta.pseudo_depth_format(depth_scale, domain))
    # Same reader settings: the export prepares the tfds records SSDA uses.
    self.assertEqual(builder_lib.config_name(seg),
                     builder_lib.config_name(reader))

  def test_reference_formats(self):
    # The reference: raw u16 source in both scales; the reference's
    # Cityscapes files are min-max normalised u8.
    src = sde_gta.get_config("export=reference").export
    self.assertEqual((src.encoding, src.normalize), ("u16", False))
    cs = sde_cityscapes.get_config("export=reference").export
    self.assertEqual((cs.encoding, cs.normalize), ("u8", True))
    cs = sde_cityscapes.get_config("export=paper").export
    self.assertEqual((cs.encoding, cs.normalize), ("u16", False))

  def test_training_configs_keep_training(self):
    self.assertEqual(sde_gta.get_config().mode, "sde")
    config = sde_cityscapes.get_config("stage=2")
    self.assertEqual(config.mode, "sde")
    # --config.mode=export_depth on the training config writes what the SSL
    # configs read (their default pseudo_depth_encoding, u8, normalised).
    self.assertEqual(config.export.stream, "seg")
    self.assertEqual((config.export.encoding, config.export.normalize),
                     ("u8", True))

  def test_bad_export_argument(self):
    with self.assertRaisesRegex(ValueError, "export=paper or export="):
      sde_gta.get_config("export")
    with self.assertRaisesRegex(ValueError, r"export='raw'.*paper"):
      sde_cityscapes.get_config("export=raw")


def _random_checkpoint(config, workdir):
  """A checkpoint of the config's SDE with random weights at step 5."""
  task = sde.SDETask(config)
  ex = {"color_aug": jax.ShapeDtypeStruct((4, 3, H, W, 3), np.uint8)}
  shapes = jax.eval_shape(trainer.create_state_fn(task, config, ex))
  rs = np.random.RandomState(0)
  rand = lambda t: jax.tree.map(
      lambda s: (0.1 * rs.normal(size=s.shape)).astype(s.dtype), t)
  ones = jax.tree.map(lambda s: np.ones(s.shape, s.dtype),
                      shapes.batch_stats)
  ckpt = ckpt_lib.Checkpointer(workdir)
  ckpt.save(5, {"params": rand(shapes.params), "batch_stats": ones}, None,
            config)
  ckpt.wait()
  ckpt.close()


def _read_png(path):
  with Image.open(path) as im:
    return np.asarray(im)


class ExportToSSDATest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    root = cls.root
    data = os.path.join(root, "gta5")
    minicity.generate(data, "gta5", 0, width=W, height=H,
                      num_train_sequences=2, num_val_sequences=1, log=None)
    # The documented command, with the CPU-sized model and images.
    config = sde_gta.get_config(f"export=paper,path={data}")
    config.model.update(encoder_depth=10, width=8, pose_depth=10,
                        decoder="dec_tiny", output_stride=16)
    config.data.seg.update(image_size=(H, W), val_count=1, num_workers=0)
    config.data.tfds_dir = os.path.join(root, "tfds")
    config.export.out_dir = os.path.join(root, "pseudo_depth", "gta5")
    cls.sde_dir = os.path.join(root, "sde_gta")
    _random_checkpoint(config, cls.sde_dir)
    cls.sde_config = config
    cls.index = sdeseg_main.resolve_mode(config.mode)(config, cls.sde_dir)
    cls.out_dir = config.export.out_dir

    # The SSDA run reading it: data_root = root, default folders.
    sc = ssda_gta.get_config("row=baseline,runlocal")
    sc.data_root = root
    sc.data.tfds_dir = os.path.join(root, "tfds")
    sc.data.source.update(image_size=(H, W), crop_size=(H, H), val_count=1)
    for d in ("leftImg8bit", "gtFine"):  # target folders exist (unused)
      os.makedirs(os.path.join(root, "cityscapes", d))
    cls.ssda_config = sc
    cls.source = ssda.resolve_streams(sc)["source"]

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.root, ignore_errors=True)
    super().tearDownClass()

  def test_index_records_the_export(self):
    self.assertEqual(self.index["counts"], {"train": 2, "val": 1})
    self.assertEqual(self.index["step"], 5)
    with open(os.path.join(self.out_dir, "index.json")) as f:
      index = json.load(f)
    self.assertEqual(index["encoding"], "u16")
    self.assertFalse(index["normalize"])
    self.assertEqual(index["image_size"], [H, W])
    self.assertEqual(index["stream"]["name"], "gta5_seg")
    self.assertEqual(index["stream"]["frame_offsets"], [0])
    # One file per segmentation image, named after it.
    images = sorted(os.listdir(os.path.join(self.root, "gta5", "images")))
    self.assertEqual(sorted(os.listdir(os.path.join(self.out_dir,
                                                    "images"))), images)

  def test_ssda_reads_the_default_folder(self):
    self.assertEqual(self.source.pseudo_depth_dir, self.out_dir)
    _, normalize = ssda_gta.pseudo_depth_format(
        self.ssda_config.ssda.depth_scale, "source")
    self.assertEqual(export.check_pseudo_depth(
        self.source, role="source", splits=("train", "val"),
        normalize=normalize), 3)

  def test_every_sample_gets_its_exported_depth(self):
    variables = ckpt_lib.load_variables(self.sde_dir)
    variables = {"params": variables["params"],
                 "batch_stats": variables["batch_stats"]}
    predict = export.make_predict(self.sde_config.model,
                                  sharding_lib.make_mesh())
    seen = []
    for split in ("train", "val"):
      loader = pipeline.make_loader(
          self.source, split=split, global_batch_size=4, seed=0,
          train=False, data_dir=self.ssda_config.data.tfds_dir)
      for batch in loader:
        disp = np.asarray(predict(variables, batch["color"], 0))
        for i in np.flatnonzero(np.asarray(batch["index"]) >= 0):
          got = batch["pseudo_depth"][i]
          self.assertEqual(got.shape, (H, W))
          name = f"{split}:{int(batch['index'][i])}"
          seen.append(name)
          # The loaded map is the stored file ...
          files = sorted(os.listdir(os.path.join(self.out_dir, "images")))
          offset = 0 if split == "train" else 2
          png = _read_png(os.path.join(self.out_dir, "images",
                                       files[offset + batch["index"][i]]))
          self.assertEqual(png.dtype, np.uint16)
          np.testing.assert_array_equal(got, png.astype(np.float32) / 65535,
                                        err_msg=name)
          # ... which is the raw (not normalised) disparity of this image,
          # up to one quantum: the export ran sharded over 4 devices, this
          # prediction on one, so float sums differ in the last bits.
          diff = np.abs(png.astype(np.int64) - export.encode(
              disp[i], "u16", False).astype(np.int64))
          self.assertLessEqual(int(diff.max()), 1, name)
          self.assertLess(float(np.mean(diff > 0)), 0.01, name)
          self.assertFalse(png.min() == 0 and png.max() == 65535, name)
      loader.close()
    self.assertCountEqual(seen, ["train:0", "train:1", "val:0"])
    self.assertGreater(float(np.ptp(got)), 0.0)

  def test_training_batches_crop_depth_with_the_image(self):
    full = pipeline.make_loader(
        self.source, split="train", global_batch_size=2, seed=0,
        train=False, data_dir=self.ssda_config.data.tfds_dir)
    ref = next(iter(full))
    full.close()
    loaders = streams_lib.make_stream_loaders(
        {"source": self.source}, {"source": 2}, seed=3,
        data_dir=self.ssda_config.data.tfds_dir)
    batch = next(loaders["source"])
    loaders["source"].close()
    self.assertEqual(batch["pseudo_depth"].shape, (2, H, H))
    for b in range(2):
      i = int(batch["index"][b])
      color = batch["color"][b, 0].astype(int)
      matches = []
      for flip in (False, True):
        img = ref["color"][i, 0].astype(int)
        dep = ref["pseudo_depth"][i]
        if flip:
          img, dep = img[:, ::-1], dep[:, ::-1]
        for x in range(W - H + 1):
          if np.abs(img[:, x:x + H] - color).max() <= 1:
            matches.append((flip, x, dep[:, x:x + H]))
      self.assertNotEmpty(matches, "crop not found in the full image")
      np.testing.assert_array_equal(batch["pseudo_depth"][b], matches[0][2])

  def _copy(self):
    out = tempfile.mkdtemp(dir=self.root)
    shutil.rmtree(out)
    shutil.copytree(self.out_dir, out)
    stream = mlc.ConfigDict(self.source.to_dict())
    stream.pseudo_depth_dir = out
    return stream

  def test_missing_file_names_it_and_the_command(self):
    stream = self._copy()
    missing = os.path.join(stream.pseudo_depth_dir, "images", "00002.png")
    os.remove(missing)
    with self.assertRaises(FileNotFoundError) as cm:
      export.check_pseudo_depth(stream, role="source")
    msg = str(cm.exception)
    self.assertIn(f"missing pseudo-depth file {missing}", msg)
    self.assertIn("python -m sdeseg_jax.main --config=configs/sde_gta.py:"
                  f"export=paper,path={stream.path}", msg)
    self.assertIn(f"--config.export.out_dir={stream.pseudo_depth_dir}", msg)
    # The image size differs from SSDA's 1024x512: the command says so.
    self.assertIn(f"--config.data.seg.image_size='({H}, {W})'", msg)
    # 00002 is a train image; the val split alone is still complete.
    self.assertEqual(export.check_pseudo_depth(
        stream, role="source", splits=("val",)), 1)

  def test_missing_folder_names_the_command(self):
    stream = mlc.ConfigDict(self.source.to_dict())
    stream.pseudo_depth_dir = os.path.join(self.root, "pseudo_depth", "gta")
    with self.assertRaisesRegex(
        FileNotFoundError,
        r"config.data.source.pseudo_depth_dir=.*/pseudo_depth/gta' does not "
        r"exist(.|\n)*configs/sde_gta.py:export=paper"):
      export.check_pseudo_depth(stream, role="source")

  def test_wrong_format_is_refused(self):
    stream = self._copy()
    stream.pseudo_depth_encoding = "u8"
    with self.assertRaisesRegex(
        ValueError, r"exported with encoding 'u16' but config.data.source."
        r"pseudo_depth_encoding='u8'(.|\n)*Re-export with"):
      export.check_pseudo_depth(stream, role="source")
    stream.pseudo_depth_encoding = "u16"
    with self.assertRaisesRegex(ValueError, "needs normalize=True"):
      export.check_pseudo_depth(stream, role="source", normalize=True,
                                depth_scale="reference")
    stream.image_size = (H, 2 * W)
    with self.assertRaisesRegex(ValueError, "image_size"):
      export.check_pseudo_depth(stream, role="source")

  def test_minicity_stream_points_at_the_demo(self):
    stream = mlc.ConfigDict(self.source.to_dict())
    stream.name = "minicity_gta5"
    stream.pseudo_depth_dir = os.path.join(self.root, "nowhere")
    with self.assertRaisesRegex(FileNotFoundError, "configs/demo.py"):
      export.check_pseudo_depth(stream, role="source")


if __name__ == "__main__":
  absltest.main()
