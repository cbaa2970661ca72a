#pragma once
// Inference speed with a stated protocol (the paper's: batch 128, 50 warm-up iterations, 50
// timed ones). Each timed iteration is one forward of a [batch, C, S, S] random batch, under
// NoGradGuard, synchronised on CUDA; images/s = batch * iters / total time.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/types.h>

#include "rmnet/deploy/precision.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/models/model.h"

namespace rmnet {

struct BenchOptions {
  /// Images per forward (the paper: 128).
  TORCH_ARG(int64_t, batch) = 128;
  /// Square input size; 0 picks the model's default (32 CIFAR-style, 224 ImageNet-style).
  TORCH_ARG(int64_t, input_size) = 0;
  /// Untimed forwards before timing (the paper: 50).
  TORCH_ARG(int64_t, warmup) = 50;
  /// Timed forwards (the paper: 50).
  TORCH_ARG(int64_t, iters) = 50;
  /// How the network is prepared for inference (prepare_inference): runtime, device, dtype,
  /// channels_last, buffer_cache_mb and the rest of DeployOptions. The accessors below read and set
  /// these same fields.
  TORCH_ARG(DeployOptions, deploy) = DeployOptions();
  /// Also time every step of a deployed network (BenchResult::steps), after the timed forwards.
  TORCH_ARG(bool, profile) = false;
  /// The precision policy (deploy/precision.h, `--dtype auto`) instead of dtype: per model, bf16
  /// where the CPU runs it natively and the bf16 deployment's top-1 agrees with float32's on
  /// check_images synthetic images at the bench input size >= 99.9% of the time, else float32.
  TORCH_ARG(bool, auto_precision) = false;
  TORCH_ARG(int64_t, check_images) = 256;

 public:
  const torch::Device& device() const { return deploy_.device(); }
  BenchOptions& device(const torch::Device& d) { deploy_.device(d); return *this; }
  /// float32, or bfloat16/float16: autocast for eager models, weights cast for deployed ones.
  const torch::ScalarType& dtype() const { return deploy_.dtype(); }
  BenchOptions& dtype(torch::ScalarType t) { deploy_.dtype(t); return *this; }
  /// Inputs (and eager models' weights) in channels-last memory format.
  const bool& channels_last() const { return deploy_.channels_last(); }
  BenchOptions& channels_last(bool v) { deploy_.channels_last(v); return *this; }
  /// Auto: the onednn runtime for plain networks on the CPU (torchscript elsewhere), int8 for
  /// quantized networks, eager for residual models.
  const Runtime& runtime() const { return deploy_.runtime(); }
  BenchOptions& runtime(Runtime r) { deploy_.runtime(r); return *this; }
  /// Deployed networks: activation buffers kept between forwards (DeployOptions::buffer_cache_mb).
  const int64_t& buffer_cache_mb() const { return deploy_.buffer_cache_mb(); }
  BenchOptions& buffer_cache_mb(int64_t mb) { deploy_.buffer_cache_mb(mb); return *this; }
};

struct BenchResult {
  std::string name;     ///< label (file name or arch)
  std::string arch, family;
  std::string runtime;  ///< "onednn", "torchscript" or "eager" (what actually ran)
  std::string device, dtype;  ///< dtype: "fp32", "bf16" or "fp16" (what ran)
  /// BenchOptions::auto_precision: the policy's choice and measurement.
  std::optional<PrecisionChoice> precision;
  int64_t batch = 0, input_size = 0, warmup = 0, iters = 0, threads = 0;
  double images_per_second = 0.0;
  double latency_p50_ms = 0.0;  ///< per batch
  double latency_p90_ms = 0.0;
  double latency_mean_ms = 0.0;
  int64_t params = 0;
  int64_t flops = 0;            ///< MACs per image (conv + linear), see models/profile.h
  double gflops_per_second = 0.0;  ///< achieved GMACs/s: flops * images/s / 1e9
  /// Peak memory during the run: CUDA, the caching allocator's peak allocated bytes; CPU, the
  /// process's peak resident set (Linux VmHWM, reset before each model where the kernel allows).
  int64_t peak_memory_bytes = 0;
  std::string peak_memory_kind;  ///< "cuda_allocated" or "cpu_rss"
  /// With BenchOptions::profile on a deployed network: each step's mean time (ms per forward).
  std::vector<StepTiming> steps;
};

/// Progress: (phase "warmup"/"timed", done, total).
using BenchProgress = std::function<void(const std::string&, int64_t, int64_t)>;

/// Default input size for timing a model: 32 for CIFAR-style models, 224 for ImageNet-style.
int64_t bench_input_size(const ModelImpl& model);

/// Benchmarks one model. The model is prepared for inference (prepare_inference) per
/// options.runtime; the source model is not modified except for device placement of eager ones.
BenchResult benchmark(const ModelPtr& model, const std::string& name, const BenchOptions& options,
                      const BenchProgress& progress = nullptr);

/// JSON of a run: {"options": {...}, "machine": {...}, "models": [{"name", "images_per_second",
/// ..., "ratio_to_first"}]}.
std::string bench_json(const std::vector<BenchResult>& results, const BenchOptions& options);

/// A side-by-side text table with the ratio of each model's images/s to the first's.
std::string bench_table(const std::vector<BenchResult>& results);

/// The machine's measured convolution peak in GMAC/s (multiply-accumulates): the best of 3x3
/// convolutions of 64, 128 and 256 channels (batch 32, 16x16, ReLU fused, weights prepacked) on
/// the onednn runtime in `dtype`, with the current thread count. Takes about a second.
double measure_conv_peak(torch::ScalarType dtype = torch::kFloat);

/// The per-step profile of one result (BenchOptions::profile): time, share, MACs and GMAC/s per
/// step, and where `conv_peak_gmacs` > 0 the fraction of that peak each convolution reaches.
std::string profile_table(const BenchResult& result, double conv_peak_gmacs = 0.0);

}  // namespace rmnet
