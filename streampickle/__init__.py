"""streampickle: pickle protocol 5 as a stream of checked frames, with large
buffers out of band, written and read incrementally.

See README.md for the guarantees and docs/FORMAT.md for the byte layout.
"""

from .errors import (
    CorruptStreamError,
    ForbiddenGlobalError,
    StreamError,
    TruncatedStreamError,
)
from .format import Index
from .index import read_index, repair
from .pickler import Pickler, dump, dumps
from .unpickler import Unpickler, load, loads

__all__ = [
    "CorruptStreamError",
    "ForbiddenGlobalError",
    "Index",
    "Pickler",
    "StreamError",
    "TruncatedStreamError",
    "Unpickler",
    "dump",
    "dumps",
    "load",
    "loads",
    "read_index",
    "repair",
]
__version__ = "0.1.0"
