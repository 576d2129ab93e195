"""A 2-process data-parallel training step on the CPU (gloo), through the code ``tokenizer.train`` runs.

Each process builds accelerate's Accelerator from the environment variables a launcher sets,
wraps the Stage-1A objective with ``prepare_model`` (DDP) and takes one ``optimizer_step`` on
its own half of the batch. Both processes must end with the same parameters, equal to one
single-process step whose gradient is the mean of the two halves' gradients (each half with
the RNG stream its process draws t, noise and code dropout from). That is the concatenated
batch's gradient for every per-sample-mean term; the LFQ entropy term is a statistic of each
process's batch, so the halves are kept as DDP keeps them.
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from tokenizer import FlowMo, FlowMoConfig
from tokenizer.losses import LossWeights
from runkit.training import optimizer_step
from tokenizer.train import TrainingObjective, unused_parameter_names

WORLD = 2
SHARD = 2  # images per process
CONFIG = dict(image_size=16, patch_size=4, code_length=4, context_dim=12, lfq_bits=6, enc_width=0.5, dec_width=0.5,
              enc_depth=1, dec_depth=1, num_heads=3)
LOSS = OmegaConf.create({"code_dropout": 0.5, "logit_normal_prob": 0.9, "logit_normal_mean": 0.0})
LR = 0.5  # plain SGD: unlike Adam's first step, the update scales with the averaged gradient


def build(seed: int) -> tuple[FlowMo, TrainingObjective, list[torch.Tensor]]:
    torch.manual_seed(seed)
    model = FlowMo(FlowMoConfig(**CONFIG))
    for name in unused_parameter_names(model):  # as train() does, so DDP need not wait for them
        model.get_parameter(name).requires_grad_(False)
    objective = TrainingObjective(model, "1a", LossWeights(), LOSS, perceptual=None, sample_perceptual=None)
    return model, objective, [p for p in model.parameters() if p.requires_grad]


def batch() -> torch.Tensor:
    return torch.rand(WORLD * SHARD, 3, CONFIG["image_size"], CONFIG["image_size"],
                      generator=torch.Generator().manual_seed(7)) * 2 - 1


def worker(rank: int, port: int, out_dir: str) -> None:
    from accelerate import Accelerator

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == WORLD and accelerator.process_index == rank
    # Rank 1 starts from other weights: DDP must broadcast rank 0's before the step.
    model, objective, params = build(seed=rank)
    optimizer = accelerator.prepare_optimizer(torch.optim.SGD(params, lr=LR))
    wrapped = accelerator.prepare_model(objective)
    torch.manual_seed(100 + rank)
    shard = batch()[rank * SHARD:(rank + 1) * SHARD]
    loss, _ = optimizer_step(accelerator, wrapped, optimizer, [shard], wrapped, params, grad_clip=None)
    torch.save({"state": model.state_dict(), "loss": loss}, os.path.join(out_dir, f"rank{rank}.pt"))
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_step(shards: list[int]) -> tuple[dict[str, torch.Tensor], float]:
    """One SGD step from rank 0's weights on the mean loss of ``shards``, each with its process's RNG stream."""
    model, objective, params = build(seed=0)
    optimizer = torch.optim.SGD(params, lr=LR)
    images = batch()
    losses = []
    for rank in shards:
        torch.manual_seed(100 + rank)
        losses.append(objective(images[rank * SHARD:(rank + 1) * SHARD])[0])
    loss = torch.stack(losses).mean()
    loss.backward()
    optimizer.step()
    return model.state_dict(), loss.item()


@pytest.mark.timeout(180)
def test_two_process_step_matches_one_process_step(tmp_path):
    mp.spawn(worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD)]
    expected, expected_loss = single_process_step(shards=[0, 1])

    initial = build(seed=0)[0].state_dict()
    only_first_half, _ = single_process_step(shards=[0])
    moved = [k for k in expected if not torch.allclose(expected[k], initial[k], atol=1e-4)]
    assert len(moved) > len(expected) // 2  # the step changed most tensors ...
    assert any(not torch.allclose(expected[k], only_first_half[k], atol=1e-4) for k in moved)  # ... by both halves

    for rank, result in enumerate(results):
        assert result["loss"] == pytest.approx(expected_loss, rel=1e-5), f"rank {rank}"
        assert result["state"].keys() == expected.keys()
        for name, tensor in expected.items():
            torch.testing.assert_close(result["state"][name], tensor, atol=1e-6, rtol=1e-5,
                                       msg=lambda m, n=name, r=rank: f"rank {r}, {n}: {m}")
    for name in expected:
        assert torch.equal(results[0]["state"][name], results[1]["state"][name]), name
