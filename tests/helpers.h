#pragma once
// Shared test helpers.
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include <torch/torch.h>

#include "rmnet/convert/rm.h"
#include "rmnet/models/registry.h"

namespace rmnet::test {

/// A model with random weights and random BN statistics/affine parameters (and random tracked
/// block statistics when track_stats), in the given dtype: so that every identity-BN or
/// BN-folding mistake shows in the outputs.
inline ModelPtr random_model(const std::string& arch, torch::ScalarType dtype = torch::kFloat,
                             bool track_stats = true, int64_t num_classes = 10, bool relu6 = true,
                             uint64_t seed = 1) {
  torch::manual_seed(seed);
  auto m = create_model(ModelOptions(arch).num_classes(num_classes).track_block_stats(track_stats).relu6(relu6));
  randomize_batchnorm(*m, seed + 100);
  m->to(dtype);
  m->eval();
  return m;
}

inline double tolerance_for(torch::ScalarType dtype) { return dtype == torch::kDouble ? 1e-10 : 1e-4; }

/// Max relative difference (to the largest |a|) between two models' outputs on x.
inline double rel_diff(ModelImpl& a, ModelImpl& b, const torch::Tensor& x) {
  torch::NoGradGuard g;
  a.eval();
  b.eval();
  auto ya = a.forward(x).to(torch::kDouble), yb = b.forward(x).to(torch::kDouble);
  return (ya - yb).abs().max().item<double>() / ya.abs().max().item<double>();
}

/// The message (without backtrace) of the c10::Error `f` throws, or "" if it throws none.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

inline std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("rmnet_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

}  // namespace rmnet::test
