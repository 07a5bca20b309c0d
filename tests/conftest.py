import os
from pathlib import Path

import pytest
import torch

from cmamba.datasets.media import mux_clip

MEDIA = Path(__file__).parent / "fixtures" / "media"

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. Triton reads this when a kernel
# module is imported, so it is set before any test imports cmamba.fusion.ops.triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def talking_clip(tmp_path_factory) -> Path:
    """carphone (a real talking face) muxed with arctic_a0007 (real speech): h264 + AAC in mp4, both 4.0 s."""
    out = tmp_path_factory.mktemp("media") / "talking.mp4"
    return mux_clip(MEDIA / "carphone_pristine.mp4", MEDIA / "arctic_a0007.wav", out)
