"""A tiny training setup the training tests share, and the worker that torchrun starts.

    torchrun --standalone --nproc_per_node 2 tests/tinytrain.py CACHE OUT.pt STEPS DUMP_DIR

trains the tiny model for STEPS steps (resuming OUT.pt when it is there) and has every
rank save the weights it ends with as DUMP_DIR/rankN.pt, so a test can compare the ranks.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"


def make_cache(src: Path, out: Path) -> Path:
    """A token cache of the MAESTRO excerpts in tests/data: the first for validation, the
    rest for training."""
    from livepiano.learn import dataset

    names = sorted(p.name for p in DATA.glob("*.mid"))
    for name in names:
        shutil.copy(DATA / name, src / name)
    rows = ["midi_filename,split"] + [f"{n},{'validation' if i == 0 else 'train'}"
                                      for i, n in enumerate(names)]
    (src / "splits.csv").write_text("\n".join(rows) + "\n")
    dataset.prepare(src, out, workers=1, show_progress=False)
    return out


def tiny(cache: Path, out: Path, **kw):
    from livepiano.learn.plan import TrainConfig

    base = dict(cache=str(cache), out=str(out), hidden=24, layers=2, embedding=16, dropout=0.1,
                batch=4, bptt=32, eval_segments=4, eval_every_minutes=999, warmup=0.0,
                checkpoint_every_minutes=999, threads=1, seed=7)
    base.update(kw)
    return TrainConfig(**base)


def main(cache: str, out: str, steps: str, dump: str) -> None:
    import torch

    from livepiano.learn.train import train

    result = train(tiny(Path(cache), Path(out), max_steps=int(steps), dropout=0.0, lr=1e-2,
                        precision="fp32"),
                   log=lambda *a: None)
    rank = int(os.environ.get("RANK", 0))
    torch.save(result["model"].state_dict(), Path(dump) / f"rank{rank}.pt")


if __name__ == "__main__":
    main(*sys.argv[1:])
