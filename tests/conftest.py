import pytest
import torch

import scorepde as sp

# Tests run many tiny ops: one thread avoids oversubscription on small, busy machines.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


SDES = {"ve": sp.VESDE, "vp": sp.VPSDE, "subvp": sp.SubVPSDE}


@pytest.fixture(params=sorted(SDES))
def sde(request):
    return SDES[request.param]()


@pytest.fixture
def gmm2():
    """A 2-D mixture with well-separated means and unequal weights and stds."""
    return sp.GaussianMixture([[-2.0, -1.0], [3.0, 2.0], [0.5, 4.0]], [0.6, 1.1, 0.8], [0.2, 0.5, 0.3])


class MLP(torch.nn.Module):
    """A small smooth score network (x, t) -> s, used across the tests."""

    def __init__(self, dim, hidden=32, dtype=torch.float64, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 1, hidden),
            torch.nn.Tanh(),
            torch.nn.Linear(hidden, hidden),
            torch.nn.SiLU(),
            torch.nn.Linear(hidden, dim),
        ).to(dtype)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) / max(1, p.shape[-1]) ** 0.5)

    def forward(self, x, t):
        return self.net(torch.cat([x, torch.sin(3 * t)[:, None]], 1))


class ConvScore(torch.nn.Module):
    """A tiny conv net with GroupNorm for image-shaped x [B, C, H, W]."""

    def __init__(self, channels=1, width=8, dtype=torch.float64):
        super().__init__()
        torch.manual_seed(0)
        self.inp = torch.nn.Conv2d(channels + 1, width, 3, padding=1)
        self.norm = torch.nn.GroupNorm(2, width)
        self.out = torch.nn.Conv2d(width, channels, 3, padding=1)
        self.to(dtype)

    def forward(self, x, t):
        tt = t.reshape(-1, 1, 1, 1).expand(x.shape[0], 1, *x.shape[2:])
        h = torch.nn.functional.silu(self.norm(self.inp(torch.cat([x, tt], 1))))
        return self.out(h) * (1 + t.reshape(-1, 1, 1, 1) ** 2)
