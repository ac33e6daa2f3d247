import pytest
import torch

from gais_pipe.distributed import autocast_dtype, owner, resolve_device, worker_slot


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, (0, 1)),
        ({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, (3, 4)),  # torchrun
        (
            {"SLURM_ARRAY_TASK_ID": "12", "SLURM_ARRAY_TASK_COUNT": "5", "SLURM_ARRAY_TASK_MIN": "10"},
            (2, 5),
        ),  # sbatch --array=10-14
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}, (1, 2)),  # srun -n 2
    ],
)
def test_worker_slot_from_the_launcher(env, expected):
    assert worker_slot(env=env) == expected


def test_flags_win_and_bad_slots_are_refused():
    assert worker_slot(4, 2, env={"RANK": "0", "WORLD_SIZE": "8"}) == (2, 4)
    with pytest.raises(ValueError):
        worker_slot(2, 2, env={})


def test_owner_is_stable_and_spreads_work():
    ids = [f"video{i}.mp4" for i in range(400)]
    counts = [sum(owner(v, 4) == k for v in ids) for k in range(4)]
    assert min(counts) > 60
    assert [owner(v, 4) for v in ids] == [owner(v, 4) for v in ids]


def test_cpu_runs_fp32_and_missing_cuda_is_an_error():
    assert autocast_dtype(torch.device("cpu"), "fp16") is None
    assert autocast_dtype(torch.device("cuda"), "bf16") is torch.bfloat16
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="no CUDA"):
            resolve_device("cuda")
