// QDQ ONNX of a quantized network (rmnet/io/onnx_qdq.h), written with the protobuf encoder of
// onnx_encode.h, as the float export (onnx.cpp).
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "onnx_encode.h"
#include "rmnet/io/model_file.h"
#include "rmnet/io/onnx_qdq.h"

namespace rmnet {
namespace {

using detail::attr_int;
using detail::attr_ints;
using detail::Graph;
using detail::Proto;

// TensorProto with its own element type: UINT8 2, INT8 3, INT32 6, INT64 7, FLOAT 1.
Proto typed_tensor(const std::string& name, const torch::Tensor& t0) {
  auto t = t0.detach().to(torch::kCPU).contiguous();
  int type = 1;
  switch (t.scalar_type()) {
    case torch::kByte: type = 2; break;
    case torch::kChar: type = 3; break;
    case torch::kInt: type = 6; break;
    case torch::kLong: type = 7; break;
    default: t = t.to(torch::kFloat); type = 1;
  }
  Proto p;
  for (auto d : t.sizes()) p.i64(1, d);
  p.i64(2, type).bytes(8, name);
  p.bytes(9, std::string(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size()));
  return p;
}

}  // namespace

std::string to_onnx_qdq(const QuantizedNetImpl& net) {
  Graph gr;
  const auto& plan = net.plan();
  const auto init = [&](const std::string& name, const torch::Tensor& t) {
    gr.g.msg(5, typed_tensor(name, t));
    return name;
  };
  // Q -> DQ with per-tensor u8 parameters; returns the dequantized tensor's name.
  const auto qdq = [&](const std::string& x, const std::string& tag, double scale, int64_t zp,
                       const std::string& out = "") {
    const auto s = init(tag + "_scale", torch::full({}, scale, torch::kFloat));
    const auto z = init(tag + "_zero_point", torch::full({}, zp, torch::kByte));
    const auto q = gr.node("QuantizeLinear", {x, s, z}, {});
    return gr.node("DequantizeLinear", {q, s, z}, {}, out);
  };
  const size_t n = net.size(), last = n - 1;
  double cur_s = net.input_scale();
  int64_t cur_zp = net.input_zero_point();
  std::string x = qdq("input", "input", cur_s, cur_zp);
  detail::GraphSink sink(gr, init);
  bool fresh = true;  // x is the output of a DequantizeLinear (what ORT's QDQ fusion needs before a Conv)
  for (size_t i = 0; i < n; ++i) {
    const auto& s = net.spec(i);
    const std::string p = fmt::format("l{}.", i);
    const std::string out = i == last ? "logits" : "";
    const auto t = net.layer(i).tensors();
    if (i < plan.head && s.kind == LayerKind::Conv) {
          if (!fresh) x = qdq(x, p + "in", cur_s, cur_zp);
          const auto ws = t.at("weight_scale").to(torch::kFloat);
          const auto w = gr.node("DequantizeLinear",
                                 {init(p + "weight_q", t.at("weight")), init(p + "weight_scale", ws),
                                  init(p + "weight_zero_point", torch::zeros({s.out_channels}, torch::kChar))},
                                 {attr_int("axis", 0)});
          const auto bs = ws.to(torch::kDouble) * cur_s;
          const auto bq = torch::round(t.at("bias").to(torch::kDouble) / bs).clamp(-2147483647.0, 2147483647.0).to(torch::kInt);
          const auto b = gr.node("DequantizeLinear",
                                 {init(p + "bias_q", bq), init(p + "bias_scale", bs.to(torch::kFloat)),
                                  init(p + "bias_zero_point", torch::zeros({s.out_channels}, torch::kInt))},
                                 {attr_int("axis", 0)});
          x = gr.node("Conv", {x, w, b},
                      {attr_ints("kernel_shape", {s.kernel, s.kernel}), attr_ints("strides", {s.stride, s.stride}),
                       attr_ints("pads", {s.padding, s.padding, s.padding, s.padding}), attr_ints("dilations", {1, 1}),
                       attr_int("group", s.groups)});
          fresh = false;
          // the activation run up to the quantization point
          const size_t k = plan.point_of(i);
          const bool has_prelu = plan.run_has_fallback(i);
          const double ps = net.out_scale(k);
          const int64_t pz = net.out_zero_point(k);
          for (size_t j = i + 1; j <= k; ++j) {
            const auto& sj = net.spec(j);
            const auto tj = net.layer(j).tensors();
            const std::string pj = fmt::format("l{}.", j);
            if (sj.kind == LayerKind::ReLU) {
              x = gr.node("Relu", {x}, {});
            } else if (sj.kind == LayerKind::PReLU) {
              x = gr.node("PRelu", {x, init(pj + "weight", tj.at("weight").view({-1, 1, 1}))}, {});
            } else {  // Clamp: quantize first (ORT then runs the conv in INT8), clamp the dequantized values
              if (!has_prelu && !fresh) x = qdq(x, pj + "pre", ps, pz);
              const auto hi = gr.node("Min", {x, init(pj + "max", tj.at("max").view({1, -1, 1, 1}))}, {});
              x = gr.node("Max", {hi, init(pj + "min", tj.at("min").view({1, -1, 1, 1}))}, {});
            }
            fresh = false;
          }
          x = qdq(x, fmt::format("l{}.out", k), ps, pz, k == last ? "logits" : "");
          fresh = true;
          cur_s = ps;
          cur_zp = pz;
          i = k;
          continue;
    }
    // the other layers: their float nodes (relu, clamp and max-pool on dequantized u8 values; the
    // float fallbacks and the head), then Q/DQ at a quantization point
    TORCH_CHECK(s.kind != LayerKind::BatchNorm, "QDQ ONNX: unexpected layer ", i, " (", s.describe(), ")");
    x = ir::traits(s.kind).onnx(s, [&](const std::string& name) { return t.at(name); }, sink, p, x, out);
    if (i < plan.head && plan.role[i] == QuantRole::U8) {
      fresh = false;
      continue;
    }
    fresh = false;
    if (i < plan.head && plan.point[i]) {
      cur_s = net.out_scale(i);
      cur_zp = net.out_zero_point(i);
      x = qdq(x, p + "out", cur_s, cur_zp, i == last ? "logits" : "");
      fresh = true;
    }
  }
  gr.g.bytes(2, "rmnet_quantized");
  return gr.model_bytes(net.options().in_channels(), net.options().num_classes());
}

void export_onnx_qdq(const QuantizedNetImpl& net, const std::string& path) {
  TORCH_CHECK(net.size() > 0 && net.spec(net.size() - 1).kind == LayerKind::Linear,
              "ONNX export expects a classifier chain ending in a Linear layer");
  write_file_atomic(path, to_onnx_qdq(net));
}

}  // namespace rmnet
