#pragma once
// The INT8 runtime: a quantized plain network (quant/qnet.h) run with LibTorch's registered
// oneDNN INT8 operators (onednn::qconv_prepack, onednn::qconv2d_pointwise): u8 channels-last
// activations from the input's one quantize to the head's one dequantize, per-channel s8 weights
// prepacked per input shape, ReLU fused into the conv's output quantization, per-channel clamps as a u8
// min/max, max-pool on u8. SE and PReLU run in float32 between a dequantize and a quantize (the
// "fallbacks", listed by QuantizedNetImpl::fallbacks and `rmnet info`); the head (average pool,
// flatten, linear) is float32. A conv on a map hardly larger than its kernel runs as one INT8 GEMM
// (onednn::qlinear_pointwise) with its dense input-to-output matrix. CPU only. Its outputs match QuantizedNetImpl::forward (the float
// reference of the same roundings) up to one quantization step where a rounding tie falls
// differently.
#include <string>
#include <vector>

#include "rmnet/deploy/runtime.h"
#include "rmnet/models/model.h"
#include "rmnet/quant/qnet.h"

namespace rmnet {

class Int8NetImpl : public ModelImpl {
 public:
  /// Prepacks the weights of `net` (not modified; its tensors are copied). Activation buffers of
  /// at least 256 KiB are kept between forwards, up to `buffer_cache_mb` MiB (0: none; see
  /// DeployOptions::buffer_cache_mb). With `small_map_gemm`, a conv (groups 1) on a map hardly
  /// larger than its kernel (H*W*Ho*Wo <= 2*k*k, as DeployOptions::small_map_gemm) runs as one
  /// INT8 GEMM (onednn::qlinear_pointwise) with its dense input-to-output matrix, packed per input
  /// shape: the same integer products, without the padding's.
  explicit Int8NetImpl(const QuantizedNetImpl& net, int64_t buffer_cache_mb = 1024, bool small_map_gemm = true);
  torch::Tensor forward(torch::Tensor x) override;
  /// Runs `iters` forwards of `x` after `warmup` untimed ones and returns each step's mean time
  /// (as DeployedNetImpl::profile; MACs of the convs, whose GMAC/s count INT8 multiply-adds).
  std::vector<StepTiming> profile(const torch::Tensor& x, int64_t warmup = 2, int64_t iters = 10);
  std::string family() const override { return "quantized"; }
  /// Layers that run in float32 inside the INT8 part ("i: description").
  const std::vector<std::string>& fallbacks() const { return fallbacks_; }
  /// Tiny-map GEMM packings held now (one per conv run as a GEMM and input shape).
  int64_t packed_gemms() const;
  /// The activation buffer cache: zeros where there is none.
  BufferCacheStats buffer_cache_stats() const;

  struct Step;  // one layer of the executor (defined in int8.cpp)

 private:
  torch::Tensor run(torch::Tensor x, std::vector<StepTiming>* timings);
  std::vector<std::shared_ptr<Step>> steps_;
  std::vector<std::string> fallbacks_;
  std::shared_ptr<detail::BufferCache> buffers_;
  double in_scale_ = 1.0;
  int64_t in_zp_ = 0;
};
TORCH_MODULE(Int8Net);

/// True when this LibTorch has the oneDNN INT8 operators the executor needs.
bool int8_runtime_available();

}  // namespace rmnet
