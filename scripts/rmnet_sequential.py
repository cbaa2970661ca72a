"""Build a torch.nn.Sequential from an rmnet .pth export (FILE.pth + FILE.pth.json).

    from rmnet_sequential import load_sequential
    model = load_sequential("plain.pth")        # eval mode, weights loaded (weights_only=True)

The chain's layers map to torch.nn modules one to one; rmnet's per-channel clamp (exact ReLU6 on
the original channels, unclipped reserved channels) is the small ChannelClamp module below.
"""
import json
import pathlib

import torch
import torch.nn as nn


class ChannelClamp(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.register_buffer("min", torch.zeros(channels))
        self.register_buffer("max", torch.full((channels,), float("inf")))

    def forward(self, x):
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return torch.clamp(x, self.min.view(shape), self.max.view(shape))


class ChannelSE(nn.Module):
    """Squeeze-and-excitation on the first `scaled` channels; the others pass unchanged."""

    def __init__(self, channels, scaled, hidden):
        super().__init__()
        self.scaled = scaled
        self.w1 = nn.Parameter(torch.zeros(hidden, scaled))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter(torch.zeros(scaled, hidden))
        self.b2 = nn.Parameter(torch.zeros(scaled))

    def forward(self, x):
        a, rest = x[:, : self.scaled], x[:, self.scaled :]
        g = torch.sigmoid(nn.functional.linear(torch.relu(nn.functional.linear(a.mean((2, 3)), self.w1, self.b1)), self.w2, self.b2))
        return torch.cat([a * g[:, :, None, None], rest], 1)


def make_layer(l):
    t = l["type"]
    if t == "conv":
        return nn.Conv2d(l["in"], l["out"], l["kernel"], l["stride"], l["padding"], groups=l["groups"], bias=l["bias"])
    if t == "batchnorm":
        return nn.BatchNorm2d(l["channels"], eps=l["eps"], momentum=l["momentum"])
    if t == "relu":
        return nn.ReLU()
    if t == "prelu":
        return nn.PReLU(l["channels"])
    if t == "clamp":
        return ChannelClamp(l["channels"])
    if t == "maxpool":
        return nn.MaxPool2d(l["kernel"], l["stride"], l["padding"])
    if t == "avgpool":
        return nn.AdaptiveAvgPool2d(1)
    if t == "flatten":
        return nn.Flatten()
    if t == "linear":
        return nn.Linear(l["in"], l["out"], bias=l["bias"])
    if t == "se":
        return ChannelSE(l["channels"], l["scaled"], l["hidden"])
    raise ValueError(f"unknown layer type {t!r}")


def load_sequential(pth):
    pth = pathlib.Path(pth)
    chain = json.loads(pathlib.Path(str(pth) + ".json").read_text())
    model = nn.Sequential(*[make_layer(l) for l in chain["layers"]])
    model.load_state_dict(torch.load(pth))  # default weights_only=True
    return model.eval()
