"""Data parallelism with `jax.jit` and `NamedSharding` over every device of every host (no pmap).

The mesh has two axes, ("data", "fsdp"). Batches are split over both (every device gets different
examples). Parameters, EMA parameters and optimiser state are replicated over "data" and, when
the "fsdp" axis is longer than 1 (`train.fsdp`), split along it (`param_sharding`: ZeRO-3 /
FSDP, each large leaf cut along one axis; the train step all-gathers the weights the network
uses and XLA reduce-scatters their gradients), so each device stores 1 / fsdp of them. The
per-example noise of the loss is drawn for the *global* batch with JAX's partitionable threefry
RNG, so every device draws its own slice (no two devices share noise) and a sharded step computes
the same numbers as a single-device step on the same global batch.

Multi-host: `initialize_distributed()` starts `jax.distributed` from the standard environment
(JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, or SLURM, Open MPI and Cloud TPU
auto-detection); each process reads its own slice of the global batch (the data sources take
process_index / process_count) and `global_batch` assembles the global array from those slices.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXES = ("data", "fsdp")
logger = logging.getLogger("jaxdiff")


def initialize_distributed(env: Mapping[str, str] = os.environ) -> bool:
    """Call `jax.distributed.initialize` when the environment describes a multi-process job;
    return whether it did. Must run before anything touches a JAX backend."""
    if env.get("JAX_COORDINATOR_ADDRESS"):
        number = lambda name: int(env[name]) if env.get(name) else None  # noqa: E731
        jax.distributed.initialize(coordinator_address=env["JAX_COORDINATOR_ADDRESS"],
                                   num_processes=number("JAX_NUM_PROCESSES"),
                                   process_id=number("JAX_PROCESS_ID"))
        return True
    multi_process = (int(env.get("SLURM_NTASKS", "1")) > 1
                     or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
                     or "," in env.get("TPU_WORKER_HOSTNAMES", ""))
    if multi_process:
        jax.distributed.initialize()  # cluster auto-detection
        return True
    return False


def make_mesh(num_devices: int | None = None, fsdp: int = 1) -> Mesh:
    """A ("data", "fsdp") mesh over the first `num_devices` devices (default: all, all hosts)."""
    devices = jax.devices()
    count = len(devices) if num_devices is None else num_devices
    if not 1 <= count <= len(devices):
        raise ValueError(f"num_devices={num_devices} is invalid: {len(devices)} devices exist")
    if fsdp < 1 or count % fsdp:
        raise ValueError(f"fsdp={fsdp} is invalid: it must divide the device count {count}")
    grid = np.asarray(devices[:count]).reshape(count // fsdp, fsdp)
    return Mesh(grid, BATCH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, P(BATCH_AXES))


FSDP_MIN_SIZE = 2**12  # leaves smaller than this stay replicated (norm gains, biases, scalars)


def leaf_sharding(shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """One leaf's sharding: split along "fsdp" on its largest axis that the axis length divides
    (ties: the last such axis, the output features of a kernel), replicated when "fsdp" has
    length 1, the leaf is smaller than FSDP_MIN_SIZE elements or no axis divides."""
    fsdp = mesh.shape["fsdp"]
    if fsdp == 1 or int(np.prod(shape, dtype=np.int64)) < FSDP_MIN_SIZE:
        return replicated(mesh)
    candidates = [axis for axis, size in enumerate(shape) if size % fsdp == 0]
    if not candidates:
        return replicated(mesh)
    axis = max(candidates, key=lambda a: (shape[a], a))
    spec = [None] * len(shape)
    spec[axis] = "fsdp"
    return NamedSharding(mesh, P(*spec))


def param_sharding(params: Any, mesh: Mesh) -> Any:
    """Shardings of a parameter, optimiser-state or whole train-state tree (by leaf shape, so
    Adam's moments shard like their parameters): `leaf_sharding` of every leaf."""
    return jax.tree.map(lambda leaf: leaf_sharding(tuple(np.shape(leaf)), mesh), params)


def put_state(tree: Any, mesh: Mesh) -> Any:
    """Place a host-identical train state on the mesh in `param_sharding`'s layout (replicated
    unless the mesh's "fsdp" axis is longer than 1)."""
    return jax.device_put(tree, param_sharding(tree, mesh))


def state_bytes_per_device(tree: Any) -> int:
    """Bytes of `tree` (sharded arrays) held by the first device: what FSDP divides."""
    device = jax.devices()[0]
    total = 0
    for leaf in jax.tree.leaves(tree):
        for shard in getattr(leaf, "addressable_shards", ()):
            if shard.device == device:
                total += shard.data.nbytes
    return total


def num_batch_shards(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[axis] for axis in BATCH_AXES]))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    shards = num_batch_shards(mesh)
    if batch_size % shards:
        raise ValueError(f"train.batch_size={batch_size} is invalid: it must be divisible by the "
                         f"{shards} devices the batch is split over")


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh,
                 stacked: bool = False) -> dict[str, jax.Array]:
    """This process's slice of the batch (numpy) -> global arrays sharded over the mesh on the
    batch axis (axis 1 when `stacked` [k, B, ...] for several steps per call)."""
    sharding = NamedSharding(mesh, P(None, BATCH_AXES) if stacked else P(BATCH_AXES))
    return {name: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for name, value in local.items()}


def put_replicated(tree: Any, mesh: Mesh) -> Any:
    """Place a host-identical tree (a fresh or restored train state) replicated on the mesh."""
    return jax.device_put(tree, replicated(mesh))


def is_main_process() -> bool:
    """Only process 0 writes logs, pictures and JSON files (Orbax coordinates checkpoints)."""
    return jax.process_index() == 0


def batch_noise(key: jax.Array, shape: tuple[int, ...], mesh: Mesh) -> jax.Array:
    """Standard normal noise of `shape`, generated directly in the batch-sharded layout (each
    device draws its own slice; the values equal the unsharded draw)."""
    return jax.jit(lambda k: jax.random.normal(k, shape), out_shardings=batch_sharding(mesh))(key)


def padded_count(count: int, mesh: Mesh) -> int:
    """`count` rounded up to a multiple of the batch shards, so a sample batch splits evenly."""
    shards = num_batch_shards(mesh)
    return -(-count // shards) * shards


def to_host(tree: Any) -> Any:
    """A (possibly multi-host) sharded tree as numpy arrays holding the global values."""
    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)
