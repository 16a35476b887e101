"""Flags every benchmark script shares: --out, --quick, --device, --threads, --seed."""
import argparse


def base_parser(doc: str, default_out: str, quick_help: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=default_out, help="output folder")
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads (default 1: on a shared machine OpenMP spin-waits make 2 threads far slower)")
    p.add_argument("--seed", type=int, default=0)
    return p


def setup_run(args) -> "torch.device":
    """Apply --threads and --device (refusing CUDA where there is none) and make --out."""
    import os
    import sys

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available here")
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    return torch.device(args.device)


class busy_neighbour:
    """A second single-threaded job for the duration of a ``with`` block: a torch matmul loop
    in its own process (yields its pid), ended by pid when the block exits."""

    LOOP = ("import torch; torch.set_num_threads(1); a = torch.randn(512, 512)\n"
            "while True: a = torch.tanh(a @ a)")

    def __enter__(self):
        import subprocess
        import sys
        import time

        self.proc = subprocess.Popen([sys.executable, "-c", self.LOOP], env={"OMP_NUM_THREADS": "1", "PATH": ""})
        time.sleep(2.0)  # let it import torch and start spinning
        if self.proc.poll() is not None:
            raise RuntimeError("the busy neighbour job exited at once")
        return self.proc.pid

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return False
