// TorchScript export of a plain network: each layer's tensors registered on a torch::jit::Module
// and a forward `define`d as a chain of torch.* calls (also the deploy runtime's source).
#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/io/export.h"
#include "rmnet/io/model_file.h"

namespace rmnet {
namespace {

std::string pair(int64_t v) { return fmt::format("[{}, {}]", v, v); }

/// A float literal for TorchScript source (exact: 17 significant digits).
std::string scalar(double v) {
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  return fmt::format("{:.17g}", v) + (std::floor(v) == v && std::abs(v) < 1e15 ? ".0" : "");
}

}  // namespace

torch::jit::Module to_torchscript(const PlainNetImpl& net) {
  torch::jit::Module m("__torch__.rmnet.PlainNet");
  std::ostringstream src;
  src << "def forward(self, x):\n";
  auto reg = [&](const std::string& name, const torch::Tensor& t, bool param) {
    if (param)
      m.register_parameter(name, t.detach().clone(), false);
    else
      m.register_buffer(name, t.detach().clone());
  };
  for (size_t i = 0; i < net.size(); ++i) {
    const auto& s = net.spec(i);
    const std::string p = "l" + std::to_string(i) + "_";
    switch (s.kind) {
      case LayerKind::Conv: {
        auto c = net.layer_as<torch::nn::Conv2dImpl>(i);
        reg(p + "weight", c->weight, true);
        if (s.bias) reg(p + "bias", c->bias, true);
        src << fmt::format("    x = torch.conv2d(x, self.{0}weight, {1}, {2}, {3}, [1, 1], {4})\n", p,
                           s.bias ? "self." + p + "bias" : "None", pair(s.stride), pair(s.padding), s.groups);
        break;
      }
      case LayerKind::BatchNorm: {
        auto b = net.layer_as<torch::nn::BatchNorm2dImpl>(i);
        reg(p + "weight", b->weight, true);
        reg(p + "bias", b->bias, true);
        reg(p + "running_mean", b->running_mean, false);
        reg(p + "running_var", b->running_var, false);
        src << fmt::format(
            "    x = torch.batch_norm(x, self.{0}weight, self.{0}bias, self.{0}running_mean, self.{0}running_var, "
            "False, 0.0, {1}, True)\n",
            p, s.eps);
        break;
      }
      case LayerKind::ReLU:
        src << "    x = torch.relu(x)\n";
        break;
      case LayerKind::PReLU:
        reg(p + "weight", net.layer_as<torch::nn::PReLUImpl>(i)->weight, true);
        src << fmt::format("    x = torch.prelu(x, self.{}weight)\n", p);
        break;
      case LayerKind::Clamp: {
        // Uniform bounds (ReLU6) as a scalar clamp, which freezing fuses into the conv; mixed bounds
        // (reserved channels unclipped) as maximum/minimum with broadcast bounds (optimize_for_inference
        // takes clamp bounds as scalars only).
        auto c = net.layer_as<ChannelClampImpl>(i);
        const auto lo = c->min.to(torch::kDouble), hi = c->max.to(torch::kDouble);
        const double lo0 = lo[0].item<double>(), hi0 = hi[0].item<double>();
        if (lo.eq(lo0).all().item<bool>() && hi.eq(hi0).all().item<bool>()) {
          if (std::isinf(lo0) && lo0 < 0 && std::isinf(hi0) && hi0 > 0) break;  // identity
          src << fmt::format("    x = torch.clamp(x, {}, {})\n", std::isinf(lo0) ? "None" : scalar(lo0),
                             std::isinf(hi0) ? "None" : scalar(hi0));
        } else {
          reg(p + "min", c->min.view({1, -1, 1, 1}), false);
          reg(p + "max", c->max.view({1, -1, 1, 1}), false);
          src << fmt::format("    x = torch.minimum(torch.maximum(x, self.{0}min), self.{0}max)\n", p);
        }
        break;
      }
      case LayerKind::MaxPool:
        src << fmt::format("    x = torch.max_pool2d(x, {}, {}, {}, [1, 1], False)\n", pair(s.kernel), pair(s.stride),
                           pair(s.padding));
        break;
      case LayerKind::AvgPool:
        src << "    x = torch.adaptive_avg_pool2d(x, [1, 1])\n";
        break;
      case LayerKind::Flatten:
        src << "    x = torch.flatten(x, 1)\n";
        break;
      case LayerKind::Linear: {
        auto l = net.layer_as<torch::nn::LinearImpl>(i);
        reg(p + "weight", l->weight, true);
        if (s.bias) reg(p + "bias", l->bias, true);
        src << fmt::format("    x = torch.linear(x, self.{}weight, {})\n", p, s.bias ? "self." + p + "bias" : "None");
        break;
      }
      case LayerKind::SE: {
        auto e = net.layer_as<ChannelSEImpl>(i);
        for (const auto& [n, t] : {std::pair{"w1", e->w1}, {"b1", e->b1}, {"w2", e->w2}, {"b2", e->b2}})
          reg(p + n, t, true);
        src << fmt::format("    a = torch.narrow(x, 1, 0, {})\n", s.scaled);
        src << fmt::format(
            "    g = torch.sigmoid(torch.linear(torch.relu(torch.linear(torch.mean(a, [2, 3]), self.{0}w1, self.{0}b1)), "
            "self.{0}w2, self.{0}b2))\n",
            p);
        if (s.scaled == s.out_channels)
          src << "    x = a * g.unsqueeze(2).unsqueeze(3)\n";
        else
          src << fmt::format("    x = torch.cat([a * g.unsqueeze(2).unsqueeze(3), torch.narrow(x, 1, {}, {})], 1)\n",
                             s.scaled, s.out_channels - s.scaled);
        break;
      }
    }
  }
  src << "    return x\n";
  m.define(src.str());
  m.eval();
  return m;
}

void export_torchscript(const PlainNetImpl& net, const std::string& path) {
  auto m = to_torchscript(net);
  std::ostringstream os;
  m.save(os);
  write_file_atomic(path, os.str());
}

}  // namespace rmnet
