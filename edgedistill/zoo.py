"""Built-in models for the default task: scikit-learn digits at 1×32×32, 10 classes.

Only Conv2d / BatchNorm2d / ReLU / MaxPool2d / AdaptiveAvgPool2d / Linear, so every exporter and
INT8 quantizer edgedistill drives handles them. They are sized so that latencies are milliseconds
(measurable above timer noise) and the student is several times cheaper than the teacher.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import load_file
from torch import nn

from edgedistill.errors import UsageError

DIGITS_CLASSES = 10
DIGITS_TEACHER_WEIGHTS = Path(__file__).with_name("weights") / "digits_teacher.safetensors"


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    # bias=False: the BatchNorm that follows has its own shift.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


def _convnet(stages: list[list[int]], c_in: int, num_classes: int) -> nn.Sequential:
    """Stages of 3×3 conv blocks (each list gives the widths), a 2×2 max-pool between stages."""
    layers: list[nn.Module] = []
    for i, widths in enumerate(stages):
        if i:
            layers.append(nn.MaxPool2d(2))
        for width in widths:
            layers += _conv_bn_relu(c_in, width)
            c_in = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def digits_teacher(num_classes: int = DIGITS_CLASSES, pretrained: bool = True) -> nn.Module:
    """The reference teacher: two 3×3 convs per stage, widths 64/128/256, GAP, FC.

    At 1×1×32×32: 151.6 M MACs, 1.15 M parameters (4.6 MB in FP32).
    `pretrained` loads the shipped weights, trained by scripts/train_default_teacher.py on the
    training split of builtin:digits (seed 0): 100.0 % (359/359) on the held-out test split.
    """
    model = _convnet([[64, 64], [128, 128], [256, 256]], 1, num_classes)
    if pretrained:
        if num_classes != DIGITS_CLASSES:
            raise UsageError(
                f"the shipped digits teacher has {DIGITS_CLASSES} classes, asked for {num_classes}",
                "pass pretrained=False, or train your own teacher",
            )
        if not DIGITS_TEACHER_WEIGHTS.is_file():
            raise UsageError(
                f"shipped teacher weights not found: {DIGITS_TEACHER_WEIGHTS}",
                "reinstall edgedistill, or run scripts/train_default_teacher.py",
            )
        model.load_state_dict(load_file(DIGITS_TEACHER_WEIGHTS))
    return model.eval()


def digits_student(num_classes: int = DIGITS_CLASSES) -> nn.Module:
    """The default student: widths 32/64/128 with one, two and one 3×3 convs, GAP, FC.

    At 1×1×32×32: 19.2 M MACs (7.9× fewer than the teacher), 0.13 M parameters.
    """
    return _convnet([[32], [64, 64], [128]], 1, num_classes)
