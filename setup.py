"""Everything about the package is in pyproject.toml; this file adds one step to the build.

``xrayest-startup.pth`` goes to the root of site-packages beside the package, where Python's ``site``
module runs its line at every start-up: ``_xrayest_startup.set_onednn_opts()`` turns TensorFlow's
oneDNN kernels on for AVX2-only CPUs before any script imports TensorFlow (the module says why).
setuptools has no declarative way to place a file at the root of site-packages.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

STARTUP_HOOK = "xrayest-startup.pth"


class BuildWithStartupHook(build_py):
    """build_py, and the start-up hook copied to the build's root (the wheel's root)."""

    def run(self):
        super().run()
        self.copy_file(STARTUP_HOOK, os.path.join(self.build_lib, STARTUP_HOOK), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, STARTUP_HOOK)]


setup(cmdclass={"build_py": BuildWithStartupHook})
