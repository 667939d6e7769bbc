"""Models for the experiments: MLP, small CNN, small ResNet, or any timm model.

Images arrive channels-first ``(B, C, H, W)``; 1-D signals as ``(B, L)``. Every model ends in an ``nn.Linear``
named ``head`` (timm: its own classifier), the layer whose weights GWA aligns with.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: tuple[int, ...], num_classes: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


def _conv(dims: int):
    return nn.Conv1d if dims == 1 else nn.Conv2d


class SmallCNN(nn.Module):
    """Two conv blocks and global average pooling; 1-D convs for signals, 2-D for images."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32, dims: int = 2):
        super().__init__()
        conv = _conv(dims)
        pool = nn.MaxPool1d(2) if dims == 1 else nn.MaxPool2d(2)
        gap = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        k = 5 if dims == 1 else 3
        self.dims = dims
        self.body = nn.Sequential(
            conv(in_channels, width, k, padding=k // 2),
            nn.ReLU(),
            pool,
            conv(width, 2 * width, k, padding=k // 2),
            nn.ReLU(),
            pool,
            conv(2 * width, 2 * width, k, padding=k // 2),
            nn.ReLU(),
            gap,
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        if self.dims == 1 and x.ndim == 2:
            x = x[:, None, :]
        return self.head(self.body(x))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dims: int):
        super().__init__()
        conv, bn = _conv(dims), (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)
        self.conv1, self.bn1 = conv(c_in, c_out, 3, stride=stride, padding=1, bias=False), bn(c_out)
        self.conv2, self.bn2 = conv(c_out, c_out, 3, padding=1, bias=False), bn(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=False), bn(c_out))
        )

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-style: a stem and three stages of one basic block (width, 2x, 4x; stride 2 between)."""

    def __init__(self, in_channels: int, num_classes: int, *, width: int = 32, dims: int = 2):
        super().__init__()
        conv, bn = _conv(dims), (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)
        gap = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
        self.dims = dims
        self.body = nn.Sequential(
            conv(in_channels, width, 3, padding=1, bias=False),
            bn(width),
            nn.ReLU(),
            BasicBlock(width, width, 1, dims),
            BasicBlock(width, 2 * width, 2, dims),
            BasicBlock(2 * width, 4 * width, 2, dims),
            gap,
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        if self.dims == 1 and x.ndim == 2:
            x = x[:, None, :]
        return self.head(self.body(x))


def build_model(
    name: str,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden=(256, 256),
    width: int = 32,
    pretrained: bool = False,
    allow_download: bool = False,
) -> nn.Module:
    """Build a model for inputs of ``input_shape`` (``(H, W, C)`` images or ``(L,)`` signals).

    Raises:
        ValueError: unknown name, or a timm model for 1-D inputs.
        ModuleNotFoundError: timm requested but not installed.
    """
    image = len(input_shape) == 3
    in_channels = input_shape[-1] if image else 1
    if name == "mlp":
        return MLP(math.prod(input_shape), tuple(hidden), num_classes)
    if name == "cnn":
        return SmallCNN(in_channels, num_classes, width=width, dims=2 if image else 1)
    if name == "resnet":
        return SmallResNet(in_channels, num_classes, width=width, dims=2 if image else 1)
    if name.startswith("timm:"):
        return _timm_model(
            name[5:],
            image=image,
            in_channels=in_channels,
            num_classes=num_classes,
            pretrained=pretrained,
            allow_download=allow_download,
        )
    raise ValueError(f"Expected `model` to be one of mlp, cnn, resnet or timm:<name>; got {name!r}.")


def _timm_model(
    name: str, *, image: bool, in_channels: int, num_classes: int, pretrained: bool, allow_download: bool
) -> nn.Module:
    try:
        import timm
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "model 'timm:...' needs the timm package: pip install timm", name="timm"
        ) from None
    if not image:
        raise ValueError(f"timm models take images; dataset inputs are 1-D signals (model timm:{name}).")
    if name not in timm.list_models(pretrained=False) and name not in timm.list_models(pretrained=True):
        raise ValueError(f"timm has no model {name!r} (see timm.list_models()).")
    if not pretrained or allow_download:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels)
    weights = _cached_timm_weights(timm, name)
    return timm.create_model(
        name,
        pretrained=True,
        pretrained_cfg_overlay={"file": weights, "source": ""},
        num_classes=num_classes,
        in_chans=in_channels,
    )


def _cached_timm_weights(timm, name: str) -> str:
    """The path of a timm model's pretrained weights in the local Hugging Face cache; never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name.split(".")[0]) if "." not in name else None
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg if cfg is None else cfg.to_dict()
    hub_id = cfg.get("hf_hub_id")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        path = try_to_load_from_cache(hub_id, filename) if hub_id else None
        if isinstance(path, str):
            return path
    raise FileNotFoundError(
        f"Pretrained weights for timm:{name} ({hub_id or 'no hub id'}) are not in the local "
        f"cache and downloads are off; add --download to fetch them, or pass a state_dict with "
        f"--init-checkpoint."
    )


def classifier_head(model: nn.Module) -> nn.Linear | None:
    """The head GWA should align with: ``model.head`` for ours, ``get_classifier()`` for timm; None = let the
    tracker search."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else getattr(model, "head", None)
    return head if isinstance(head, nn.Linear) else None


def perturb_parameters(model: nn.Module, relative: float, *, seed: int) -> None:
    """Multiply every parameter by ``1 + relative * N(0, 1)`` (in place, seeded): a re-execution check that
    stands in for another machine's floating-point rounding (``relative`` 1e-6) without changing the recipe."""
    if not (0 <= relative < 1):
        raise ValueError(f"Expected `relative` in [0, 1); got {relative!r}.")
    generator = torch.Generator().manual_seed(int(seed) + 7_919)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=torch.float64)
            p.mul_((1.0 + relative * noise).to(p.dtype).to(p.device))
