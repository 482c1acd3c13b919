"""What ``mode=predict`` reads: a folder, a glob, a list file or a video.

``list_inputs(spec)`` turns ``config.predict.input`` into ``Item``s, each
with the output name its files get (the path relative to the folder, list
or glob root, without extension; ``<video>/frame_<n>`` for video frames):

* a folder: every image below it (recursively, sorted) and every video;
* a video file (``VIDEO_EXTS``): its frames, sampled at ``fps`` frames per
  second of video time (0 = every frame);
* an image file;
* any other file: a list, one path per line (relative paths are relative to
  the list's folder; ``#`` starts a comment);
* anything else: a glob pattern (``**`` recurses).

Images are decoded with PIL (to RGB uint8), videos with PyAV (``av``, which
bundles its own FFmpeg). A file that cannot be decoded (unreadable,
truncated, not an image) is not an error here: its ``read`` raises
``InputError`` naming the file, and the caller reports and skips it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import glob
import os
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from sdeseg_jax import errors

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp",
              ".ppm")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg",
              ".mpeg")


class InputError(Exception):
  """An input file that could not be decoded; the message names it."""


@dataclasses.dataclass(frozen=True)
class Item:
  """One image to predict.

  Attributes:
    name: output name (relative, ``/``-separated, no extension).
    path: the image or video file.
    video: the video's output name for frames of a video, else None.
  """
  name: str
  path: str
  video: str | None = None


@dataclasses.dataclass(frozen=True)
class Inputs:
  """``images`` (image items) and ``videos`` (``(path, name)`` pairs)."""
  images: tuple[Item, ...]
  videos: tuple[tuple[str, str], ...]

  def __len__(self) -> int:
    return len(self.images) + len(self.videos)


def _kind(path: str) -> str | None:
  ext = os.path.splitext(path)[1].lower()
  if ext in IMAGE_EXTS:
    return "image"
  if ext in VIDEO_EXTS:
    return "video"
  return None


def _from_files(files: Iterable[str], root: str) -> Inputs:
  """Items named by their path relative to ``root`` without extension; two
  files differing only in the extension keep it (``a_png``, ``a_jpg``)."""
  images, videos = [], []
  files = [f for f in sorted(set(files)) if _kind(f)]
  stems = collections.Counter(os.path.splitext(f)[0] for f in files)
  for f in files:
    kind = _kind(f)
    rel = os.path.relpath(f, root).replace(os.sep, "/")
    stem, ext = os.path.splitext(rel)
    rel = stem if stems[os.path.splitext(f)[0]] == 1 else stem + "_" + ext[1:]
    if kind == "image":
      images.append(Item(rel, f))
    elif kind == "video":
      videos.append((f, rel))
  return Inputs(tuple(images), tuple(videos))


def _common_root(files: list[str]) -> str:
  if not files:
    return ""
  if len(files) == 1:
    return os.path.dirname(files[0])
  return os.path.commonpath([os.path.dirname(f) for f in files])


def list_inputs(spec: str, key: str = "config.predict.input") -> Inputs:
  """Resolves ``spec`` (module docstring) into image items and videos.

  Raises:
    errors.ConfigError: nothing to predict (empty folder, no match, empty
      list, or listed files that do not exist), naming ``key`` and ``spec``.
  """
  if not spec:
    raise errors.ConfigError(
        f"{key} is empty: give a folder, a glob, an image list or a video, "
        f"e.g. --config=configs/predict.py:run=<workdir>,input=<folder>")
  path = os.path.abspath(os.path.expanduser(spec))
  exts = ", ".join(IMAGE_EXTS + VIDEO_EXTS)
  if os.path.isdir(path):
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    found = _from_files(files, path)
    if not len(found):
      raise errors.ConfigError(
          f"{key}={spec!r} is a folder without images or videos ({exts})")
    return found
  if os.path.isfile(path):
    if _kind(path):
      return _from_files([path], os.path.dirname(path))
    base = os.path.dirname(path)
    listed, missing = [], []
    with open(path) as f:
      for line in f:
        line = line.split("#", 1)[0].strip()
        if not line:
          continue
        p = os.path.normpath(os.path.join(base, os.path.expanduser(line)))
        (listed if os.path.isfile(p) else missing).append(p)
    if missing:
      raise errors.ConfigError(
          f"{key}={spec!r} lists {len(missing)} missing files, e.g. "
          f"{missing[0]}")
    found = _from_files(listed, _common_root(listed))
    if not len(found):
      raise errors.ConfigError(
          f"{key}={spec!r}: the list names no image or video ({exts})")
    return found
  files = [f for f in glob.glob(path, recursive=True) if os.path.isfile(f)]
  found = _from_files(files, _common_root(files))
  if not len(found):
    raise errors.ConfigError(
        f"{key}={spec!r} is not a folder or file and matches no image or "
        f"video ({exts})")
  return found


def read_image(path: str) -> np.ndarray:
  """RGB uint8 ``[H, W, 3]`` of an image file.

  Raises:
    InputError: unreadable, truncated or not an image.
  """
  try:
    with Image.open(path) as im:
      im.load()  # decodes fully: a truncated file fails here
      return np.asarray(im.convert("RGB"))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError
          ) as e:
    raise InputError(f"{path}: cannot decode the image ({e})") from e


def video_frames(path: str, name: str, fps: float
                 ) -> Iterator[tuple[Item, np.ndarray]]:
  """Decodes a video, yielding ``(item, frame RGB uint8)``.

  Args:
    path: the video file.
    name: its output name; frames are ``<name>/frame_<n:06d>`` with ``n``
      the frame's index in the file.
    fps: frames kept per second of video time (0 = every frame).

  Raises:
    InputError: the file cannot be opened or decoded (frames already
      yielded stay valid).
  """
  import av  # pylint: disable=g-import-not-at-top
  try:
    container = av.open(path)
  except (av.FFmpegError, OSError, ValueError) as e:
    raise InputError(f"{path}: cannot open the video ({e})") from e
  with container:
    if not container.streams.video:
      raise InputError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    last = -1
    try:
      for i, frame in enumerate(container.decode(stream)):
        t = float(frame.time) if frame.time is not None else i / rate
        if fps > 0:
          k = int(np.floor(t * fps + 1e-6))
          if k <= last:
            continue
          last = k
        yield (Item(f"{name}/frame_{i:06d}", path, video=name),
               frame.to_ndarray(format="rgb24"))
    except (av.FFmpegError, OSError, ValueError) as e:
      raise InputError(f"{path}: decoding failed after frame {last} "
                       f"({e})") from e


def video_info(path: str) -> tuple[float, int]:
  """``(frames per second, frame count or 0)`` of a video's first stream."""
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(path) as c:
      s = c.streams.video[0]
      return float(s.average_rate or s.guessed_rate or 25), int(s.frames or 0)
  except Exception:  # pylint: disable=broad-except
    return 25.0, 0  # reported when its frames are read


def prefetch(items: Iterable[Item], read: Callable[[str], np.ndarray],
             depth: int = 8, workers: int = 2
             ) -> Iterator[tuple[Item, np.ndarray | InputError]]:
  """Decodes images in ``workers`` threads, at most ``depth`` ahead, in
  order; a failed read yields its ``InputError`` instead of an array."""
  def one(item):
    try:
      return read(item.path)
    except InputError as e:
      return e
  it = iter(items)
  with concurrent.futures.ThreadPoolExecutor(workers) as ex:
    queue = collections.deque()
    for item in it:
      queue.append((item, ex.submit(one, item)))
      if len(queue) >= depth:
        item0, fut = queue.popleft()
        yield item0, fut.result()
    while queue:
      item0, fut = queue.popleft()
      yield item0, fut.result()
