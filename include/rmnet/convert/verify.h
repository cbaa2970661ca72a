#pragma once
// Equivalence check of two models on the same random inputs.
#include <string>
#include <vector>

#include <torch/arg.h>

#include "rmnet/models/model.h"

namespace rmnet {

struct VerifyOptions {
  /// Batch size of the random inputs.
  TORCH_ARG(int64_t, batch) = 2;
  /// Spatial size of the random inputs (square); 0 picks 32 for CIFAR-style models and 64
  /// for ImageNet-style ones (ModelImpl::input_size; a converted network: its verification size).
  TORCH_ARG(int64_t, input_size) = 0;
  /// Standard deviation of the Gaussian inputs: large, so that ReLU6 clips and BN statistics matter.
  TORCH_ARG(double, scale) = 10.0;
  TORCH_ARG(uint64_t, seed) = 0;
  /// Allowed relative error (max |a-b| / max |a|); 0 picks 1e-4 for float32 and 1e-10 for float64.
  TORCH_ARG(double, tolerance) = 0.0;
};

struct VerifyReport {
  double max_abs_error = 0.0;
  double max_rel_error = 0.0;  ///< max |a - b| / max |a|
  double tolerance = 0.0;
  bool passed = false;
  std::vector<int64_t> input_shape;
  std::string dtype;
  /// Set by convert() for a source that is not float64 (the check above then ran in float64): the
  /// result's deviation from the source in the source's dtype, and the source's own deviation
  /// from its float64 copy on the same inputs, i.e. what that dtype can resolve. Negative: unset.
  std::string model_dtype;
  double model_dtype_rel_error = -1.0;
  double source_dtype_rel_error = -1.0;
  std::string to_string() const;
};

/// Runs both models in eval mode under NoGradGuard on the same inputs and compares outputs. The
/// inputs are drawn in float64 and given to each model in its own dtype (so a float32 model can be
/// compared with its float64 copy); `dtype` and the default tolerance are the reference's.
/// Training flags are restored afterwards; nothing else is changed.
VerifyReport verify_equivalence(ModelImpl& reference, ModelImpl& candidate,
                                const VerifyOptions& options = VerifyOptions());

/// The default verification input size for a model (see VerifyOptions::input_size).
int64_t default_input_size(const ModelImpl& model);

}  // namespace rmnet
