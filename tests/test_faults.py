"""Faults: a training run killed with SIGKILL at any point, including inside its checkpoint
write, resumes to the bit-identical result of an uninterrupted run (issue 31, item 4)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

#: A small DSM run through the one training loop, checkpointing every step. argv: the run's
#: folder, k: SIGKILL itself inside its k-th checkpoint write, with half of the bytes
#: written (0: never), and the number of steps.
CHILD = textwrap.dedent("""
    import io, os, signal, sys
    import torch
    torch.set_num_threads(1)
    import scorepde as sp
    import scorepde.checkpoints as checkpoints
    from scorepde.training import Checkpointing, fit

    folder, kill_in_write, STEPS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    writes = 0
    real_write = checkpoints.atomic_write

    def dying_write(path, write, **kw):
        def write_then_die(f):
            global writes
            writes += 1
            if writes != kill_in_write:
                return write(f)
            buffer = io.BytesIO()
            write(buffer)
            f.write(buffer.getvalue()[: buffer.tell() // 2])  # half the checkpoint is on disk
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return real_write(path, write_then_die, **kw)

    checkpoints.atomic_write = dying_write
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 64), torch.nn.SiLU(), torch.nn.Linear(64, 2))
    score = lambda x, t: net(torch.cat([x, t[:, None]], 1))
    sde = sp.VPSDE()
    objective = lambda x0, generator: (sp.dsm_loss(score, sde, x0, generator=generator), {})
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    data = torch.randn(4096, 2, generator=torch.Generator().manual_seed(1))
    batches = lambda start: (data[(64 * s) % 4032:(64 * s) % 4032 + 64] for s in range(start, 10 ** 9))
    print("started", flush=True)
    fit(objective, opt, batches, STEPS, generator=torch.Generator(), seed=3, model=net,
        checkpoint=Checkpointing(os.path.join(folder, "ckpt.pt"), every=1), progress=False)
    torch.save(net.state_dict(), os.path.join(folder, "final.pt"))
""")


def _run(folder: Path, steps: int, kill_in_write: int = 0, kill_after: float | None = None) -> bool:
    """Run (or resume) the child; SIGKILL it ``kill_after`` s into its loop. True if it finished."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder), str(kill_in_write), str(steps)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    if kill_after is not None:
        proc.stdout.readline()  # "started": imports done, the loop begins
        try:
            proc.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(err.decode()[-2000:])
    return proc.returncode == 0


def _final(folder: Path) -> dict:
    return torch.load(folder / "final.pt", weights_only=True)


def _killed_and_resumed(tmp_path: Path, steps: int, kills: int, seed: int) -> dict:
    """Kill the run ``kills`` times (every third one inside a checkpoint write, the others at a
    random moment of its loop), resuming after each, then let it finish."""
    rng, folder = random.Random(seed), tmp_path / "killed"
    folder.mkdir()
    for i in range(kills):
        if i % 3 == 0:
            assert not _run(folder, steps, kill_in_write=rng.randint(1, 4)), (
                "the kill inside the write missed"
            )
        else:
            _run(folder, steps, kill_after=rng.uniform(0.05, 0.4))
    while not _run(folder, steps):
        pass
    return _final(folder)


def _uninterrupted(tmp_path: Path, steps: int) -> dict:
    folder = tmp_path / "clean"
    folder.mkdir()
    assert _run(folder, steps)
    return _final(folder)


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sigkill_inside_the_checkpoint_write_resumes_bit_identically(tmp_path):
    _assert_identical(_killed_and_resumed(tmp_path, 100, kills=2, seed=0), _uninterrupted(tmp_path, 100))


@pytest.mark.slow
def test_twenty_sigkills_at_random_points_resume_bit_identically(tmp_path):
    """20 SIGKILLs (7 inside a checkpoint write, 13 at random moments) and 20 resumes."""
    _assert_identical(_killed_and_resumed(tmp_path, 1000, kills=20, seed=1), _uninterrupted(tmp_path, 1000))
