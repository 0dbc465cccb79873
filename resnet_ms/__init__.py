"""resnet_ms: ResNet image classification on MindSpore.

Modules, one job each (an arrow: imports):
  runtime     CPU fast paths (applied here, before MindSpore loads), device, mode
  machine     CPU facts from /proc/cpuinfo
  cpu_kernels opt-in oneDNN kernels for convolution/BatchNorm (MindSpore op plugin)
  files       atomic file writes, temporaries, the cache folder
  models      ResidualBlockBase, Bottleneck, make_layer, ResNet, SmallResNet: architectures only
  layers      the Conv2d/BatchNorm2d cells with the CPU fast paths
  smallmap    convolutions on 1x1/2x2 maps as matrix products (CPU speed)
  data        CIFAR-10 binary / image folders, splits, transforms, loaders
  images      image-file listing and integrity checks
  fetch       checked downloads and safe archive extraction
  checkpoint  CheckpointRecord, atomic checkpoint files with CRC, strict loading
  formats     mindcv / torchvision weight files read and renamed (no networks)
  weights     pretrained-weight records, cache; the one way to a loaded network
  convert     mindcv / torchvision files written as resnet_ms checkpoints
  export      MINDIR and ONNX files for deployment
  engine      learning-rate schedules, optimizer, train/eval steps and epochs
  ema         a moving average of the weights, updated inside the train step
  whitening   patch-whitening initialisation of the first convolution
  tta         test-time augmentation: logits averaged over flipped/shifted views
  runs        a training run's folder: checkpoints, metrics.csv, config.yaml
  trainer     the training run behind train.py
  inference   a checkpoint's preprocessing, predictions on images
  evaluation  a checkpoint on a split: numbers, report, confusion picture
  plots       curves, confusion matrices, prediction grids
  config      TrainConfig, YAML and command-line flags
  cli         flags the scripts share, one-line errors
"""
from . import runtime  # noqa: F401  (first: sets oneDNN's ISA before MindSpore loads)
from .errors import UserError  # noqa: F401
from .models import Bottleneck, ResidualBlock, ResidualBlockBase, ResNet, SmallResNet, make_layer  # noqa: F401
from .weights import (build_model, load_model, resnet18, resnet34, resnet50, resnet101, resnet152,  # noqa: F401
                      resnet9, resnet_hour)

__version__ = "0.1.0"
