"""The one compiled part: a C walk of pickle opcodes that speeds up reading
small records. ``optional``: where no C compiler is, the install goes on
without it and records are read the general way (streampickle/_pickle_scan.c)."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streampickle._pickle_scan", ["streampickle/_pickle_scan.c"], optional=True
        )
    ]
)
