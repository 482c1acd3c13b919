"""mode=predict on the tiny trained run: a folder of mixed sizes with a
corrupt file and a video, outputs decoded back, resume, refusals."""

import functools
import glob
import json
import os
import shutil

import chex
import jax
import numpy as np
from PIL import Image
import pytest

from sdeseg_jax import errors
from sdeseg_jax.data import labels as labels_lib
from sdeseg_jax.predict import inputs
from sdeseg_jax.predict import predict
from sdeseg_jax.predict import runs
from tests import _fixtures

VIDEO_FRAMES, VIDEO_RATE, FPS = 6, 10, 5


def _config(run_dir, input_dir, **kw):
  config = _fixtures.load_config("predict", lock=False)
  config.predict.update(run=run_dir, input=input_dir, batch_size=2,
                        alpha=1.0, fps=float(FPS), **kw)
  return config


def _write_video(path, frames):
  import av  # pylint: disable=g-import-not-at-top
  with av.open(path, "w") as c:
    s = c.add_stream("libx264", rate=VIDEO_RATE)
    s.height, s.width = frames[0].shape[:2]
    s.pix_fmt = "yuv420p"
    for f in frames:
      for p in s.encode(__import__("av").VideoFrame.from_ndarray(
          f, format="rgb24")):
        c.mux(p)
    for p in s.encode():
      c.mux(p)


@pytest.fixture(scope="module")
def input_dir(tiny_run, tmp_path_factory):
  """2 MiniCity images (64x32), one 80x48 in a sub-folder, a truncated PNG
  and a 6-frame video (64x32, 10 fps)."""
  d = str(tmp_path_factory.mktemp("inputs"))
  src = sorted(glob.glob(os.path.join(tiny_run.data, "leftImg8bit", "val",
                                      "*", "*.png")))
  imgs = [np.asarray(Image.open(p).convert("RGB")) for p in src[:2]]
  for i, im in enumerate(imgs):
    Image.fromarray(im).save(os.path.join(d, f"img{i}.png"))
  os.makedirs(os.path.join(d, "sub"))
  Image.fromarray(imgs[0]).resize((80, 48)).save(
      os.path.join(d, "sub", "big.jpg"), quality=95)
  data = open(os.path.join(d, "img0.png"), "rb").read()
  open(os.path.join(d, "broken.png"), "wb").write(data[:len(data) // 3])
  _write_video(os.path.join(d, "clip.mp4"),
               [imgs[k % 2] for k in range(VIDEO_FRAMES)])
  return d


@pytest.fixture(scope="module")
def predicted(tiny_run, input_dir, tmp_path_factory):
  """One predict_all over the folder, counting traces of the forward."""
  out = str(tmp_path_factory.mktemp("pred"))
  run = runs.load(tiny_run.workdir)
  found = inputs.list_inputs(input_dir)
  # Two shape buckets (64x32 for the images and frames, 80x48): exactly two
  # traces, whatever the number of batches per bucket.
  wrap = functools.partial(chex.assert_max_traces, n=2)
  with _fixtures.cheap_compiles():
    summary = predict.predict_all(run, found, out,
                                  _config(tiny_run.workdir, input_dir).predict,
                                  wrap=wrap)
  return out, summary, run


def test_lists_images_and_videos(input_dir):
  found = inputs.list_inputs(input_dir)
  assert [i.name for i in found.images] == ["broken", "img0", "img1",
                                            "sub/big"]
  assert [n for _, n in found.videos] == ["clip"]


def test_globs_lists_and_name_collisions(tmp_path):
  im = Image.fromarray(np.zeros((4, 6, 3), np.uint8))
  for name in ("a.png", "a.jpg", "b.png", "sub/c.png"):
    (tmp_path / name).parent.mkdir(exist_ok=True)
    im.save(tmp_path / name)
  found = inputs.list_inputs(str(tmp_path))
  assert [i.name for i in found.images] == ["a_jpg", "a_png", "b",
                                            "sub/c"]
  found = inputs.list_inputs(str(tmp_path / "**" / "*.png"))
  assert [i.name for i in found.images] == ["a", "b", "sub/c"]
  (tmp_path / "list.txt").write_text("# two of them\nb.png\nsub/c.png\n")
  found = inputs.list_inputs(str(tmp_path / "list.txt"))
  assert [i.name for i in found.images] == ["b", "sub/c"]
  (tmp_path / "bad.txt").write_text("nope.png\n")
  with pytest.raises(errors.ConfigError, match="1 missing files"):
    inputs.list_inputs(str(tmp_path / "bad.txt"))
  with pytest.raises(errors.ConfigError, match="matches no image"):
    inputs.list_inputs(str(tmp_path / "*.gif"))
  assert inputs.read_image(str(tmp_path / "b.png")).shape == (4, 6, 3)


def test_corrupt_file_reported_by_name_and_skipped(predicted):
  out, summary, _ = predicted
  assert [f["name"] for f in summary["failed"]] == ["broken"]
  assert "broken.png" in summary["failed"][0]["error"]
  # 3 images + frames 0, 2, 4 of the 10 fps video at 5 fps.
  assert summary["predicted"] == 3 + 3
  assert not glob.glob(os.path.join(out, "*", "broken.png"))
  assert json.load(open(os.path.join(out, "summary.json")))["failed"]


def test_outputs_decode_back(predicted, input_dir):
  out, _, _ = predicted
  valid_ids = set(labels_lib.TRAIN_ID_TO_LABEL_ID[:labels_lib.NUM_CLASSES])
  names = ["img0", "img1", "sub/big"] + [f"clip/frame_{i:06d}"
                                         for i in (0, 2, 4)]
  for name in names:
    lab = np.asarray(Image.open(os.path.join(out, "labelIds",
                                             name + ".png")))
    assert lab.dtype == np.uint8 and lab.ndim == 2
    assert set(np.unique(lab)) <= valid_ids, name
    want = (48, 80) if name == "sub/big" else (32, 64)
    assert lab.shape == want
    color = np.asarray(Image.open(os.path.join(out, "color", name + ".png")))
    np.testing.assert_array_equal(
        color, labels_lib.colorize_train_ids(
            labels_lib.cityscapes_to_train_ids(lab)))
    # alpha = 1: the overlay is the colour map.
    ov = np.asarray(Image.open(os.path.join(out, "overlay", name + ".png")))
    np.testing.assert_array_equal(ov, color)
    depth = Image.open(os.path.join(out, "depth", name + ".png"))
    assert depth.mode.startswith("I")
    d = np.asarray(depth).astype(np.float64) / 256
    assert d.shape == want and d.min() >= 0.1 - 1e-2 and d.max() <= 100.01
    disp = np.asarray(Image.open(os.path.join(out, "disparity",
                                              name + ".png")))
    assert disp.shape == want + (3,)
  assert not os.path.exists(os.path.join(out, "labelIds", "clip",
                                         "frame_000001.png"))


def test_video_mp4_of_the_overlays(predicted):
  import av  # pylint: disable=g-import-not-at-top
  out, summary, _ = predicted
  mp4 = os.path.join(out, "clip_overlay.mp4")
  assert summary["videos"] == [mp4]
  with av.open(mp4) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
  assert len(frames) == 3 and frames[0].shape == (32, 64, 3)
  first = np.asarray(Image.open(os.path.join(out, "overlay", "clip",
                                             "frame_000000.png")))
  # Lossy H.264 of the first overlay: close on average.
  assert np.abs(frames[0].astype(float) - first).mean() < 20


def test_resume_after_interruption(tiny_run, input_dir, tmp_path):
  out = str(tmp_path / "pred")
  run = runs.load(tiny_run.workdir)
  found = inputs.list_inputs(input_dir)
  pc = _config(tiny_run.workdir, input_dir).predict
  real_write, calls = predict.Writer.write, []

  def dying_write(self, name, image, res):
    if len(calls) == 2:
      raise KeyboardInterrupt  # the run is killed after two images
    calls.append(name)
    real_write(self, name, image, res)

  predict.Writer.write = dying_write
  try:
    with _fixtures.cheap_compiles(), pytest.raises(KeyboardInterrupt):
      predict.predict_all(run, found, out, pc)
  finally:
    predict.Writer.write = real_write
  done = {n: os.path.getmtime(os.path.join(out, "labelIds", n + ".png"))
          for n in calls}
  with _fixtures.cheap_compiles():
    summary = predict.predict_all(run, found, out, pc)
  assert summary["skipped"] == 2
  assert summary["predicted"] == 6 - 2
  for n, t in done.items():  # nothing already written was rewritten
    assert os.path.getmtime(os.path.join(out, "labelIds", n + ".png")) == t
  # Everything is done now: a third run predicts nothing and still reports
  # the corrupt file with a non-zero exit.
  config = _config(tiny_run.workdir, input_dir)
  with pytest.raises(SystemExit, match="broken.png"):
    predict.run(config, out)
  assert json.load(open(os.path.join(out, "summary.json")))["skipped"] == 6


def test_other_model_in_the_folder_is_refused(tiny_run, input_dir, predicted):
  out, _, _ = predicted
  config = _config(tiny_run.workdir, input_dir, model="teacher")
  with pytest.raises(errors.ConfigError, match="model: 'student' -> 'teacher'"):
    predict.run(config, out)


def test_empty_folder_fails_at_once(tmp_path):
  empty = tmp_path / "empty"
  empty.mkdir()
  config = _config(str(tmp_path / "no_such_run"), str(empty))
  with pytest.raises(errors.ConfigError, match="without images or videos"):
    predict.run(config, str(tmp_path / "out"))


def test_other_architecture_fails_at_once(tiny_run, tmp_path):
  copy = str(tmp_path / "run")
  shutil.copytree(os.path.join(tiny_run.workdir, "checkpoints"),
                  os.path.join(copy, "checkpoints"))
  for meta in glob.glob(os.path.join(copy, "checkpoints", "*", "config",
                                     "metadata")):
    cfg = json.load(open(meta))
    cfg["model"]["width"] = 16
    json.dump(cfg, open(meta, "w"))
  with pytest.raises(errors.CheckpointError, match="another architecture.*of another "
                     "shape"):
    runs.load(copy)
  # The right model section given instead of the saved one loads.
  fixed = runs.load(copy, model_config=tiny_run.config.model)
  assert fixed.config.model.width == tiny_run.config.model.width
  with pytest.raises(errors.CheckpointError, match="no finished checkpoint"):
    runs.load(str(tmp_path))


def test_sliding_window_averages_overlapping_windows(tiny_run):
  run = runs.load(tiny_run.workdir, model="teacher")
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (1, 32, 96, 3), dtype=np.uint8)
  fwd = predict.make_forward(run, "sliding", (32, 64), (32, 64), 0.5)
  got = jax.jit(fwd)(run.variables, x)

  def net(crop):
    o = run.model.apply(run.variables, crop[:, None] / 255.0, (0,),
                        train=False, pose=False)
    return np.asarray(o["semantics"]), np.asarray(o["disp"][0][..., 0])
  (l0, d0), (l1, d1) = net(x[:, :, :64]), net(x[:, :, 32:])
  logits = np.zeros((1, 32, 96, l0.shape[-1]))
  disp = np.zeros((1, 32, 96))
  cnt = np.zeros((1, 1, 96, 1))
  logits[:, :, :64] += l0
  logits[:, :, 32:] += l1
  disp[:, :, :64] += d0
  disp[:, :, 32:] += d1
  cnt[:, :, :64] += 1
  cnt[:, :, 32:] += 1
  want = np.argmax(logits / cnt, -1)
  agree = np.mean(np.asarray(got["labels"]) == want)
  assert agree > 0.99, agree
  np.testing.assert_allclose(got["disp"], disp / cnt[..., 0], atol=1e-4)
  assert predict.window_starts(96, 64, 32) == [0, 32]
  assert predict.window_starts(100, 64, 21) == [0, 21, 36]
  assert predict.window_starts(50, 64, 21) == [0]


def test_label_ids_invert_the_train_id_table():
  t = np.arange(labels_lib.NUM_CLASSES, dtype=np.uint8)
  np.testing.assert_array_equal(
      labels_lib.cityscapes_to_train_ids(predict.label_ids(t)), t)
  assert predict.label_ids(np.array([labels_lib.IGNORE_INDEX]))[0] == 0
  im = np.full((2, 2, 3), 100, np.uint8)
  col = np.full((2, 2, 3), 200, np.uint8)
  assert predict.overlay(im, col, 0.25)[0, 0, 0] == 125
  assert predict.depth_u16(np.array([0.0, 1.0]), 0.1, 100.0).tolist() == [
      25600, 26]
