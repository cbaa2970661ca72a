// The torchscript runtime: the chain as a TorchScript function (rmnet::to_torchscript), frozen
// (weights become constants, BatchNorm folded, conv+ReLU fused) and passed through
// optimize_for_inference (on CPU: oneDNN convolutions with prepacked weights in oneDNN's blocked
// layout). What Python's torch.jit.freeze + optimize_for_inference builds, reached from C++.
#include <chrono>
#include <sstream>

#include <torch/torch.h>

#include "executors.h"
#include "rmnet/io/export.h"

namespace rmnet::detail {
namespace {

class TorchScriptExecutor : public Executor {
 public:
  TorchScriptExecutor(const PlainNetImpl& net, const DeployOptions& o) : options_(o) {
    torch::NoGradGuard no_grad;
    auto m = to_torchscript(net);  // copies the weights; `net` is untouched
    m.to(o.device(), o.dtype());
    m.eval();
    if (o.optimize()) {
      // Explicit freeze first: optimize_for_inference alone leaves an unfrozen module unconverted.
      auto frozen = torch::jit::freeze(m);
      module_ = torch::jit::optimize_for_inference(frozen);
    } else {
      module_ = m;
    }
  }

  torch::Tensor run(const torch::Tensor& x, std::vector<StepTiming>* timings) override {
    auto in = x;
    if (options_.channels_last()) in = in.contiguous(torch::MemoryFormat::ChannelsLast);
    const auto t0 = std::chrono::steady_clock::now();
    auto y = module_.forward({in}).toTensor();
    if (timings) timings->push_back(step_timing("torchscript graph (whole chain)", 0, 0, t0, 0, y));
    return y;
  }

  std::string plan() const override {
    std::ostringstream os;
    os << *module_.get_method("forward").graph();
    return os.str();
  }

  torch::jit::Module module_;

 private:
  DeployOptions options_;
};

}  // namespace

std::shared_ptr<Executor> make_torchscript_executor(const PlainNetImpl& net, const DeployOptions& options) {
  return std::make_shared<TorchScriptExecutor>(net, options);
}

torch::jit::Module* torchscript_module(Executor& exec) {
  auto* ts = dynamic_cast<TorchScriptExecutor*>(&exec);
  return ts ? &ts->module_ : nullptr;
}

}  // namespace rmnet::detail
