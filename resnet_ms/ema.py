"""An exponential moving average of a network's weights (Polyak averaging).

The average is updated inside the compiled training step, after the
optimizer, over every parameter: weights and BatchNorm's running statistics
(an average of weights needs statistics that match it). Its early steps use
a shorter memory, (1 + t) / (10 + t), so that the average does not start as
mostly the random initialisation.
"""
import mindspore as ms
from mindspore import nn, ops

from .checkpoint import EMA_PREFIX
from .errors import UserError


def ema_decay(decay, t):
    """The decay of update t (0-based): `decay`, shortened while t is small."""
    return min(decay, (1 + t) / (10 + t))


class WeightAverage(nn.Cell):
    def __init__(self, net, decay):
        super().__init__()
        self.decay = decay
        self.live = ms.ParameterTuple(list(net.get_parameters()))
        self.average = ms.ParameterTuple([ms.Parameter(p.data.copy(), name=EMA_PREFIX + p.name, requires_grad=False)
                                          for p in self.live])
        self.updates = ms.Parameter(ms.Tensor(0, ms.float32), name=EMA_PREFIX + "updates", requires_grad=False)

    def construct(self):
        t = self.updates
        d = ops.minimum(ms.Tensor(self.decay, ms.float32), (1 + t) / (10 + t))
        for avg, p in zip(self.average, self.live):
            ops.assign(avg, avg * d + p.astype(avg.dtype) * (1 - d))
        ops.assign_add(self.updates, ms.Tensor(1, ms.float32))
        return d

    def state(self):
        """(name, Parameter) of everything --resume needs."""
        return [(p.name, p) for p in list(self.average) + [self.updates]]

    def load_state(self, tensors, source):
        """Before the first step: the average saved in last.ckpt (set_data is safe then)."""
        for name, param in self.state():
            if name not in tensors:
                raise UserError(f"{source}: no weight average ({name}); it was saved without --ema_decay, "
                                "so resume with --ema_decay 0")
            param.set_data(ms.Tensor(tensors[name].asnumpy()))
