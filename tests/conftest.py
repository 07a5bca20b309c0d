import os

import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. Triton reads this when a kernel
# module is imported, so it is set before any test imports cmamba.fusion._scan_triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
