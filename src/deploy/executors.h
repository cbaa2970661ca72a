#pragma once
// Internal: the executors behind DeployedNet (one file each).
#include <cstdlib>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rmnet/deploy/runtime.h"

namespace rmnet::detail {

/// Frozen + optimized TorchScript of the chain (src/deploy/torchscript.cpp).
std::shared_ptr<Executor> make_torchscript_executor(const PlainNetImpl& net, const DeployOptions& options);
/// The TorchScript module of an executor made by make_torchscript_executor (nullptr otherwise).
torch::jit::Module* torchscript_module(Executor& exec);

/// rmnet's chain executor over fused oneDNN operators (src/deploy/onednn.cpp; compiled by
/// src/deploy/onednn_plan.cpp, declared in src/deploy/onednn_steps.h).
std::shared_ptr<Executor> make_onednn_executor(const PlainNetImpl& net, const DeployOptions& options);
/// The same chain through oneDNN's own API (src/deploy/dnnl.cpp): the onednn runtime where
/// onednn_direct_available() and DeployOptions::onednn_direct. Throws in a build without libdnnl.
std::shared_ptr<Executor> make_dnnl_executor(const PlainNetImpl& net, const DeployOptions& options);
/// Whether the linked libdnnl runs bfloat16 natively on this CPU (avx512_core_bf16 or AMX); where
/// it does not, it emulates bf16 and the onednn runtime keeps bf16 on LibTorch's operators.
bool dnnl_native_bf16();

/// One INT8 convolution of the INT8 executor as a oneDNN primitive for one input shape (the direct
/// path, src/deploy/dnnl.cpp): u8 channels-last in (scale x_scale, zero point x_zp), s8 weights with
/// per-channel scales, float32 bias; u8 out (out_scale, out_zp) or float32 (float_out); ReLU fused.
struct QConvParams {
  torch::Tensor weight_s8, w_scale, bias;  // [Cout, Cin/g, k, k] int8; [Cout] float32; [Cout] float32
  double x_scale = 1, out_scale = 1;
  int64_t x_zp = 0, out_zp = 0, stride = 1, padding = 0, groups = 1;
  bool relu = false, float_out = false;
  /// Defined: the conv also adds a u8 tensor `a` of its output's shape (run_add's second argument),
  /// per output channel o as add_factor[o] * (a - add_zp), before the ReLU and the quantization
  /// (a Dirac shortcut's identity merge whose copies reached it as the block input's codes).
  /// [Cout] float32, every factor >= 0 (0: the row adds nothing); u8 output only.
  torch::Tensor add_factor;
  int64_t add_zp = 0;
  /// The conv also adds a float32 tensor of its output's shape, in output code units (run_add's
  /// second argument), before the ReLU and the quantization (a projection shortcut's 1x1 conv). u8
  /// output only; not with add_factor.
  bool add_float = false;
};
/// A oneDNN primitive of the INT8 executor made for one input shape (a QConv, a u8 max-pool).
class U8Primitive {
 public:
  virtual ~U8Primitive() = default;
  /// The op on `x` (u8 [N, C, H, W] of the shape it was made for, any layout), channels-last out.
  virtual torch::Tensor run(const torch::Tensor& x) const = 0;
  /// A QConv made with QConvParams::add_factor or add_float: the op on `x` with `a` (u8 or float32,
  /// the output's shape) added.
  virtual torch::Tensor run_add(const torch::Tensor& x, const torch::Tensor& a) const;
};
/// The primitive for input `sizes`, or null where the direct path cannot express the conv exactly
/// (a zero weight scale, an add factor <= 0), oneDNN has no implementation for it, or this build has
/// no direct path.
std::shared_ptr<const U8Primitive> make_dnnl_qconv(const QConvParams& p, at::IntArrayRef sizes);
/// A u8 max-pool (kernel, stride, padding; dilation 1, floor mode) for input `sizes` as a oneDNN
/// pooling primitive (u8 channels-last in and out: the max of codes is the code of the max), or
/// null where oneDNN cannot express it or this build has no direct path. LibTorch's quantized
/// max-pool took 0.45 ms on the RM resnet18's 64x112x112 map where OpenVINO's took 0.08.
std::shared_ptr<const U8Primitive> make_dnnl_u8_maxpool(int64_t kernel, int64_t stride, int64_t padding,
                                                        at::IntArrayRef sizes);

/// The chain on CUDA (cuDNN conv + bias + ReLU fused), captured in one CUDA graph per input shape
/// and replayed (src/deploy/cuda_graph.cpp). Throws where rmnet was built without CUDA graphs.
std::shared_ptr<Executor> make_cuda_graph_executor(const PlainNetImpl& net, const DeployOptions& options);

/// The INT8 executor of a quantized network (src/deploy/int8.cpp; deploy/int8.h).
std::shared_ptr<Executor> make_int8_executor(const QuantizedNetImpl& net, const DeployOptions& options);

/// `warmup` untimed calls of `run(nullptr)`, then the mean of `iters` timed ones, step by step
/// (DeployedNetImpl::profile).
std::vector<StepTiming> average_profile(const std::function<void(std::vector<StepTiming>*)>& run, int64_t warmup,
                                        int64_t iters);

/// Batch tiling (DeployOptions::batch_tiling): `run(image, timings)` runs a chain's prefix on one
/// image of `x` (a view of the channels-last batch, replaced by the prefix's output: a map), image
/// after image; the outputs are copied into one channels-last tensor for the batch. With `timings`,
/// each step's record is appended with its time and MACs summed over the images, its output shape
/// the batch's and " (the batch 1 image at a time)" added to its name.
torch::Tensor run_per_image(const torch::Tensor& x,
                            const std::function<void(torch::Tensor&, std::vector<StepTiming>*)>& run,
                            std::vector<StepTiming>* timings);

/// Batch tiling's candidate cuts: `cuts` (ascending step indices) up to the first one past the last
/// step before cuts.back() whose input holds at least kTileBytes per image (`input_bytes(step)`);
/// empty where no step does.
std::vector<size_t> tiling_candidates(const std::vector<size_t>& cuts, const std::function<int64_t(size_t)>& input_bytes);

/// The candidate cut with the largest saving whole_ms(c) - tiled_ms(c) (the ms of the steps before
/// c, untiled and tiled), 0 where none saves; RMNET_DEBUG_TILING=1 prints each, after `what`.
size_t best_tiling_cut(const std::vector<size_t>& candidates, const std::function<double(size_t)>& whole_ms,
                       const std::function<double(size_t)>& tiled_ms, const std::string& what);

/// One step's timing record: its name and layers, the time since `t0`, its MACs and output shape.
StepTiming step_timing(std::string name, size_t first, size_t last, std::chrono::steady_clock::time_point t0,
                       int64_t macs, const torch::Tensor& out);

/// A per-shape cache kept most recently used first: the entry for `key` moved to the front, or null.
template <class V>
V* lru_find(std::list<std::pair<std::vector<int64_t>, V>>& cache, const std::vector<int64_t>& key) {
  for (auto it = cache.begin(); it != cache.end(); ++it)
    if (it->first == key) {
      cache.splice(cache.begin(), cache, it);
      return &cache.front().second;
    }
  return nullptr;
}

/// Puts `value` for `key` at the front of a per-shape cache (most recently used first) and evicts
/// the least recently used entries beyond `capacity`.
template <class V>
void lru_put(std::list<std::pair<std::vector<int64_t>, V>>& cache, std::vector<int64_t> key,
             std::type_identity_t<V> value, int64_t capacity) {
  cache.emplace_front(std::move(key), std::move(value));
  while (static_cast<int64_t>(cache.size()) > capacity) cache.pop_back();
}

/// Convs of at least this many MACs a call are timed once per input shape against LibTorch's
/// operator on the direct oneDNN path (float and INT8), the faster kept: oneDNN 2.6's kernels can
/// lose to LibTorch's oneDNN 3 on big convs; below it, LibTorch's per-call set-up decides.
constexpr int64_t kTimedConvMacs = int64_t{50} << 20;

/// Batch tiling (DeployOptions::batch_tiling): its candidate cuts end after the last step whose
/// input map holds this much per image (smaller maps fit the caches at any batch on the reference
/// machine).
constexpr int64_t kTileBytes = int64_t{256} << 10;

/// RMNET_DEBUG_TILING=1: batch tiling prints its timings per input shape to stderr.
inline bool debug_tiling() {
  static const bool on = [] {
    const char* v = std::getenv("RMNET_DEBUG_TILING");
    return v && std::string(v) == "1";
  }();
  return on;
}

/// The best wall time in ms of `reps` calls of `f` after one untimed call.
inline double best_ms(const std::function<void()>& f, int reps = 2) {
  f();
  double best = 1e30;
  for (int k = 0; k < reps; ++k) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace rmnet::detail
