#pragma once
// QDQ ONNX of a quantized plain network (quant/qnet.h): the float graph of to_onnx with
// QuantizeLinear -> DequantizeLinear pairs carrying the network's own scales and zero points, so
// ONNX Runtime fuses them into its INT8 kernels (QLinearConv):
//   input -> Q/DQ (u8, the input's scale) -> per conv: DQ(int8 weight, per-channel scales, axis 0),
//   DQ(int32 bias, scale x_scale * w_scale), Conv [-> Relu] -> Q/DQ (u8, the point's scale and zero
//   point) [-> Min/Max per-channel clamp -> Q/DQ, the same parameters]; MaxPool on dequantized
//   values followed by Q/DQ with the same parameters (exact); SE / PReLU in float32 then Q/DQ; the
//   head (GlobalAveragePool, Flatten, Gemm) in float32. Opset 13, input "input" [N, C, H, W],
//   output "logits" [N, classes], as the float export.
#include <string>

#include "rmnet/quant/qnet.h"

namespace rmnet {

std::string to_onnx_qdq(const QuantizedNetImpl& net);
/// Writes to_onnx_qdq(net) atomically.
void export_onnx_qdq(const QuantizedNetImpl& net, const std::string& path);

}  // namespace rmnet
