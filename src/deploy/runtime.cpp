#include "rmnet/deploy/runtime.h"

#include <sstream>

#include <torch/torch.h>

#include "rmnet/deploy/int8.h"
#include "rmnet/io/export.h"
#include "rmnet/quant/qnet.h"

namespace rmnet {

Runtime runtime_from_string(const std::string& s) {
  if (s == "auto") return Runtime::Auto;
  if (s == "eager") return Runtime::Eager;
  if (s == "deploy") return Runtime::Deploy;
  if (s == "int8") return Runtime::Int8;
  TORCH_CHECK(false, "unknown runtime '", s, "' (expected auto, eager, deploy or int8)");
}

std::string to_string(Runtime r) {
  switch (r) {
    case Runtime::Auto: return "auto";
    case Runtime::Eager: return "eager";
    case Runtime::Deploy: return "deploy";
    case Runtime::Int8: return "int8";
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
  auto m = to_torchscript(net);  // copies the weights; `net` is untouched
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
  if (auto* q = dynamic_cast<QuantizedNetImpl*>(model.get())) {  // INT8 (deploy/int8.h)
    TORCH_CHECK(runtime != Runtime::Deploy, "'", model->options().arch(),
                "' is a quantized network: run it with the int8 runtime (or eager, its float reference)");
    if (runtime == Runtime::Eager) {
      model->eval();
      return model;
    }
    TORCH_CHECK(options.device().is_cpu(), "the INT8 runtime runs on the CPU (asked for ", options.device(), ")");
    return std::make_shared<Int8NetImpl>(*q);
  }
  TORCH_CHECK(runtime != Runtime::Int8, "the int8 runtime runs quantized networks only; quantize '",
              model->options().arch(), "' first (rmnet quantize)");
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
