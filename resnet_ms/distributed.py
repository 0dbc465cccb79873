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


def average_batch_norm_statistics(values, world):
    """{name: array} with every moving mean/variance replaced by its average over ranks."""
    names = [k for k in values if k.endswith(("moving_mean", "moving_variance"))]
    flat = all_reduce_sum(np.concatenate([values[k].ravel() for k in names])) / world
    parts = np.split(flat, np.cumsum([values[k].size for k in names])[:-1])
    return {**values, **{k: part.reshape(values[k].shape).astype(np.float32) for k, part in zip(names, parts)}}


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
