#pragma once
// Shared test helpers.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <string>

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "rmnet/convert/rm.h"
#include "rmnet/data/dataset.h"
#include "rmnet/deploy/runtime.h"
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

/// random_model converted with its BatchNorms kept (the form pruning works on), in eval mode; a
/// conversion that is not equivalent throws with its report.
inline PlainNet plain_bn_of(const std::string& arch, torch::ScalarType dtype = torch::kDouble) {
  auto r = convert(*random_model(arch, dtype), ConvertOptions().keep_bn(true));
  TORCH_CHECK(r.report.passed, arch, ": ", r.report.to_string());
  r.plain->eval();
  return r.plain;
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
/// A batch-tiled profile (DeployOptions::batch_tiling) against the untiled one of the same input:
/// the same steps, MACs and output shapes (checked); returns how many steps it names as tiled.
inline size_t tiled_steps(const std::vector<StepTiming>& tiled, const std::vector<StepTiming>& whole) {
  EXPECT_EQ(tiled.size(), whole.size());
  size_t named = 0;
  for (size_t k = 0; k < std::min(tiled.size(), whole.size()); ++k) {
    EXPECT_EQ(tiled[k].macs, whole[k].macs) << tiled[k].name;
    EXPECT_EQ(tiled[k].output_shape, whole[k].output_shape) << tiled[k].name;
    named += tiled[k].name.find("(the batch 1 image at a time)") != std::string::npos;
  }
  return named;
}

inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

/// A tiny learnable data set: 4 classes of 1x12x12 uint8 images, class c has a bright 6x6
/// quadrant c (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) on noise in [0, 60).
inline std::shared_ptr<TensorDataset> quadrants(int64_t n, uint64_t seed) {
  torch::manual_seed(seed);
  auto images = torch::randint(0, 60, {n, 1, 12, 12}, torch::kUInt8);
  auto labels = torch::randint(0, 4, {n}, torch::kLong);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t c = labels[i].item<int64_t>(), y = (c / 2) * 6, x = (c % 2) * 6;
    images[i].slice(1, y, y + 6).slice(2, x, x + 6).add_(150);
  }
  return std::make_shared<TensorDataset>(images, labels, 4);
}

inline std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("rmnet_test_" + std::to_string(::getpid()) + "_" + name))
      .string();
}

}  // namespace rmnet::test
