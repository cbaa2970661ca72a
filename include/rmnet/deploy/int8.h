#pragma once
// The INT8 runtime: a quantized plain network (quant/qnet.h) run with LibTorch's registered
// oneDNN INT8 operators (onednn::qconv_prepack, onednn::qconv2d_pointwise): u8 channels-last
// activations from the input's one quantize to the head's one dequantize, per-channel s8 weights
// prepacked per input shape, ReLU fused into the conv's output quantization, per-channel clamps as a u8
// min/max, max-pool on u8. SE and PReLU run in float32 between a dequantize and a quantize (the
// "fallbacks", listed by QuantizedNetImpl::fallbacks and `rmnet info`); the head (average pool,
// flatten, linear) is float32. A conv on a map hardly larger than its kernel runs as one INT8 GEMM
// (onednn::qlinear_pointwise) with its dense input-to-output matrix. The reserved channels of RM
// blocks run as shortcuts (DeployOptions::dirac_shortcuts; src/deploy/int8_shortcuts.h). CPU only.
// Its outputs match QuantizedNetImpl::forward (the float reference of the same roundings) up to one
// quantization step where a rounding tie falls differently.
#include <string>
#include <vector>

#include "rmnet/deploy/runtime.h"
#include "rmnet/quant/qnet.h"

namespace rmnet {

/// A DeployedNet made from a quantized network: the INT8 executor behind the one deployed-network
/// type (input checks, buffer cache, profile, fallbacks() and packed_gemms() are DeployedNetImpl's).
/// deploy(QuantizedNetImpl, DeployOptions) and prepare_inference make one; this class keeps the
/// older constructor.
class Int8NetImpl : public DeployedNetImpl {
 public:
  /// Prepacks the weights of `net` (not modified; its tensors are copied). Of the options, the INT8
  /// executor uses device (the CPU), buffer_cache_mb and small_map_gemm: a conv (groups 1) on a map
  /// hardly larger than its kernel (H*W*Ho*Wo <= 2*k*k) runs as one INT8 GEMM
  /// (onednn::qlinear_pointwise) with its dense input-to-output matrix, packed per input shape: the
  /// same integer products, without the padding's.
  Int8NetImpl(const QuantizedNetImpl& net, const DeployOptions& options);
  /// The same with buffer_cache_mb and small_map_gemm given directly.
  explicit Int8NetImpl(const QuantizedNetImpl& net, int64_t buffer_cache_mb = 1024, bool small_map_gemm = true);
};
TORCH_MODULE(Int8Net);

/// True when this LibTorch has the oneDNN INT8 operators the executor needs.
bool int8_runtime_available();

}  // namespace rmnet
