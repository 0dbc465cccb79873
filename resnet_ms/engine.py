"""The training and evaluation engine: schedule, optimizer, steps, epochs.

Plain functions in the style of torchvision's reference script; the step is
MindSpore's `value_and_grad` under `jit` (one compiled graph per step).
"""
import logging
import math
import sys
import time

import numpy as np

import mindspore as ms
from mindspore import nn

from . import cpu_kernels
from .errors import UserError
from .layers import skip_input_gradient
from .runtime import fetch
from .tta import tta_logits

log = logging.getLogger("resnet_ms")


def cosine_lr(max_lr, min_lr, total_steps, warmup_steps=0):
    """Learning rate of every step: linear warm-up to max_lr, cosine decay to min_lr.

    Warm-up step s (0-based) uses max_lr * (s + 1) / warmup_steps, so the
    first step is never 0; decay covers the remaining steps and its last
    step lands exactly on min_lr.
    """
    lrs = [max_lr * (s + 1) / warmup_steps for s in range(min(warmup_steps, total_steps))]
    decay = total_steps - len(lrs)
    for s in range(decay):
        progress = s / (decay - 1) if decay > 1 else 1.0
        lrs.append(min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * progress)))
    return lrs


def linear_lr(max_lr, min_lr, total_steps, warmup_steps=0):
    """One cycle of straight lines: up from max_lr / warmup_steps to max_lr over the
    warm-up, then down to min_lr on the last step (Page's and airbench's shape)."""
    lrs = [max_lr * (s + 1) / warmup_steps for s in range(min(warmup_steps, total_steps))]
    decay = total_steps - len(lrs)
    lrs += [max_lr - (max_lr - min_lr) * (s / (decay - 1) if decay > 1 else 1.0) for s in range(decay)]
    return lrs


SCHEDULES = {"cosine": cosine_lr, "linear": linear_lr}


def build_optimizer(net, lrs, momentum=0.9, weight_decay=1e-4, nesterov=False):
    """SGD with momentum (Nesterov's if asked), weight decay on conv and dense weights only.

    Decaying BatchNorm's gamma/beta and biases pulls them towards 0 for no
    regularising benefit (Goyal et al. 2017; Jia et al. 2018). Frozen
    parameters (requires_grad False) are not in it at all: no update, no decay.
    """
    params = net.trainable_params()
    decay = [p for p in params if p.name.endswith("weight")]
    rest = [p for p in params if not p.name.endswith("weight")]
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    lr = ms.Tensor(np.asarray(lrs, np.float32))
    if nesterov:
        # Not nn.Momentum(use_nesterov=True): MindSpore 2.10's CPU kernel ignores the flag and
        # takes plain momentum steps (measured, tests/test_recipe.py); nn.SGD's is Nesterov's.
        return nn.SGD(groups, learning_rate=lr, momentum=momentum, nesterov=True)
    momentum_class = DecayedMomentum if cpu_kernels.active() else nn.Momentum
    return momentum_class(groups, learning_rate=lr, momentum=momentum)


class DecayedMomentum(nn.Momentum):
    """nn.Momentum (the same state, checkpoints and arithmetic) whose weight decay is
    applied inside each parameter's update instead of by a Mul and an AddN before it:
    one pass over a parameter instead of three. Only with resnet_ms's CPU kernels, which
    implement the fused op MindSpore ships for GPUs (FusedWeightScaleApplyMomentum):
    ResNet-18's optimizer step took 26.6 ms on MindSpore's ops (13 of them the decay),
    10.8 here (benchmarks/RESULTS.md run 13)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from mindspore.ops.operations.inner_ops import FusedWeightScaleApplyMomentum
        if self.is_group_lr or self.dynamic_weight_decay or self.need_scale:  # build_optimizer has none
            raise ValueError("DecayedMomentum: one learning rate, fixed weight decay, no loss scale")
        decays = self.weight_decay if self.is_group else (self.weight_decay,) * len(self._parameters)
        self.decays = tuple(d if flag else ms.Tensor(0.0, ms.float32) for d, flag in zip(decays, self.decay_flags))
        self.one = ms.Tensor(1.0, ms.float32)
        self.fused = FusedWeightScaleApplyMomentum()
        self.fused.add_prim_attr("side_effect_mem", True)  # as ApplyMomentum: it writes its inputs

    def construct(self, gradients):
        lr = self.get_lr()
        self.assignadd(self.global_step, self.global_step_increase_tensor)
        done = ()
        for decay, weight, moment, gradient in zip(self.decays, self._parameters, self.moments, gradients):
            done += (self.fused(decay, self.one, weight, moment, lr, gradient, self.momentum),)
        return done


def make_train_step(net, loss_fn, optimizer, loss_scaler=None, grad_reducer=None, ema=None):
    """A compiled step: (images, labels) -> (loss, correct predictions, skipped).

    With a loss scaler (mixed precision) the loss is scaled before
    differentiation, gradients are unscaled, and a step whose gradients
    overflowed is skipped (skipped = 1) while the scale adapts.
    `grad_reducer` all-reduces gradients in data-parallel training; `ema`
    (ema.WeightAverage) updates the weight average after the optimizer.
    """
    skip_input_gradient(net)  # only the weights are differentiated

    def forward(images, labels):
        logits = net(images)
        loss = loss_fn(logits.astype(ms.float32), labels)
        if loss_scaler is not None:
            return loss_scaler.scale(loss), logits
        return loss, logits

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)

    @ms.jit
    def step(images, labels):
        (loss, logits), grads = grad_fn(images, labels)
        if grad_reducer is not None:
            grads = grad_reducer(grads)
        skipped = ms.Tensor(0, ms.int32)
        if loss_scaler is not None:
            loss = loss_scaler.unscale(loss)
            finite = ms.amp.all_finite(grads)
            if finite:
                optimizer(loss_scaler.unscale(grads))
            else:
                skipped = ms.Tensor(1, ms.int32)
            loss_scaler.adjust(finite)
        else:
            optimizer(grads)
        if ema is not None:
            ema()
        correct = (logits.argmax(1) == labels).astype(ms.int32).sum()
        return loss, correct, skipped

    return step


def make_eval_step(net):
    @ms.jit
    def step(images):
        return net(images).astype(ms.float32)
    return step


def _progress(iterable, total, desc):
    if not sys.stderr.isatty():  # no bar in logs and pipes: see StepLog
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True)


class StepLog:
    """A progress line every `interval` steps where no terminal shows a bar
    (nohup, msrun worker logs, CI): step/total, loss, lr, images/s, ETA."""

    def __init__(self, desc, total, interval, lrs=None, first_step=0):
        self.desc, self.total, self.lrs, self.first = desc, total, lrs, first_step
        self.interval = interval if interval and not sys.stderr.isatty() else 0
        self.start = time.perf_counter()

    def __call__(self, i, loss, images_per_s):
        if not self.interval or (i + 1) % self.interval or i + 1 == self.total:
            return
        lr = f"  lr {self.lrs[min(self.first + i, len(self.lrs) - 1)]:.4g}" if self.lrs else ""
        eta = (self.total - i - 1) * (time.perf_counter() - self.start) / (i + 1)
        log.info("%s step %d/%d  loss %.4f%s  %.1f img/s  ETA %dm%02ds", self.desc, i + 1, self.total, loss,
                 lr, images_per_s, eta // 60, eta % 60)


def _check_loss(loss, desc, step, lr_hint, limit):
    """Stop a diverged run at once: a loss that is not finite, or above `limit`."""
    if not math.isfinite(loss) or (limit and loss > limit):
        what = f"became {loss}" if not math.isfinite(loss) else f"reached {loss:.4g} (over {limit:.4g})"
        raise UserError(f"{desc} step {step}: the loss {what}; training diverged, and the run "
                        f"stops here (best.ckpt and last.ckpt keep the last good epoch). {lr_hint}")


def train_one_epoch(step, net, loader, desc="train", skip_first=False, log_interval=0, lrs=None,
                    first_step=0, lr_hint="Lower --lr.", loss_limit=None):
    """Runs one epoch; returns loss, accuracy, images, images/s and skipped (overflowed) steps.

    Images/s leaves out the first step when `skip_first` (it includes graph
    compilation) and counts only time inside this loop. A loss that is not
    finite, or above `loss_limit`, ends the run at once with a UserError.
    """
    net.set_train(True)
    loss_sum, correct, seen, skipped = 0.0, 0, 0, 0
    timed_images, start = 0, time.perf_counter()
    total = loader.get_dataset_size()
    step_log = StepLog(desc, total, log_interval, lrs, first_step)
    if skip_first:
        log.info("%s: compiling the training graph (the first step takes longer)", desc)
    for i, (images, labels) in enumerate(_progress(loader.create_tuple_iterator(num_epochs=1), total, desc)):
        loss, ok, overflow = fetch(*step(images, labels))
        n = images.shape[0]
        value = float(loss)
        _check_loss(value, desc, i + 1, lr_hint, loss_limit)
        loss_sum += value * n
        correct += int(ok)
        skipped += int(overflow)
        seen += n
        if i == 0 and skip_first:
            start = time.perf_counter()
        else:
            timed_images += n
        elapsed = time.perf_counter() - start
        step_log(i, loss_sum / seen, timed_images / elapsed if elapsed > 0 and timed_images else float("nan"))
    elapsed = time.perf_counter() - start
    return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1), "images": seen, "skipped": skipped,
            "images_per_s": timed_images / elapsed if elapsed > 0 and timed_images else float("nan")}


def evaluate(eval_step, net, loader, num_classes, desc="eval", keep_logits=False, tta="none"):
    """Top-1, top-5, mean cross-entropy and the confusion matrix over `loader`,
    on logits averaged over the views of `tta` (tta.VIEWS)."""
    net.set_train(False)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    loss_sum, top5, seen, all_logits = 0.0, 0, 0, []
    for images, labels in _progress(loader.create_tuple_iterator(num_epochs=1),
                                    loader.get_dataset_size(), desc):
        logits = tta_logits(eval_step, images, tta)
        y = labels.asnumpy()
        shifted = logits - logits.max(1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
        loss_sum += -log_probs[np.arange(len(y)), y].sum()
        k = min(5, num_classes)
        top5 += (np.argsort(-logits, 1)[:, :k] == y[:, None]).any(1).sum()
        np.add.at(confusion, (y, logits.argmax(1)), 1)
        seen += len(y)
        if keep_logits:
            all_logits.append(logits)
    out = {"loss": loss_sum / max(seen, 1), "top1": np.trace(confusion) / max(seen, 1),
           "top5": top5 / max(seen, 1), "images": seen, "confusion": confusion, "tta": tta}
    if keep_logits:
        out["logits"] = np.concatenate(all_logits) if all_logits else np.zeros((0, num_classes))
    return out


def class_report(confusion, class_names):
    """Per-class precision, recall, F1 and support, and their macro and weighted averages.

    A class never predicted has precision 0 (and so F1 0), as scikit-learn reports it.
    """
    confusion = np.asarray(confusion, np.float64)
    tp, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
    recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    rows = {name: {"precision": p, "recall": r, "f1": f, "support": int(n)}
            for name, p, r, f, n in zip(class_names, precision, recall, f1, support)}
    weights = support / max(support.sum(), 1)
    average = {"macro": {k: float(np.mean(v)) for k, v in (("precision", precision), ("recall", recall), ("f1", f1))},
               "weighted": {k: float(np.dot(weights, v)) for k, v in (("precision", precision), ("recall", recall),
                                                                       ("f1", f1))}}
    return {k: {m: float(x) if m != "support" else x for m, x in v.items()} for k, v in rows.items()}, average


def per_class_accuracy(confusion):
    totals = confusion.sum(1)
    return np.where(totals > 0, np.diag(confusion) / np.maximum(totals, 1), np.nan)
