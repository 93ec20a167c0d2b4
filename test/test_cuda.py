"""The CUDA paths on a CUDA GPU: the static decoder's tokens are generate's there too, the
engine captures its decoder graphs and plans what the CPU plans, planning does not grow GPU
memory, and a training run on CUDA starts where the CPU run starts (the same loss within
dropout's noise), learns and exports a model the CPU loads. Every test here is skipped,
visibly, without a CUDA GPU (CI has none; they run on a lent device machine:
docs/BENCHMARKS.md names it and the date)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.model.modeling import load_model
from v2x_vlm_ros.runtime.fast_decode import StaticDecoder
from v2x_vlm_ros.runtime.planner import ModelPlanner
from v2x_vlm_ros.training.config import TrainConfig
from v2x_vlm_ros.training.trainer import train

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
SHIPPED = ROOT / "models" / "synthetic-student"
FRAMES = (0, 9, 70, 133, 260, 299, 350, 420)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (run on the device machine)")


@pytest.fixture(scope="module")
def samples():
    ds = DairV2XDataset(SAMPLE, split="train")
    return [ds[i] for i in FRAMES]


def static_decoder(planner):
    tok, codec = planner.loaded.tokenizer, planner.engine.codec
    return StaticDecoder(planner.loaded.model, codec.allowed_token_ids(0), codec.num_tokens,
                         tok.bos_token_id, tok.eos_token_id)


def test_static_decoder_gives_generates_tokens_on_cuda(tiny_model_dir, samples):
    planner = ModelPlanner(tiny_model_dir, device="cuda")
    inputs = planner.model_inputs(samples)
    assert inputs["pixel_values"].device.type == "cuda"
    reference = planner.generate(inputs)[:, 2:-1]  # drop start, <s> and </s>
    ours = static_decoder(planner).run(**inputs)
    assert ours.shape == reference.shape == (len(FRAMES), 20)
    assert torch.equal(ours, reference)


def test_engine_on_cuda_captures_decoder_graphs_and_plans_what_the_cpu_plans(samples):
    cpu = ModelPlanner(SHIPPED, device="cpu")
    gpu = ModelPlanner(SHIPPED, device="cuda")
    on_cpu = cpu.plan_batch(samples)
    on_gpu = gpu.plan_batch(samples)
    again = gpu.plan_batch(samples)  # a second pass replays the captured graph
    graphs = gpu.engine.graphs
    assert graphs and all(g.graph is not None for g in graphs.values())
    assert gpu.decode_failures == 0 and cpu.decode_failures == 0
    gap = np.array([np.abs(a - b).max() for a, b in zip(on_cpu, on_gpu)])
    print(f"largest waypoint gap CUDA vs CPU per frame (m): {np.round(gap, 4).tolist()}")
    # fp32 on both; a token may flip where two bins are near-tied (one bin: 0.225 m in x)
    assert (gap < 1e-3).sum() >= len(FRAMES) - 1 and gap.max() < 1.0
    assert all(np.array_equal(a, b) for a, b in zip(on_gpu, again))


def test_planning_does_not_grow_gpu_memory(samples):
    planner = ModelPlanner(SHIPPED, device="cuda", batch_size=4)
    planner.plan_batch(samples)  # warm-up: graphs captured, buffers allocated
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(10):
        planner.plan_batch(samples)
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before


def test_training_on_cuda_starts_as_on_cpu_and_exports_a_model_the_cpu_loads(tmp_path, tiny_model_dir):
    def run(device):
        cfg = TrainConfig(data_root=str(SAMPLE), student="tiny", teacher=None,
                          tokenizer_from=str(tiny_model_dir), freeze_vision=False, epochs=2,
                          epoch_fraction=0.25, batch_size=8, lr=2e-3, val_split="train",
                          eval_max_samples=16, max_steps=30, log_every=1,
                          output_dir=str(tmp_path / device), seed=3, device=device)
        summary = train(cfg, progress=False)
        rows = (tmp_path / device / "train_log.csv").read_text().splitlines()
        header = rows[0].split(",")
        return summary, [dict(zip(header, r.split(","))) for r in rows[1:]]

    # two epochs: the validation after the first plans on the device, then training goes on
    cpu_summary, cpu_rows = run("cpu")
    gpu_summary, gpu_rows = run("cuda")
    assert gpu_summary["global_step"] == cpu_summary["global_step"] == 30
    first_cpu, first_gpu = float(cpu_rows[0]["traj"]), float(gpu_rows[0]["traj"])
    print(f"first-step trajectory loss cpu {first_cpu:.6f} cuda {first_gpu:.6f}; "
          f"last cpu {float(cpu_rows[-1]['traj']):.4f} cuda {float(gpu_rows[-1]['traj']):.4f}")
    # same data and initial weights; dropout draws from another generator on CUDA
    assert abs(first_cpu - first_gpu) < 0.05 * first_cpu
    assert float(gpu_rows[-1]["traj"]) < 0.8 * first_gpu  # it learns there too
    exported = load_model(tmp_path / "cuda" / "checkpoint" / "student", "cpu")
    assert all(p.device.type == "cpu" for p in exported.model.parameters())
