"""Data-parallel training under MindSpore's launcher, msrun.

Every rank builds the same network from the same seed, reads its own shard
of each epoch (data.loader_indices), and averages gradients with an
all-reduce inside the compiled step. BatchNorm statistics are per rank while
training; they are averaged at the end of each epoch so that evaluation and
checkpoints see one network. Only rank 0 writes files.
"""
import numpy as np


def init_data_parallel():
    """Join the msrun job; returns (rank, world size)."""
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init
    from mindspore.context import ParallelMode
    init()  # NCCL on GPU, HCCL on Ascend, MindSpore's own TCP collectives on CPU
    world = get_group_size()
    ms.set_auto_parallel_context(parallel_mode=ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world)
    return get_rank(), world


def grad_reducer(optimizer, world):
    from mindspore import nn
    return nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=world)


def all_reduce_sum(values):
    """Element-wise sum of a float array over all ranks (float32: exact for counts < 2**24)."""
    import mindspore as ms
    from mindspore import ops
    return ops.AllReduce()(ms.Tensor(np.asarray(values, np.float32))).asnumpy().astype(np.float64)


def average_batch_norm_statistics(net, world):
    """Replace every rank's moving mean/variance by their average over ranks (written
    inside a graph: the compiled training step goes on updating them, engine.ParameterWriter)."""
    from .engine import ParameterWriter
    stats = [p for p in net.get_parameters() if p.name.endswith(("moving_mean", "moving_variance"))]
    flat = all_reduce_sum(np.concatenate([p.asnumpy().ravel() for p in stats])) / world
    ends = np.cumsum([p.size for p in stats])
    ParameterWriter(stats).write([part.reshape(p.shape) for part, p in zip(np.split(flat, ends[:-1]), stats)])


def reduce_train_stats(stats):
    """Loss and accuracy over all ranks' images; images/s of the whole job."""
    loss_sum, correct, seen, rate = all_reduce_sum([stats["loss"] * stats["images"],
                                                    stats["acc"] * stats["images"], stats["images"],
                                                    stats["images_per_s"]])
    return dict(stats, loss=loss_sum / seen, acc=correct / seen, images=int(seen), images_per_s=rate)


def reduce_eval(result):
    """Sum the per-rank confusion matrices and loss/top-5 counts into whole-split numbers."""
    n = result["images"]
    confusion = result["confusion"]
    packed = all_reduce_sum(np.concatenate([[result["loss"] * n, result["top5"] * n, n], confusion.ravel()]))
    seen = packed[2]
    confusion = np.rint(packed[3:]).astype(np.int64).reshape(confusion.shape)
    return dict(result, loss=packed[0] / seen, top5=packed[1] / seen, images=int(seen),
                confusion=confusion, top1=np.trace(confusion) / seen)
