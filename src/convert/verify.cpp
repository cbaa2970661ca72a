#include "rmnet/convert/verify.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "rmnet/core.h"
#include "rmnet/ir/chain.h"
#include "../eval_mode_guard.h"

namespace rmnet {

int64_t default_input_size(const ModelImpl& model) {
  // A converted network is verified again at the size it was verified at.
  if (auto n = metadata_int(model.metadata(), "verify_input_size"); n && model.options().arch() == "plain") return *n;
  return model.input_size() <= 32 ? 32 : 64;
}

std::string VerifyReport::to_string() const {
  auto s = fmt::format("max abs error {:.3e}, max rel error {:.3e} (tolerance {:.0e}, {} input [{}]): {}",
                       max_abs_error, max_rel_error, tolerance, dtype, fmt::join(input_shape, ", "),
                       passed ? "equivalent" : "NOT EQUIVALENT");
  if (model_dtype_rel_error >= 0)
    s += fmt::format("; in {}: result vs source {:.3e}, source vs its float64 self {:.3e}", model_dtype,
                     model_dtype_rel_error, source_dtype_rel_error);
  return s;
}

VerifyReport verify_equivalence(ModelImpl& reference, ModelImpl& candidate, const VerifyOptions& options) {
  auto [dtype, device] = ir::dtype_device(reference);
  VerifyReport r;
  const int64_t size = options.input_size() > 0 ? options.input_size() : default_input_size(reference);
  TORCH_CHECK(options.batch() >= 1, "verification batch must be at least 1 (got ", options.batch(), ")");
  r.input_shape = {options.batch(), reference.options().in_channels(), size, size};
  r.dtype = dtype == torch::kDouble ? "float64" : (dtype == torch::kFloat ? "float32" : "other");
  r.tolerance = options.tolerance() > 0 ? options.tolerance() : (dtype == torch::kDouble ? 1e-10 : 1e-4);

  auto gen = at::make_generator<at::CPUGeneratorImpl>(options.seed());
  auto x = torch::empty(r.input_shape, torch::TensorOptions().dtype(torch::kDouble));
  x.normal_(0.0, options.scale(), gen);
  x = x.to(device, dtype);

  torch::NoGradGuard no_grad;
  torch::Tensor a, b;
  {
    detail::EvalModeGuard ga(reference), gb(candidate);
    a = reference.forward(x).to(torch::kDouble);
    const auto [cdtype, cdevice] = ir::dtype_device(candidate);
    b = candidate.forward(x.to(cdevice, cdtype)).to(torch::kDouble);
  }
  TORCH_CHECK(a.sizes() == b.sizes(), "verification: outputs differ in shape: ", a.sizes(), " vs ", b.sizes());
  r.max_abs_error = (a - b).abs().max().item<double>();
  const double ref = a.abs().max().item<double>();
  r.max_rel_error = r.max_abs_error / std::max(ref, 1e-30);
  r.passed = std::isfinite(r.max_rel_error) && r.max_rel_error <= r.tolerance;
  return r;
}

}  // namespace rmnet
