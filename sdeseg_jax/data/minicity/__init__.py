"""MiniCity: procedural street scenes in the real datasets' layouts.

No real dataset can be downloaded for tests and demos, so MiniCity renders a
procedural 3-D street world with a vectorised numpy ray caster and writes it
in the folder layouts and file encodings of Cityscapes, GTA5 and
SYNTHIA-RAND-CITYSCAPES (``python -m sdeseg_jax.data.minicity --out DIR
--layout cityscapes``; files and sidecar: ``dataset.py``, docs/minicity.md).

Modules:

* ``dataset``: ``generate`` (files, sidecar, statistics, CLI) and ``render``
  (one view -> image, label ids, depth).
* ``world``: streets, objects and camera trajectories drawn from a seed.
* ``renderer``: the ray caster, solid noise and lighting.
* ``shaders``: one surface shader per material (``SHADERS``).

The package exports the dataset API below, so callers write
``minicity.generate(...)``.
"""

from sdeseg_jax.data.minicity.dataset import ANNOTATED_FRAME
from sdeseg_jax.data.minicity.dataset import BASELINE
from sdeseg_jax.data.minicity.dataset import DEPTH_SCALE
from sdeseg_jax.data.minicity.dataset import Frame
from sdeseg_jax.data.minicity.dataset import LAYOUTS
from sdeseg_jax.data.minicity.dataset import SEQUENCE_LENGTH
from sdeseg_jax.data.minicity.dataset import SIDECAR
from sdeseg_jax.data.minicity.dataset import VERSION
from sdeseg_jax.data.minicity.dataset import colorize_depth
from sdeseg_jax.data.minicity.dataset import decode_depth
from sdeseg_jax.data.minicity.dataset import decode_disparity
from sdeseg_jax.data.minicity.dataset import encode_depth
from sdeseg_jax.data.minicity.dataset import encode_disparity
from sdeseg_jax.data.minicity.dataset import format_stats
from sdeseg_jax.data.minicity.dataset import generate
from sdeseg_jax.data.minicity.dataset import generate_from_config
from sdeseg_jax.data.minicity.dataset import intrinsics
from sdeseg_jax.data.minicity.dataset import load_sidecar
from sdeseg_jax.data.minicity.dataset import main
from sdeseg_jax.data.minicity.dataset import render
from sdeseg_jax.data.minicity.dataset import rendered_frames
from sdeseg_jax.data.minicity.dataset import sequence_rng
from sdeseg_jax.data.minicity.dataset import write_contact_sheet
