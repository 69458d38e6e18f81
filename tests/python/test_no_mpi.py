"""dring.attention in a process that no MPI launcher started (plain `python3`, as under torchrun):
CPU tensors without a communicator, or with only a torch.distributed group, end in a DringError
that says to launch with mpirun or srun; shard_range works from rank and world_size alone.

Usage: python3 test_no_mpi.py [--installed]  (not under mpirun; launcher variables are cleared)
"""
import os
import sys
import tempfile

for name in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS", "MV2_COMM_WORLD_SIZE"):
    os.environ.pop(name, None)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

import dring  # noqa: E402

failures = checks = 0


def expect(ok, message):
    global failures, checks
    checks += 1
    if not ok:
        failures += 1
        print(message, flush=True)


def expect_launch_error(what, call):
    try:
        call()
        expect(False, f"{what}: no error")
    except dring.DringError as e:
        expect(e.status == 1 and "mpirun" in str(e) and "srun" in str(e), f"{what}: unhelpful error: {e}")
        print(f"{what}: DringError: {e}")


x = torch.randn(1, 8, 2, 4, requires_grad=True)
expect(not dring.launched_by_mpi(), "launched_by_mpi() with no launcher")
expect_launch_error("no communicator", lambda: dring.attention(x, x, x, seq=8))
expect_launch_error("shard_range without a communicator", lambda: dring.shard_range(8))
expect(dring.shard_range(10, rank=1, world_size=3) == (4, 3), "shard_range(10, rank 1 of 3) != (4, 3)")
expect(dring.shard_range(10, rank=2, world_size=3) == (7, 3), "shard_range(10, rank 2 of 3) != (7, 3)")
try:
    dring.shard_range(2, rank=0, world_size=3)
    expect(False, "shard_range(2 tokens over 3 ranks) accepted")
except dring.DringError as e:
    expect(e.status == 1, f"shard_range(2 tokens over 3 ranks): {e}")

# torch.distributed alone (gloo, one process, as torchrun would set up) serves CUDA tensors only.
if dist.is_available():
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        expect_launch_error("CPU tensors with a torch.distributed group", lambda: dring.attention(x, x, x, seq=8))
        expect(dring.shard_range(8) == (0, 8), "shard_range over the torch.distributed group")
        dist.destroy_process_group()

if "--installed" in sys.argv:
    expect(dring.library_path().startswith(os.path.dirname(os.path.abspath(dring.__file__))),
           f"not the package's own libdring: {dring.library_path()}")
print(f"test_no_mpi: {checks - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
