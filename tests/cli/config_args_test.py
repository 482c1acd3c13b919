"""Typed config-file arguments through the real command line.

``--config=configs/sde_minicity.py:runlocal=ture`` used to be read as
``runlocal=False`` and would have rendered the full world and trained 3000
steps; ``:steps=ten`` failed deep in a traceback. Both now stop at once with
a non-zero exit and a message naming the argument.
"""

from absl.testing import absltest
from absl.testing import parameterized

from tests.cli import _cli


class ConfigArgsTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("bool_typo", "sde_minicity.py:runlocal=ture",
       r"runlocal='ture': expected true/false/1/0/yes/no"),
      ("int_word", "sde_minicity.py:steps=ten",
       r"steps='ten': expected an integer"),
      ("unknown_name", "ssl_minicity.py:runlocal,stepz=3",
       r"unknown config argument 'stepz'"))
  def test_bad_argument_stops_with_its_name(self, arg, message):
    workdir = self.create_tempdir().full_path
    r = _cli.run_main(f"--config=configs/{arg}", f"--workdir={workdir}",
                      timeout=300)
    self.assertNotEqual(r.returncode, 0, r.stderr[-2000:])
    # The message names the argument, its value and the accepted form (not
    # just the echoed flag).
    self.assertRegex(r.stderr, message)
    # Nothing was started: no data rendered, no checkpoint written.
    self.assertFalse(any(True for _ in _listdir(workdir)))


def _listdir(path):
  import os  # pylint: disable=g-import-not-at-top
  return os.listdir(path) if os.path.isdir(path) else []


if __name__ == "__main__":
  absltest.main()
