from datetime import timedelta

import pytest
import torch

import gais_pipe.distributed as distributed
from gais_pipe.distributed import (
    autocast_dtype,
    cores_per_process,
    effective_precision,
    owner,
    pick_device,
    ranks_per_node,
    resolve_device,
    worker_slot,
)


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


TORCHRUN = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}  # 2 nodes of 4
SRUN = {
    "SLURM_PROCID": "6",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "2",
    "SLURM_NTASKS_PER_NODE": "4",
    "SLURM_NODEID": "1",
}


@pytest.mark.parametrize(
    "name,env,gpus,expected",
    [
        ("auto", {}, 0, "cpu"),
        ("auto", {}, 2, "cuda:0"),
        ("cpu", TORCHRUN, 4, "cpu"),
        ("auto", TORCHRUN, 4, "cuda:1"),  # torchrun: the local rank, not the global one
        ("cuda", TORCHRUN, 4, "cuda:1"),  # plain "cuda" binds by local rank too, never everyone's GPU 0
        ("cuda", SRUN, 4, "cuda:2"),  # srun sets SLURM_LOCALID, not LOCAL_RANK
        ("cuda", {**SRUN, "CUDA_VISIBLE_DEVICES": "2"}, 1, "cuda:0"),  # srun binding one GPU per task
        ("cuda", {**SRUN, "LOCAL_RANK": "3"}, 4, "cuda:3"),  # torchrun inside an allocation: LOCAL_RANK wins
        ("cuda", {"RANK": "3", "WORLD_SIZE": "4"}, 2, "cuda:1"),  # no local rank: the global rank, wrapped
        ("cuda", {"SLURM_PROCID": "2", "SLURM_NTASKS": "3"}, 8, "cuda:2"),
        ("cuda:1", TORCHRUN, 2, "cuda:1"),  # an explicit index is taken as written
        ("cuda", {"LOCAL_RANK": "5"}, 4, "cuda:1"),  # more processes than GPUs: they share, round robin
    ],
)
def test_each_process_gets_its_own_gpu(name, env, gpus, expected):
    assert pick_device(name, env, gpus) == torch.device(expected)


def test_devices_that_do_not_exist_are_refused_with_what_is_visible():
    with pytest.raises(ValueError, match="no CUDA"):
        pick_device("cuda", {}, 0)
    with pytest.raises(ValueError, match="no CUDA"):
        pick_device("cuda:0", {}, 0)
    with pytest.raises(ValueError, match=r"0\.\.1 of 2 visible \(CUDA_VISIBLE_DEVICES=4,5\)"):
        pick_device("cuda:2", {"CUDA_VISIBLE_DEVICES": "4,5"}, 2)


@pytest.mark.parametrize(
    "env,expected",
    [
        ({}, 1),
        (TORCHRUN, 4),
        (SRUN, 4),
        ({"SLURM_PROCID": "0", "SLURM_TASKS_PER_NODE": "3(x2),1", "SLURM_NODEID": "1"}, 3),
        ({"SLURM_PROCID": "6", "SLURM_TASKS_PER_NODE": "3(x2),1", "SLURM_NODEID": "2"}, 1),
    ],
)
def test_ranks_per_node_from_the_launcher(env, expected):
    assert ranks_per_node(env) == expected


def test_each_process_takes_its_share_of_the_cores():
    assert cores_per_process({}, 16) == 16
    assert cores_per_process(TORCHRUN, 64) == 16  # every rank sees the whole node
    assert cores_per_process({**SRUN, "SLURM_CPUS_ON_NODE": "64"}, 64) == 16  # srun without CPU binding
    assert cores_per_process({**SRUN, "SLURM_CPUS_ON_NODE": "64"}, 16) == 16  # srun --cpu-bind: already divided
    assert cores_per_process({"LOCAL_WORLD_SIZE": "8"}, 4) == 1


def test_effective_precision_names_what_the_encoders_compute_in():
    assert effective_precision(torch.device("cpu"), "fp16") == "fp32"
    assert effective_precision(torch.device("cuda", 0), "fp16") == "fp16"
    assert effective_precision(torch.device("cuda", 0), "bf16") == "bf16"
    assert effective_precision(torch.device("cuda", 0), "fp32") == "tf32"


class _FakeGroup:
    """torch.distributed and the CUDA runtime as a launcher of 2 nodes x 4 GPUs shows them to rank 5."""

    def __init__(self, monkeypatch, gpus=4):
        self.calls, self.bound, self.up = [], [], False
        monkeypatch.setattr(distributed, "visible_gpus", lambda: gpus)
        monkeypatch.setattr(torch.cuda, "set_device", self.bound.append)
        monkeypatch.setattr(distributed.dist, "is_initialized", lambda: self.up)
        monkeypatch.setattr(distributed.dist, "init_process_group", self.init)
        monkeypatch.setattr(distributed.dist, "destroy_process_group", self.destroy)

    def init(self, backend, **kwargs):
        self.calls.append((backend, kwargs))
        self.up = True

    def destroy(self):
        self.calls.append(("destroy", {}))
        self.up = False


def test_nccl_gets_this_process_gpu_and_is_torn_down(monkeypatch):
    group = _FakeGroup(monkeypatch)
    with distributed.distributed("cuda", TORCHRUN, timeout_minutes=30) as device:
        assert device == torch.device("cuda", 1) and group.bound == [device]
        expected = {"timeout": timedelta(minutes=30), "rank": 5, "world_size": 8, "device_id": device}
        assert group.calls == [("nccl", expected)]
    assert group.calls[-1][0] == "destroy" and not group.up


def test_gloo_on_cpu_and_no_group_for_one_process(monkeypatch):
    group = _FakeGroup(monkeypatch, gpus=0)
    with pytest.raises(RuntimeError, match="boom"), distributed.distributed("auto", TORCHRUN):
        raise RuntimeError("boom")  # torn down on errors too
    # no timeout given: None, torch's default for the backend
    assert group.calls == [("gloo", {"timeout": None, "rank": 5, "world_size": 8}), ("destroy", {})]
    with distributed.distributed("auto", {}) as device:
        assert device == torch.device("cpu")
    assert len(group.calls) == 2


def test_a_group_made_by_the_caller_is_left_alone(monkeypatch):
    group = _FakeGroup(monkeypatch, gpus=0)
    group.up = True
    with distributed.distributed("auto", TORCHRUN):
        pass
    assert group.calls == [] and group.up


def test_more_processes_per_node_than_gpus_is_refused_before_nccl(monkeypatch):
    group = _FakeGroup(monkeypatch, gpus=2)
    with pytest.raises(ValueError, match="4 processes per node share 2 visible GPU"):
        distributed.init_distributed("cuda", TORCHRUN)
    assert group.calls == []
