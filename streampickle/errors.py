"""The errors a streampickle reader raises.

Every malformed stream raises a subclass of :class:`StreamError`, which is a
:class:`pickle.UnpicklingError`, so code that already catches pickle's error
keeps working. Callers that care why a stream is bad catch a subclass instead
of parsing messages. Messages name the byte offset (from the start of the
stream) and the frame kind where the problem was found.
"""

from __future__ import annotations

import pickle


class StreamError(pickle.UnpicklingError):
    """The input is not a well-formed streampickle stream."""


class TruncatedStreamError(StreamError):
    """The input ended inside a record, a frame or before the END frame."""


class CorruptStreamError(StreamError):
    """A magic number, header, length, checksum or the pickle itself is wrong."""


class ForbiddenGlobalError(StreamError):
    """``safe=True`` refused a global that is not allowed, or a call or state
    of an allowed one that would make more than the record holds or that
    numpy would trust (see ``streampickle/safe.py``)."""
