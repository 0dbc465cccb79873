"""resnet_ms: ResNet image classification on MindSpore.

Modules, one job each:
  runtime     CPU fast path (applied here, before MindSpore loads), device, mode
  models      ResidualBlockBase, Bottleneck, make_layer, ResNet, resnet18..152
  smallmap    convolutions on 1x1/2x2 maps as matrix products (CPU speed)
  data        CIFAR-10 binary / image folders, splits, transforms, loaders
  fetch       checked downloads and safe archive extraction
  weights     pretrained-weight records, cache, strict loading
  convert     mindcv / torchvision weights in this project's names
  export      MINDIR and ONNX files for deployment
  checkpoint  atomic checkpoint files with metadata and CRC
  engine      learning-rate schedule, optimizer, train/eval steps and epochs
  trainer     the training run behind train.py
  inference   a model from a checkpoint, predictions on images
  plots       curves, confusion matrices, prediction grids
  config      TrainConfig, YAML and command-line flags
"""
from . import runtime  # noqa: F401  (first: sets oneDNN's ISA before MindSpore loads)
from .errors import UserError  # noqa: F401
from .models import (Bottleneck, ResidualBlock, ResidualBlockBase, ResNet, build_model,  # noqa: F401
                     make_layer, resnet18, resnet34, resnet50, resnet101, resnet152)

__version__ = "0.1.0"
