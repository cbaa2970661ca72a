#include "rmnet/models/profile.h"

#include <cmath>
#include <unordered_map>

#include <ATen/record_function.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "../eval_mode_guard.h"
#include "rmnet/models/model.h"

namespace rmnet {
namespace {

struct Call {
  std::string kind;
  std::vector<int64_t> weight_shape;
  const void* weight = nullptr;
  int64_t bias_numel = 0;
  std::vector<int64_t> out_shape;
};

// RecordFunction callbacks are plain function pointers: the recorder is thread-local state,
// set only while profile_forward runs on this thread.
thread_local std::vector<Call>* t_calls = nullptr;

thread_local int t_linear_depth = 0;

bool is_matmul(const std::string& name) { return name == "aten::addmm" || name == "aten::mm"; }

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  if (!t_calls) return nullptr;
  const std::string name = fn.name();
  const bool conv = name == "aten::conv2d", linear = name == "aten::linear";
  // LibTorch's Linear may reach aten::addmm / aten::mm without an aten::linear record; those
  // count as linear layers unless they run inside a recorded aten::linear.
  const bool matmul = is_matmul(name) && t_linear_depth == 0;
  if (!conv && !linear && !matmul) return nullptr;
  const auto inputs = fn.inputs();
  Call c;
  c.kind = conv ? "conv" : "linear";
  if (conv || linear) {
    if (inputs.size() < 2 || !inputs[1].isTensor()) return nullptr;
    const auto& w = inputs[1].toTensor();  // [out, in/groups, kh, kw] or [out, in]
    c.weight_shape = w.sizes().vec();
    c.weight = w.data_ptr();
    if (inputs.size() > 2 && inputs[2].isTensor()) c.bias_numel = inputs[2].toTensor().numel();
    if (linear) ++t_linear_depth;
  } else {
    // addmm(bias, x, w^T) or mm(x, w^T): w^T is [in, out]
    const size_t wi = name == "aten::addmm" ? 2 : 1;
    if (inputs.size() <= wi || !inputs[wi].isTensor()) return nullptr;
    const auto& wt = inputs[wi].toTensor();
    if (wt.dim() != 2) return nullptr;
    c.weight_shape = {wt.size(1), wt.size(0)};
    c.weight = wt.data_ptr();
    if (wi == 2 && inputs[0].isTensor()) c.bias_numel = inputs[0].toTensor().numel();
  }
  t_calls->push_back(std::move(c));
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext*) {
  if (!t_calls || t_calls->empty()) return;
  const std::string name = fn.name();
  if (name == "aten::linear") --t_linear_depth;
  if (name != "aten::conv2d" && name != "aten::linear" && !(is_matmul(name) && t_linear_depth == 0)) return;
  const auto& outs = fn.outputs();
  // calls nest in order, so the last call without an output is this one
  for (auto it = t_calls->rbegin(); it != t_calls->rend(); ++it)
    if (it->out_shape.empty()) {
      if (!outs.empty() && outs[0].isTensor()) it->out_shape = outs[0].toTensor().sizes().vec();
      break;
    }
}

int64_t product(const std::vector<int64_t>& v, size_t from) {
  int64_t p = 1;
  for (size_t i = from; i < v.size(); ++i) p *= v[i];
  return p;
}

}  // namespace

std::string ModelCost::to_string() const {
  return fmt::format("{} params, {}MACs", format_count(static_cast<double>(params)),
                     format_count(static_cast<double>(flops)));
}

std::string format_count(double v, int precision) {
  const char* units[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (std::abs(v) >= 1000.0 && u < 4) {
    v /= 1000.0;
    ++u;
  }
  return fmt::format("{:.{}f} {}", v, u == 0 ? 0 : precision, units[u]);
}

ModelCost profile_forward(torch::nn::Module& m, const std::function<torch::Tensor(torch::Tensor)>& forward,
                          int64_t in_channels, int64_t input_size) {
  TORCH_CHECK(in_channels > 0, "profile: in_channels must be positive (got ", in_channels, ")");
  TORCH_CHECK(input_size > 0, "profile: input_size must be positive (got ", input_size, ")");
  std::unordered_map<const void*, std::string> names;
  torch::TensorOptions topt = torch::TensorOptions().dtype(torch::kFloat);
  bool first = true;
  for (const auto& p : m.named_parameters(true)) {
    if (first) {
      topt = topt.dtype(p.value().scalar_type()).device(p.value().device());
      first = false;
    }
    auto key = p.key();
    const auto dot = key.rfind('.');
    names.emplace(p.value().data_ptr(), dot == std::string::npos ? key : key.substr(0, dot));
  }

  std::vector<Call> calls;
  {
    detail::EvalModeGuard eval(m);
    torch::NoGradGuard no_grad;
    auto x = torch::zeros({1, in_channels, input_size, input_size}, topt);
    t_calls = &calls;
    t_linear_depth = 0;
    auto handle = at::addThreadLocalCallback(
        at::RecordFunctionCallback(on_start, on_end).needsInputs(true).needsOutputs(true).scopes(
            {at::RecordScope::FUNCTION}));
    try {
      forward(x);
    } catch (...) {
      at::removeCallback(handle);
      t_calls = nullptr;
      throw;
    }
    at::removeCallback(handle);
    t_calls = nullptr;
  }

  ModelCost cost;
  for (const auto& c : calls) {
    LayerCost l;
    auto it = names.find(c.weight);
    l.name = it == names.end() ? "?" : it->second;
    l.kind = c.kind;
    l.params = product(c.weight_shape, 0) + c.bias_numel;
    l.out_shape = c.out_shape;
    TORCH_CHECK(!c.out_shape.empty(), "profile: no output recorded for ", c.kind, " '", l.name, "'");
    if (c.kind == "conv") {
      // out_c * out_h * out_w outputs, each (in_c / groups) * kh * kw MACs; the weight is
      // [out_c, in_c / groups, kh, kw], so per output element: product(weight[1:]).
      l.flops = product(c.out_shape, 1) * product(c.weight_shape, 1);
    } else {
      // outputs (all but batch) times in_features
      l.flops = product(c.out_shape, 1) * c.weight_shape.at(1);
    }
    cost.flops += l.flops;
    cost.layers.push_back(std::move(l));
  }
  cost.params = count_parameters(m);
  return cost;
}

ModelCost profile_model(torch::nn::Module& m, int64_t in_channels, int64_t input_size) {
  auto* model = dynamic_cast<ModelImpl*>(&m);
  TORCH_CHECK(model, "profile_model: the module is not an rmnet model; use profile_forward with its forward");
  return profile_forward(m, [model](torch::Tensor x) { return model->forward(std::move(x)); }, in_channels,
                         input_size);
}

int64_t count_flops(torch::nn::Module& m, int64_t in_channels, int64_t input_size) {
  return profile_model(m, in_channels, input_size).flops;
}

}  // namespace rmnet
