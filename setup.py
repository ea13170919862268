"""Build the cpu backend's optional C fast paths; everything else is in pyproject.toml.

The extension is optional: where no C compiler is at hand the install still
succeeds and the cpu backend uses its Pillow/numpy paths (same results).
"""

import sys

from setuptools import Extension, setup

args = [] if sys.platform == "win32" else ["-O3", "-ffp-contract=off", "-fno-fast-math"]

setup(
    ext_modules=[
        Extension(
            "imgtool.backends._cpufast",
            ["imgtool/backends/_cpufast.c"],
            extra_compile_args=args,
            optional=True,
        )
    ]
)
