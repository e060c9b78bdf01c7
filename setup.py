"""The compiled parts: a C check of each record's pickle bytes before the
unpickler runs them (streampickle/_pickle_*.c), small records encoded, read
from a socket and loaded in one call (streampickle/_small_records.c), and the
page prefault call (streampickle/_pages.c). They need a C compiler and
Python's headers at install, as numpy, zstandard and xxhash do from source."""

import sys

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "streampickle._pickle_scan",
            [
                "streampickle/_pickle_opcodes.c",
                "streampickle/_pickle_scan.c",
                "streampickle/_pickle_scan_keys.c",
                "streampickle/_pickle_key_values.c",
                "streampickle/_pickle_probes.c",
                "streampickle/_pickle_scan_light.c",
                "streampickle/_pickle_scan_module.c",
                "streampickle/_small_records.c",
            ],
            # only PyInit is the module's: the opcode tables are then read
            # directly, not through the global offset table
            extra_compile_args=[] if sys.platform == "win32" else ["-fvisibility=hidden"],
            depends=[
                "streampickle/_pickle_scan.h",
                "streampickle/_pickle_scan_hash.h",
                "streampickle/_pickle_key_values.h",
                "streampickle/_pickle_probes.h",
                "streampickle/_pickle_opcodes.h",
            ],
        ),
        Extension("streampickle._pages", ["streampickle/_pages.c"]),
    ]
)
