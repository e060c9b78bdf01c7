"""The one compiled part: a C check of each record's pickle bytes before the
unpickler runs them (streampickle/_pickle_scan*.c). It needs a C compiler and
Python's headers at install, as numpy, zstandard and xxhash do from source."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streampickle._pickle_scan",
            ["streampickle/_pickle_scan.c", "streampickle/_pickle_scan_module.c"],
            depends=["streampickle/_pickle_scan.h"],
        )
    ]
)
