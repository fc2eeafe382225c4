"""Shared test setup: offline, headless, deterministic, small models."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("VPT_FAST", "1")
# Tiny models gain nothing from a second intra-op thread, and OpenMP threads that spin-wait on a
# busy 2-core machine slow everything 10x or more. Tests run one thread per process and use the
# cores through pytest-xdist workers instead; kernels and servers started by tests inherit this.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import timm  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def small_vit(depth: int = 4, dim: int = 64, heads: int = 2, img: int = 32, patch: int = 4,
              num_classes: int = 5, **kw):
    """A random-init timm ViT small enough for CPU tests."""
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=img, patch_size=patch,
                             embed_dim=dim, depth=depth, num_heads=heads, num_classes=num_classes, **kw).eval()


def assert_words(error, words) -> None:
    """Every key word must appear in the error (or message text): field, value, what is allowed."""
    missing = [w for w in words if w not in str(error)]
    assert not missing, (missing, str(error))


def toy_data(n: int = 48, classes: int = 3, seed: int = 0):
    """Images whose class is their colour (a global shift): learnable from a random ViT's [CLS]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 32, 32, generator=g) * 0.3
    x[torch.arange(n), y % 3] += 2.0
    return torch.utils.data.TensorDataset(x, y)


@pytest.fixture
def vit():
    return small_vit()


@pytest.fixture
def images():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=g)
