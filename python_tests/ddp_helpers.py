"""Run a test function in 2 gloo processes (torch.multiprocessing), as torchrun would."""
import os
import socket

import torch.multiprocessing as mp


def join_group_env(rank: int, world: int, port: int) -> None:
    """The environment torchrun gives rank ``rank`` (the trainer joins the group from it)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))


def spawn(worker, *args, nprocs: int = 2) -> None:
    """``worker(rank, world, port, *args)`` in ``nprocs`` processes on a free local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(nprocs, port, *args), nprocs=nprocs, join=True)
