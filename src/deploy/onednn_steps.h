#pragma once
// Internal: the onednn runtime's compiled chain (see onednn.cpp): the steps and the executor that
// holds them. onednn_plan.cpp compiles a PlainNet's layers into steps (compile, activation_step);
// onednn.cpp prepacks the conv weights per input shape and runs the steps.
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "executors.h"
#include "rmnet/deploy/shortcuts.h"

namespace rmnet::detail {

enum class StepKind { Conv, Affine, ReLU, Clamp, ClampChannels, PReLU, MaxPool, MeanFlatten, AvgPool, Flatten, Linear, SE };

struct Step {
  StepKind kind = StepKind::ReLU;
  size_t first = 0, last = 0;  // plain layers executed
  // Conv
  torch::Tensor weight, bias;
  int64_t in = 0, out = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  std::string attr = "none";
  std::vector<double> scalars;                      // post-op scalars (hardtanh bounds)
  c10::List<std::optional<at::Scalar>> op_scalars;  // the same, built once for the operator
  size_t conv_index = 0;  // Conv, and (onednn) Linear: its entry in the weights packed per input shape
  // Clamp (uniform): lo/hi; ClampChannels: lo_t/hi_t [1, C, 1, 1]; PReLU: slope [C];
  // Affine: scale/shift [1, C, 1, 1]
  double lo = 0.0, hi = 0.0;
  torch::Tensor lo_t, hi_t, slope, scale, shift;
  // Linear: weight/bias; SE: w1, b1, w2, b2, scaled
  torch::Tensor w1, b1, w2, b2;
  int64_t scaled = 0;
  std::string name;
  bool fused_cudnn = false;  // cudagraph: Conv + ReLU as one cudnn_convolution_relu
  // Dirac shortcut (direct path, find_dirac_shortcuts): a conv whose input a later merge conv adds
  // (keeps_input), convs that no longer compute `copies` Dirac copies of it, and the merge conv
  // (shortcut_from: the keeping step; shortcut_act: "relu" where the copies went through a ReLU
  // the kept input has not, else "none")
  bool keeps_input = false;
  bool on_kept = false;  // a projection shortcut's 1x1 conv: runs on the kept input, B sums into its output
  int64_t copies = 0;
  int64_t shortcut_from = -1;
  std::string shortcut_act = "none";
  torch::Tensor shortcut_scale;  // an identity merge's factor per channel of the added input [1, C, 1, 1] (undefined: 1)
};

/// One conv's weights as packed for an input shape: oneDNN's blocked layout for the convolution,
/// or, for a tiny map (DeployOptions::small_map_gemm), the dense input-to-output matrix
/// [Ho*Wo*Cout, H*W*Cin] (channels-last order on both sides) and the bias repeated per position.
/// A Linear step's entry holds its weight packed for the batch (mkldnn::_reorder_linear_weight).
struct PackedConv {
  torch::Tensor weight, bias;
  bool gemm = false;
  int64_t ho = 0, wo = 0;
};
using Packed = std::vector<PackedConv>;

/// Whether a conv (groups 1, k x k kernel) from an h x w map to an ho x wo one runs as one GEMM with
/// its dense input-to-output matrix (DeployOptions::small_map_gemm): the matrix is at most twice
/// the weights. Shared by the float and the INT8 runtimes.
inline bool tiny_map(int64_t h, int64_t w, int64_t ho, int64_t wo, int64_t k) { return h * w * ho * wo <= 2 * k * k; }

/// The dense matrix of conv weight `w` [Cout, Cin, k, k] (groups 1) on an h x w input:
/// y[(a, b, co)] = sum over (i, j, ci) of T[(a, b, co), (i, j, ci)] x[(i, j, ci)].
torch::Tensor conv_as_matrix(const torch::Tensor& w, int64_t h, int64_t wd, int64_t stride, int64_t padding);

/// The chain of `net` compiled into steps (onednn_plan.cpp), weights in `dtype` on the CPU: Conv
/// [+ BN folded] [+ activation as a post-op where oneDNN expresses it exactly], the rest as in-place
/// or ATen steps. Shared by the onednn and the CUDA-graph executors.
std::vector<Step> compile_chain(const PlainNetImpl& net, torch::ScalarType dtype);

/// Dirac shortcuts (DeployOptions::dirac_shortcuts, src/deploy/shortcuts.cpp): finds runs of
/// convs A, [M...], B whose reserved channels are exact Dirac copies of A's input merged into B's
/// outputs with weight 1 (an RM block), removes those rows and columns from the convs' weights, and
/// marks A (keeps_input) and B (shortcut_from: adds A's input before its activation). Returns how
/// many it found. The executor that runs the result must honour the marks (dnnl.cpp does). With
/// `found`, appends what each shortcut is in the source network's layers (deploy/shortcuts.h).
size_t find_dirac_shortcuts(std::vector<Step>& steps, std::vector<DiracShortcut>* found = nullptr);

/// Channel indices as a Long tensor (for index_select / index_copy_).
inline torch::Tensor index_of(const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); }

/// " + relu", " + clamp[lo, hi]" or "" for a conv step's post-op (its name's suffix).
std::string act_name(const Step& s);

/// Makes a clamp [lo, hi], the same on every channel, the post-op of `conv` (whose attr is "none")
/// where oneDNN's eltwise post-ops express it exactly: nothing for (-inf, inf), "relu" for [0, inf),
/// "hardtanh" for finite bounds. False (conv unchanged) otherwise: the clamp stays a step.
bool clamp_as_post_op(Step& conv, double lo, double hi);

/// A ClampChannels step's name for per-channel bounds `lo`, `hi`.
std::string clamp_channels_name(const torch::Tensor& lo, const torch::Tensor& hi);

/// A ReLU, clamp or PReLU layer as the simplest exact step: ReLU, a uniform Clamp (lo, hi), a
/// per-channel clamp, or PReLU.
Step activation_step(const PlainNetImpl& net, size_t i, torch::ScalarType dtype);

/// Runs one step that is not a Conv with ATen ops on `x`'s device, in place where `owned` (x is
/// the executor's own tensor) and sets `owned`; `macs` receives a Linear's multiply-accumulates.
void run_aten_step(const Step& s, torch::Tensor& x, bool& owned, int64_t* macs);

/// A Conv step's weights packed for `input_sizes` by LibTorch's mkldnn::_reorder_convolution_weight,
/// and the step (its activation post-op included) run by mkldnn::_convolution_pointwise on them.
torch::Tensor libtorch_pack_conv(const Step& s, at::IntArrayRef input_sizes);
torch::Tensor libtorch_conv(const Step& s, const torch::Tensor& x, const torch::Tensor& packed_weight);

class OneDnnExecutor : public Executor {
 public:
  OneDnnExecutor(const PlainNetImpl& net, const DeployOptions& o);

  torch::Tensor run(const torch::Tensor& x0, std::vector<StepTiming>* timings) override;

  std::string plan() const override;

 private:
  // ---- compilation (onednn_plan.cpp: compile_chain)
  void compile(const PlainNetImpl& net);

  // ---- prepacking (onednn.cpp)
  /// The prepacked conv weights for an input of shape `sizes` (packed on first use, cached).
  std::shared_ptr<const Packed> packed_for(at::IntArrayRef sizes);

  /// Shape inference through the chain; every conv's weights reordered for its input shape.
  Packed pack(const std::vector<int64_t>& shape) const;

  DeployOptions options_;
  torch::ScalarType dtype_;
  std::vector<Step> steps_;
  size_t num_convs_ = 0;
  std::mutex mutex_;
  std::list<std::pair<std::vector<int64_t>, std::shared_ptr<const Packed>>> cache_;
};

}  // namespace rmnet::detail
