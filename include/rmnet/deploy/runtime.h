#pragma once
// The deploy runtimes: a plain network prepared for fast inference.
//
// A plain network is a chain, so it can be executed better than a general graph. The runtimes are
// interchangeable behind one type, DeployedNet (a ModelImpl, so evaluate(), predict(), bench and
// the Classifier take it like any model):
//   onednn       rmnet's own chain executor: convolutions with their activation as oneDNN post-ops,
//                weights prepacked per input shape and cached, activations channels-last end to
//                end; through oneDNN's own API where rmnet links libdnnl (primitives made once
//                per input shape), else over LibTorch's registered fused oneDNN operators
//                (mkldnn::_convolution_pointwise, mkldnn::_reorder_convolution_weight).
//                CPU, float32 or bfloat16. No TorchScript.
//   torchscript  the chain written as a TorchScript function (rmnet::to_torchscript), frozen and
//                passed through optimize_for_inference: what Python's torch.jit path builds.
//                Kept for comparison and for devices/dtypes onednn does not run (CUDA, fp16, fp64);
//                TorchScript is deprecated upstream.
//   cudagraph    the chain on CUDA with ATen/cuDNN ops (conv + bias + ReLU as one
//                cudnn_convolution_relu), channels-last, captured in one CUDA graph per input shape
//                (fixed shapes; a new shape captures anew) and replayed: one launch per forward.
//                Opt-in (`--runtime cudagraph`); needs a CUDA LibTorch and a GPU.
//   eager        the LibTorch modules' own forward (not a DeployedNet).
// A runtime never changes what the network computes: each is tested against eager.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <torch/arg.h>
#include <torch/script.h>
#include <torch/types.h>

#include "rmnet/models/model.h"
#include "rmnet/models/plain.h"

namespace rmnet {

/// How a model runs for inference.
enum class Runtime {
  Auto,         ///< plain networks: onednn on the CPU (float32/bfloat16), torchscript otherwise;
                ///< quantized networks: int8; residual models: eager
  Eager,        ///< the LibTorch module's own forward (a quantized network: its float reference)
  TorchScript,  ///< frozen + optimized TorchScript of the chain (plain networks only)
  OneDNN,       ///< rmnet's chain executor over fused oneDNN operators (plain networks, CPU)
  Int8,         ///< the INT8 executor (deploy/int8.h; quantized networks only, CPU)
  CudaGraph,    ///< the chain on CUDA (cuDNN conv + bias + ReLU fused), captured in a CUDA graph per
                ///< input shape and replayed (plain networks; opt-in, Auto does not pick it)
  Deploy = TorchScript,  ///< the name of the TorchScript runtime before onednn existed ("deploy")
};
/// "auto", "eager", "torchscript" (or its old name "deploy"), "onednn", "cudagraph", "int8".
Runtime runtime_from_string(const std::string& s);
std::string to_string(Runtime r);
/// The names runtime_from_string accepts, for CLI validators.
std::vector<std::string> runtime_names();

/// DeployOptions::onednn_direct's default: false where the environment has RMNET_ONEDNN_DIRECT=0.
bool onednn_direct_default();
/// DeployOptions::dirac_shortcuts's default: false where the environment has RMNET_DIRAC_SHORTCUTS=0.
bool dirac_shortcuts_default();
/// DeployOptions::batch_tiling's default: false where the environment has RMNET_BATCH_TILING=0.
bool batch_tiling_default();

struct DeployOptions {
  /// Device the prepared network runs on (onednn: CPU only).
  TORCH_ARG(torch::Device, device) = torch::Device(torch::kCPU);
  /// Weight and compute dtype (float32, bfloat16, float16, float64; onednn: float32 or
  /// bfloat16); inputs are cast to it and the output is returned as float32 (float64 stays).
  TORCH_ARG(torch::ScalarType, dtype) = torch::kFloat;
  /// TorchScript: feed inputs in channels-last memory format (onednn always runs channels-last).
  TORCH_ARG(bool, channels_last) = false;
  /// TorchScript: freeze + optimize_for_inference; false keeps the plain scripted chain.
  TORCH_ARG(bool, optimize) = true;
  /// Which executor: OneDNN, TorchScript, or Auto (OneDNN where it runs, else TorchScript).
  /// Eager is not a DeployedNet (see prepare_inference).
  TORCH_ARG(Runtime, runtime) = Runtime::Auto;
  /// onednn: how many input shapes keep their prepacked weights (least recently used evicted);
  /// cudagraph: how many input shapes keep their captured graph.
  TORCH_ARG(int64_t, packed_shapes) = 8;
  /// onednn: a convolution on a map so small that its input-to-output matrix is at most twice its
  /// weights (H*W*Ho*Wo <= 2*k*k, groups 1: 1x1 and 2x2 maps under a 3x3 kernel, 1x1 maps under a
  /// 1x1 kernel) runs as one GEMM (mkldnn::_linear_pointwise, activation fused) with that matrix,
  /// built when weights are packed for the input shape: 2.5-5.7x faster than the convolution
  /// kernel on such maps, same products (only the zero-padding terms drop out).
  TORCH_ARG(bool, small_map_gemm) = true;
  /// onednn: run the convolutions, tiny-map GEMMs and the Linear head through oneDNN's own API
  /// (the libdnnl rmnet links where its build found one: onednn_direct_available()): primitives
  /// made once per input shape and executed with no per-call set-up, a per-channel clamp after a
  /// conv fused as its post-ops; int8: its convolutions the same way. LibTorch's registered operators build a primitive descriptor on
  /// every call (~80 us per conv on the reference machine: most of a batch-1 forward of the RM
  /// mobilenet_v2). false, or a build without libdnnl: LibTorch's operators (same products, up
  /// to the kernels' summation order). The default is true unless the environment has
  /// RMNET_ONEDNN_DIRECT=0 (to compare the two paths from the CLI).
  TORCH_ARG(bool, onednn_direct) = onednn_direct_default();
  /// onednn, direct path: run the channels an RM block reserves as what they are, a shortcut. Where
  /// a stride-1 conv's output channels are exact Dirac copies of its input (weight 1 at the centre
  /// tap, nothing else, no bias), carried through further such convs and merged by a conv that adds
  /// each to one output with weight exactly 1 (an RM ResNet's identity block: [W1 ; D], then
  /// [W2 | D]), the copies are not computed: the convs run on the branch channels only and the merge
  /// conv adds the kept block input as a oneDNN sum post-op (before its activation); where the
  /// copies are strided and the merge conv weighs them at the centre tap only (a downsample block's
  /// projection), that projection runs as a 1x1 strided conv of the block input and the merge conv
  /// sums into its output. The same function (the copies' products are x * 1 and + 0 * h), up to
  /// the summation order, at exactly the residual network's MACs instead of the plain form's.
  /// A copy weight f > 0 other than 1 (a ResNet trained with shortcut scales reserves relu(s * x)) is a
  /// factor, relu(f * x) = f * relu(x): the merge adds the input scaled per channel (one multiply per
  /// element before the sum) or the projection takes the factors; f <= 0 leaves that channel computed.
  /// The INT8 executor does the same on quantized chains (src/deploy/int8_shortcuts.h: a copy's
  /// requantized codes are tabulated per block-input code, and the merge conv's float32 sum gets
  /// their term before it is quantized once). false: every channel is a convolution.
  /// The default is true unless the environment has RMNET_DIRAC_SHORTCUTS=0.
  TORCH_ARG(bool, dirac_shortcuts) = dirac_shortcuts_default();
  /// The INT8 executor with dirac_shortcuts: time the shortcut plan against computing every channel
  /// at the first forward of each input shape (best of 2 after a warm-up each) and run the faster
  /// from then on (on narrow networks at tiny maps the shortcut's extra steps can cost more than the
  /// arithmetic they save). false: the shortcuts always.
  TORCH_ARG(bool, dirac_shortcuts_timed) = true;
  /// onednn, direct path, batches of more than one image: the first layers, on the biggest maps,
  /// may run a chunk of the batch at a time (down to the network's end of a block: never inside a
  /// Dirac shortcut) while the rest runs on the whole batch. A batch's activations on the first
  /// maps outgrow the caches (the RM mobilenet_v2 at 224x224, batch 8: 19 MB per tensor in bf16),
  /// one image's stay in them, and convolutions there are bound by memory traffic: those layers ran
  /// 1.3-2.6x faster per image at batch 1 than at batch 8 on the reference machine. Decided once
  /// per input shape by timing: each block's layers on the whole batch against one image at a
  /// time, the prefix with the largest saving kept if the chained prefix is then faster as well;
  /// otherwise the whole batch throughout. The same products (each image's arithmetic does not
  /// depend on the batch), up to oneDNN's kernel choice for the smaller shape. false: the whole
  /// batch at every layer. The default is true unless the environment has RMNET_BATCH_TILING=0
  /// (RMNET_DEBUG_TILING=1 prints the timings to stderr). A profile names the steps that ran so
  /// ("... (the batch 1 image at a time)").
  TORCH_ARG(bool, batch_tiling) = batch_tiling_default();
  /// batch_tiling without the timing: every layer on maps (up to the global pooling or the first
  /// Linear) one image at a time, for every batch of more than one image (tests, experiments).
  TORCH_ARG(bool, batch_tiling_timed) = true;
  /// CPU runtimes (and the INT8 executor): keep activation buffers of at least 256 KiB between forwards,
  /// up to this many MiB, and serve the next forward's allocations from them instead of fresh
  /// pages (glibc returns blocks of more than 32 MB to the system on free, so each forward would
  /// page-fault its large activations in again: half the speed of the RM mobilenet_v2 at 224x224,
  /// batch 8, on the reference machine). 0: allocate afresh every forward.
  /// The cache works through a wrapper around LibTorch's CPU allocator, installed once per process
  /// (c10::SetCPUAllocator) when the first cache is made; outside a deployed network's forward it
  /// passes every allocation through. An application with its own CPU allocator, or that wants
  /// none of this, opts out for the whole process with set_buffer_cache_enabled(false) (or the
  /// environment variable RMNET_BUFFER_CACHE=0) before deploying anything.
  TORCH_ARG(int64_t, buffer_cache_mb) = 1024;
};

/// Whether this build of rmnet links oneDNN directly (DeployOptions::onednn_direct), and its
/// version ("2.6.3"; "" without).
bool onednn_direct_available();
std::string onednn_direct_version();

/// Process-wide switch of the activation buffer cache (default: on, unless the environment has
/// RMNET_BUFFER_CACHE=0). Off: no deployed network (float or INT8) made afterwards has a cache,
/// whatever its buffer_cache_mb, and rmnet never installs its CPU allocator wrapper (a wrapper
/// installed earlier stays, passing allocations through). Thread-safe.
void set_buffer_cache_enabled(bool enabled);
bool buffer_cache_enabled();

/// The activation buffer cache of a deployed network (DeployOptions::buffer_cache_mb).
struct BufferCacheStats {
  int64_t allocations = 0;   ///< blocks allocated afresh so far (after the first forward of a shape: none)
  int64_t reuses = 0;        ///< allocations served from a cached block so far
  int64_t cached_bytes = 0;  ///< bytes held in free blocks now
};

/// Time spent in one step of a deployed chain (DeployedNetImpl::profile).
struct StepTiming {
  std::string name;        ///< e.g. "conv 3x3 s1 64->64 + relu" or "maxpool 3x3 s2"
  size_t first_layer = 0;  ///< plain layers [first_layer, last_layer] this step executes
  size_t last_layer = 0;
  double ms = 0.0;         ///< mean wall time per forward
  int64_t macs = 0;        ///< multiply-accumulates per forward (whole batch; conv and linear)
  std::vector<int64_t> output_shape;
};

namespace detail {
class BufferCache;  // src/deploy/buffer_cache.h
/// One way of executing a chain (an executor); DeployedNetImpl owns one.
class Executor {
 public:
  virtual ~Executor() = default;
  /// Runs the chain; with `timings`, appends one entry per step (wall time in ms, synchronised).
  virtual torch::Tensor run(const torch::Tensor& x, std::vector<StepTiming>* timings) = 0;
  /// One line per step: what runs and how.
  virtual std::string plan() const = 0;
  /// Layers run in float32 inside an INT8 chain ("i: description"; float executors: none).
  virtual std::vector<std::string> fallbacks() const { return {}; }
  /// Tiny-map GEMM packings held now (the INT8 executor; the others: 0).
  virtual int64_t packed_gemms() const { return 0; }
};
}  // namespace detail

class QuantizedNetImpl;  // quant/qnet.h

/// A network prepared for inference by one of the runtimes, its executor: a plain network on
/// onednn, torchscript or cudagraph, a quantized network on int8. It has no trainable parameters
/// (its weights are constants of the executor) and always computes in eval semantics. The source
/// is not modified. forward() checks its input: a 4-d floating-point tensor with the network's
/// input channels, cast to the options' dtype and device (INT8: float32 on the CPU).
///
/// Thread safety: one DeployedNet may be shared by several threads calling forward() at once,
/// with any mix of batch sizes and image sizes; each call's result equals a
/// serial call's bit for bit (tests/test_concurrency.cpp). Per-shape packings and graphs are made
/// once under a lock.
class DeployedNetImpl : public ModelImpl {
 public:
  DeployedNetImpl(const PlainNetImpl& net, DeployOptions options = DeployOptions());
  /// The INT8 executor (deploy/int8.h) for a quantized network; options.runtime() Auto or Int8.
  DeployedNetImpl(const QuantizedNetImpl& net, DeployOptions options = DeployOptions());
  torch::Tensor forward(torch::Tensor x) override;
  /// "quantized" on the int8 runtime, "plain" otherwise (the source's); kind() says Deployed.
  std::string family() const override { return runtime_ == Runtime::Int8 ? "quantized" : "plain"; }
  ModelKind kind() const override { return ModelKind::Deployed; }
  const DeployOptions& deploy_options() const { return deploy_; }
  /// The runtime that executes the chain (OneDNN, TorchScript, CudaGraph or Int8, never Auto).
  Runtime runtime() const { return runtime_; }
  /// The compiled TorchScript module (TorchScript runtime only; throws otherwise).
  torch::jit::Module& module();
  /// Parameters of the source network (the executor has none of its own).
  int64_t source_parameters() const { return source_params_; }
  /// TorchScript: the optimized forward graph; onednn and int8: the execution plan, one step per line.
  std::string graph() const;
  /// Runs `iters` forwards of `x` after `warmup` untimed ones and returns each step's mean time
  /// (TorchScript: one step, the whole graph; int8: MACs of the convs count INT8 multiply-adds).
  std::vector<StepTiming> profile(const torch::Tensor& x, int64_t warmup = 2, int64_t iters = 10);
  /// The activation buffer cache (DeployOptions::buffer_cache_mb; CPU): zeros where there is none.
  BufferCacheStats buffer_cache_stats() const;
  /// int8: layers that run in float32 inside the INT8 part ("i: description"); others: none.
  std::vector<std::string> fallbacks() const { return exec_->fallbacks(); }
  /// int8: tiny-map GEMM packings held now (one per conv run as a GEMM and input shape); others: 0.
  int64_t packed_gemms() const { return exec_->packed_gemms(); }

 protected:
  /// A deployed network is not copied: clone() throws (deploy its source again).
  std::shared_ptr<ModelImpl> make_like() const override;

 private:
  void init_options();      // checks the options (both constructors)
  void make_buffer_cache();  // the CPU buffer cache the options ask for (both constructors)
  torch::Tensor check_input(const torch::Tensor& x) const;
  DeployOptions deploy_;
  Runtime runtime_ = Runtime::OneDNN;
  std::shared_ptr<detail::Executor> exec_;
  std::shared_ptr<detail::BufferCache> buffers_;  // null: no cache
  int64_t source_params_ = 0;
};
TORCH_MODULE(DeployedNet);

/// Whether the onednn runtime can run on `options`' device and dtype (CPU; float32 or bfloat16;
/// LibTorch built with oneDNN). `why` receives the reason when it cannot.
bool onednn_available(const DeployOptions& options, std::string* why = nullptr);

/// Whether the cudagraph runtime can run on `options`' device and dtype (a CUDA device that is
/// present; a floating dtype; rmnet built against a CUDA LibTorch). `why` receives the reason.
bool cuda_graph_available(const DeployOptions& options, std::string* why = nullptr);

/// Prepares a plain network (see DeployedNetImpl).
DeployedNet deploy(const PlainNetImpl& net, const DeployOptions& options = DeployOptions());
/// Prepares a quantized network on the INT8 executor (see DeployedNetImpl, deploy/int8.h).
DeployedNet deploy(const QuantizedNetImpl& net, const DeployOptions& options = DeployOptions());

/// The deployed network a prepared model is, or nullptr (a residual, plain or quantized model run
/// eagerly).
DeployedNetImpl* as_deployed(ModelImpl& prepared);
const DeployedNetImpl* as_deployed(const ModelImpl& prepared);

/// The model to run for inference under `runtime`: OneDNN/TorchScript/Auto on a plain network ->
/// a DeployedNet (Auto: onednn where available); Eager, or Auto on a residual model -> `model`
/// itself, moved to the options' device. OneDNN/TorchScript on a residual model are refused by
/// name. A quantized network (quant/qnet.h): Auto/Int8 -> the INT8 executor (CPU), Eager -> its
/// float reference forward; Int8 on a float model is refused. `runtime` overrides
/// options.runtime().
ModelPtr prepare_inference(const ModelPtr& model, Runtime runtime, const DeployOptions& options = DeployOptions());

/// The name of the runtime a prepared model runs on: "onednn", "torchscript", "cudagraph", "int8"
/// or "eager".
std::string runtime_name(const ModelImpl& prepared);

}  // namespace rmnet
