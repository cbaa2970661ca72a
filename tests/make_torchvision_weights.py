"""Writes torchvision models' weights the ordinary way, with torchvision's own outputs, for
test_torchvision.cpp: NAME.pth (torch.save(model.state_dict())), NAME_io.pth ({'x', 'y'}: an
input and the model's logits in eval mode), resnet18_script.pt (torch.jit.save)."""
import sys
import warnings

import torch
import torchvision


def randomize_batchnorm(model):
    """Non-trivial BN statistics and affine parameters, as after training."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.normal_(0, 0.3)
    return model.eval()


def main(out):
    torch.manual_seed(0)
    for name in ["resnet18", "mobilenet_v2", "resnet50"]:
        m = randomize_batchnorm(getattr(torchvision.models, name)(num_classes=10))
        torch.save(m.state_dict(), f"{out}/{name}.pth")
        x = torch.randn(2, 3, 64, 64) * 3
        with torch.no_grad():
            torch.save({"x": x, "y": m(x)}, f"{out}/{name}_io.pth")
        if name == "resnet18":
            torch.jit.save(torch.jit.script(m), f"{out}/resnet18_script.pt")


if __name__ == "__main__":
    warnings.filterwarnings("ignore")
    main(sys.argv[1])
