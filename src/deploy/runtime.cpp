#include "rmnet/deploy/runtime.h"

#include <cmath>
#include <sstream>

#include <fmt/format.h>
#include <torch/torch.h>

namespace rmnet {
namespace {

std::string pair(int64_t v) { return fmt::format("[{}, {}]", v, v); }

std::string scalar(double v) {
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  return fmt::format("{:.17g}", v) + (std::floor(v) == v && std::abs(v) < 1e15 ? ".0" : "");
}

/// The chain as a TorchScript module for freezing. Like to_torchscript (io/export.h), except
/// that a per-channel clamp whose bounds are the same for every channel (ReLU6) becomes a scalar
/// clamp, which the frozen-graph passes fuse into the convolution, and one with mixed bounds
/// becomes maximum/minimum with broadcast bounds (oneDNN's conversion pass takes clamp bounds as
/// scalars only).
torch::jit::Module deploy_script(const PlainNetImpl& net) {
  torch::jit::Module m("__torch__.rmnet.DeployNet");
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
        auto c = net.layer_as<ChannelClampImpl>(i);
        const auto lo = c->min.to(torch::kDouble), hi = c->max.to(torch::kDouble);
        const double lo0 = lo[0].item<double>(), hi0 = hi[0].item<double>();
        const bool uniform = lo.eq(lo0).all().item<bool>() && hi.eq(hi0).all().item<bool>();
        if (uniform) {
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
    }
  }
  src << "    return x\n";
  m.define(src.str());
  m.eval();
  return m;
}

}  // namespace

Runtime runtime_from_string(const std::string& s) {
  if (s == "auto") return Runtime::Auto;
  if (s == "eager") return Runtime::Eager;
  if (s == "deploy") return Runtime::Deploy;
  TORCH_CHECK(false, "unknown runtime '", s, "' (expected auto, eager or deploy)");
}

std::string to_string(Runtime r) {
  switch (r) {
    case Runtime::Auto: return "auto";
    case Runtime::Eager: return "eager";
    case Runtime::Deploy: return "deploy";
  }
  return "?";
}

DeployedNetImpl::DeployedNetImpl(const PlainNetImpl& net, DeployOptions options)
    : ModelImpl(net.options()), deploy_(std::move(options)) {
  const auto dt = deploy_.dtype();
  TORCH_CHECK(dt == torch::kFloat || dt == torch::kBFloat16 || dt == torch::kHalf || dt == torch::kDouble,
              "deploy: unsupported dtype ", dt, " (expected float32, bfloat16, float16 or float64)");
  metadata_ = net.metadata();
  source_params_ = count_parameters(net);
  torch::NoGradGuard no_grad;
  auto m = deploy_script(net);  // copies the weights; `net` is untouched
  m.to(deploy_.device(), dt);
  m.eval();
  if (deploy_.optimize()) {
    // Explicit freeze first: optimize_for_inference alone leaves an unfrozen module unconverted.
    auto frozen = torch::jit::freeze(m);
    module_ = torch::jit::optimize_for_inference(frozen);
  } else {
    module_ = m;
  }
}

torch::Tensor DeployedNetImpl::forward(torch::Tensor x) {
  x = x.to(deploy_.device(), deploy_.dtype());
  if (deploy_.channels_last() && x.dim() == 4) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  auto y = module_.forward({x}).toTensor();
  return y.scalar_type() == torch::kDouble ? y : y.to(torch::kFloat);
}

std::string DeployedNetImpl::graph() const {
  std::ostringstream os;
  os << *module_.get_method("forward").graph();
  return os.str();
}

DeployedNet deploy(const PlainNetImpl& net, const DeployOptions& options) { return DeployedNet(net, options); }

ModelPtr prepare_inference(const ModelPtr& model, Runtime runtime, const DeployOptions& options) {
  TORCH_CHECK(model, "prepare_inference: no model");
  auto* plain = dynamic_cast<PlainNetImpl*>(model.get());
  if (runtime == Runtime::Deploy)
    TORCH_CHECK(plain, "the deploy runtime runs plain networks only; '", model->options().arch(),
                "' is a residual model (convert it first, or use the eager runtime)");
  if (plain && runtime != Runtime::Eager) return deploy(*plain, options).ptr();
  model->to(options.device());
  model->eval();
  return model;
}

}  // namespace rmnet
