#pragma once
// The deploy runtime: a plain network compiled for fast inference.
//
// A plain network is a chain, so it is written out as a TorchScript function of torch.conv2d /
// relu / ... calls (rmnet::to_torchscript), then frozen (weights become constants, BatchNorm is
// folded, conv+ReLU fused) and passed through optimize_for_inference (on CPU: oneDNN convolutions
// with prepacked weights, the whole chain kept in oneDNN's blocked layout). That is PyTorch's
// best CPU path, reached from C++ without Python. bench, eval and the Classifier use it for
// plain models by default; residual models run eagerly.
#include <string>

#include <torch/arg.h>
#include <torch/script.h>
#include <torch/types.h>

#include "rmnet/models/model.h"
#include "rmnet/models/plain.h"

namespace rmnet {

/// How a model runs for inference.
enum class Runtime {
  Auto,    ///< Deploy for plain networks, Eager for residual models
  Eager,   ///< the LibTorch module's own forward
  Deploy,  ///< frozen + optimized TorchScript of the chain (plain networks only)
  Int8,    ///< the INT8 executor (deploy/int8.h; quantized networks only; Auto picks it for them)
};
Runtime runtime_from_string(const std::string& s);  ///< "auto", "eager", "deploy", "int8"
std::string to_string(Runtime r);

struct DeployOptions {
  /// Device the compiled module runs on.
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
  /// Weight and compute dtype (float32, bfloat16, float16); inputs are cast to it and the
  /// output is returned as float32.
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat;
  /// Feed inputs in channels-last memory format.
  TORCH_ARG(bool, channels_last) = false;
  /// torch::jit::freeze + optimize_for_inference; false keeps the plain scripted chain.
  TORCH_ARG(bool, optimize) = true;
};

/// A plain network compiled for inference. It is a ModelImpl, so evaluate(), predict() and the
/// Classifier take it like any model; it has no trainable parameters (its weights are constants
/// of the compiled graph) and always computes in eval semantics. The source net is not modified.
class DeployedNetImpl : public ModelImpl {
 public:
  DeployedNetImpl(const PlainNetImpl& net, DeployOptions options = DeployOptions());
  torch::Tensor forward(torch::Tensor x) override;
  std::string family() const override { return "plain"; }
  const DeployOptions& deploy_options() const { return deploy_; }
  /// The compiled TorchScript module.
  torch::jit::Module& module() { return module_; }
  /// Parameters of the source network (the compiled module has none of its own).
  int64_t source_parameters() const { return source_params_; }
  /// The optimized forward graph, for inspection.
  std::string graph() const;

 private:
  DeployOptions deploy_;
  torch::jit::Module module_;
  int64_t source_params_ = 0;
};
TORCH_MODULE(DeployedNet);

/// Compiles a plain network (see DeployedNetImpl).
DeployedNet deploy(const PlainNetImpl& net, const DeployOptions& options = DeployOptions());

/// The model to run for inference under `runtime`: Deploy/Auto on a plain network -> a
/// DeployedNet; Eager, or Auto on a residual model -> `model` itself, moved to the options'
/// device. Deploy on a residual model is refused by name. A quantized network (quant/qnet.h):
/// Auto/Int8 -> the INT8 executor (CPU), Eager -> its float reference forward; Int8 on a float
/// model is refused.
ModelPtr prepare_inference(const ModelPtr& model, Runtime runtime, const DeployOptions& options = DeployOptions());

}  // namespace rmnet
