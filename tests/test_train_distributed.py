"""Training under torchrun: two gloo ranks on the CPU stay identical, take the same steps as
one process with the same batch, and their checkpoint resumes in one process and back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tinytrain import make_cache, tiny  # noqa: E402

from livepiano import LivepianoError  # noqa: E402
from livepiano.learn.train import train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# float32: one process and two sum the batch in another order, which bf16 autocast would
# round far beyond the comparison's tolerance (float32's rounding stays within it).
TINY_FLAGS = ["--precision", "fp32", "--hidden", "24", "--layers", "2", "--embedding", "16",
              "--dropout", "0",
              "--batch", "4", "--bptt", "32", "--eval-segments", "4", "--warmup", "0",
              "--lr", "0.01", "--threads", "1", "--seed", "7"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_cache(tmp_path_factory.mktemp("midi"), tmp_path_factory.mktemp("cache"))


def torchrun(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc_per_node", "2", *map(str, args)],
                       capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def one_process(cache, out: Path, steps: int) -> dict:
    return train(tiny(cache, out, max_steps=steps, dropout=0.0, lr=1e-2, precision="fp32"),
                 log=lambda *a: None)


def assert_close(a: dict, b: dict) -> None:
    # One process sums the batch in another order than two do: equal to rounding, no more.
    for name, tensor in a.items():
        assert torch.allclose(tensor, b[name], rtol=1e-4, atol=1e-5), name


def test_two_ranks_stay_identical_and_resume_in_one_process(cache, tmp_path):
    ddp = tmp_path / "ddp.pt"
    torchrun(REPO / "tests" / "tinytrain.py", cache, ddp, 3, tmp_path)
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    for name, tensor in rank0.items():
        assert torch.equal(tensor, rank1[name]), name
    ckpt = torch.load(ddp, weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    assert len(ckpt["resume"]["lanes"]) == 4 and ckpt["resume"]["h"].shape[1] == 4

    straight = one_process(cache, tmp_path / "straight.pt", 6)
    resumed = one_process(cache, ddp, 6)
    assert resumed["step"] == straight["step"] == 6
    assert resumed["tokens"] == straight["tokens"] > ckpt["tokens_seen"] > 0
    assert_close(straight["model"].state_dict(), resumed["model"].state_dict())
    again = torch.load(ddp, weights_only=False)
    assert again["world_size"] == 1


def test_one_process_checkpoint_resumes_on_two_ranks_with_python_m_livepiano(cache, tmp_path):
    run = tmp_path / "run.pt"
    one_process(cache, run, 3)
    r = torchrun("-m", "livepiano", "train", cache, "-o", run, "--max-steps", 6, *TINY_FLAGS)
    assert "resuming" in r.stdout and "written by 1 process" in r.stdout
    ckpt = torch.load(run, weights_only=False)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 6
    straight = one_process(cache, tmp_path / "straight.pt", 6)
    assert ckpt["tokens_seen"] == straight["tokens"]
    assert_close(straight["model"].state_dict(), ckpt["model"])


def test_a_batch_that_does_not_split_over_the_ranks_is_one_clear_line(cache, tmp_path,
                                                                        monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # checked before any process group is joined
    with pytest.raises(LivepianoError, match=r"^--batch 3 .* give a multiple of 2\.$"):
        train(tiny(cache, tmp_path / "x.pt", batch=3), log=lambda *a: None)
