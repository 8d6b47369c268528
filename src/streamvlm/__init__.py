"""streamvlm: a vision-language model watching an endless video stream, commenting second by second.

from streamvlm import StreamConfig, StreamingSession, load_model, open_source
session = StreamingSession(load_model("path/to/checkpoint"), StreamConfig(greedy=True))
for line in session.run(open_source("match.mp4")):
    print(line.start, line.text)
"""

__version__ = "0.1.0"

from .config import StreamConfig  # noqa: E402
from .engine import Commentary, StreamingSession  # noqa: E402
from .errors import StreamvlmError  # noqa: E402
from .models import load_model, write_tiny_checkpoint  # noqa: E402
from .sources import open_source  # noqa: E402

__all__ = [
    "Commentary",
    "StreamConfig",
    "StreamingSession",
    "StreamvlmError",
    "__version__",
    "load_model",
    "open_source",
    "write_tiny_checkpoint",
]
