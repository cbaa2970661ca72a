#pragma once
// The precision policy (`--dtype auto`): bfloat16 where it pays and keeps the predictions, float32
// otherwise, decided per model and said aloud.
//
// bf16 pays only where the CPU computes it natively (AVX512_BF16 or AMX-BF16): elsewhere oneDNN
// emulates it and it is slower than float32. It keeps the predictions when the network's top-1 in
// bf16 agrees with its top-1 in float32 on a check set at least `min_agreement` of the time (99.9%
// by default). Only the deployed float runtimes (onednn, torchscript) take bf16 weights; residual
// models run eagerly in float32 and quantized networks run INT8, so auto leaves them as they are.
// float32 stays the default everywhere (docs/BENCHMARKS.md, "Precision policy", says why). With
// 99.9%, a check set of fewer than 1000 images must agree on every image.
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include <torch/arg.h>
#include <torch/types.h>

#include "rmnet/deploy/runtime.h"
#include "rmnet/models/model.h"

namespace rmnet {

/// The compute precision asked for: float32, bfloat16, or the policy's choice (Auto).
enum class Precision { F32, BF16, Auto };
/// "fp32" (or "f32", "float32"), "bf16" (or "bfloat16"), "auto"; anything else throws naming the value.
Precision precision_from_string(const std::string& s);
/// "fp32", "bf16" or "auto".
std::string to_string(Precision p);

/// Whether this CPU computes bfloat16 natively: AVX512_BF16 (with AVX-512 state enabled by the OS)
/// or AMX-BF16 (with tile state enabled). False off x86-64.
bool cpu_has_native_bf16();

struct PrecisionOptions {
  /// Lowest top-1 agreement of bf16 with float32 on the check set for bf16 to be chosen.
  TORCH_ARG(double, min_agreement) = 0.999;
  /// Whether the CPU runs bf16 natively; nullopt: detect it (cpu_has_native_bf16).
  TORCH_ARG(std::optional<bool>, native_bf16) = std::nullopt;
  /// Images per forward while checking.
  TORCH_ARG(int64_t, batch_size) = 64;
};

/// What the policy chose and why.
struct PrecisionChoice {
  torch::ScalarType dtype = torch::kFloat;  ///< the dtype to deploy with (DeployOptions::dtype)
  bool native_bf16 = false;                 ///< the CPU runs bf16 natively (as detected or given)
  double agreement = -1.0;  ///< top-1 agreement of bf16 with float32 on the check set; -1: not measured
  int64_t checked = 0;      ///< images in the check set (0: not measured)
  std::string reason;       ///< one line, e.g. "bf16: native on this CPU, top-1 agreement 1.0000 on 256 images"
  /// "fp32" or "bf16".
  std::string dtype_name() const;
  /// {"dtype", "native_bf16", "agreement", "checked", "reason"} as a JSON object (the "dtype_choice"
  /// of `rmnet eval --json` and `rmnet bench --json`).
  std::string to_json() const;
};

/// Throws, starting with `what`, unless the prepared model (prepare_inference) computes in `dtype`:
/// bf16 needs a deployed float runtime; a model run eagerly or on the INT8 runtime is refused by name.
void check_runs_in(const ModelImpl& prepared, torch::ScalarType dtype, const std::string& what);

/// Chooses float32 or bfloat16 for running `model` with `options` (runtime, device; its dtype is
/// ignored): bf16 if the model runs on a deployed float runtime (a plain network on onednn or
/// torchscript) on the CPU, the CPU runs bf16 natively, and the top-1 predictions of the bf16
/// deployment agree with the float32 one's on `check` (float images [N, C, H, W], N >= 1) at
/// least min_agreement of the time; float32 otherwise. `model` is not modified.
PrecisionChoice choose_precision(const ModelPtr& model, const torch::Tensor& check, const DeployOptions& options,
                                 const PrecisionOptions& policy = PrecisionOptions());
/// The same with the check set made only when it is measured (not for a residual or quantized
/// model, another device, or a CPU without native bf16): `check` is called at most once.
PrecisionChoice choose_precision(const ModelPtr& model, const std::function<torch::Tensor()>& check,
                                 const DeployOptions& options, const PrecisionOptions& policy = PrecisionOptions());

/// `check` images for a model without data at hand: `count` deterministic standard-normal
/// images of the model's input channels at `size` x `size` (a weak proxy for real images: prefer
/// a sample of the data the model will see).
torch::Tensor synthetic_check_images(const ModelImpl& model, int64_t size, int64_t count = 256);

}  // namespace rmnet
