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
