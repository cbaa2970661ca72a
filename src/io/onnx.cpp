// ONNX export of a plain network, written with the protobuf encoder of onnx_encode.h (no protobuf
// dependency). The QDQ export of a quantized network is in onnx_qdq.cpp.
#include <string>
#include <vector>

#include <fmt/format.h>
#include <torch/torch.h>

#include "onnx_encode.h"
#include "rmnet/core.h"
#include "rmnet/io/export.h"
#include "rmnet/io/model_file.h"

namespace rmnet {
namespace {

using detail::attr_float;
using detail::attr_int;
using detail::attr_ints;
using detail::Graph;
using detail::Proto;

}  // namespace

std::string to_onnx(const PlainNetImpl& net) {
  Graph gr;
  std::string x = "input";
  const size_t last = net.size() - 1;
  for (size_t i = 0; i < net.size(); ++i) {
    const auto& s = net.spec(i);
    const std::string p = fmt::format("l{}.", i);
    const std::string out = i == last ? "logits" : "";
    switch (s.kind) {
      case LayerKind::Conv: {
        auto c = net.layer_as<torch::nn::Conv2dImpl>(i);
        std::vector<std::string> in = {x, gr.init(p + "weight", c->weight)};
        if (s.bias) in.push_back(gr.init(p + "bias", c->bias));
        x = gr.node("Conv", in,
                    {attr_ints("kernel_shape", {s.kernel, s.kernel}), attr_ints("strides", {s.stride, s.stride}),
                     attr_ints("pads", {s.padding, s.padding, s.padding, s.padding}),
                     attr_ints("dilations", {1, 1}), attr_int("group", s.groups)},
                    out);
        break;
      }
      case LayerKind::BatchNorm: {
        auto b = net.layer_as<torch::nn::BatchNorm2dImpl>(i);
        x = gr.node("BatchNormalization",
                    {x, gr.init(p + "weight", b->weight), gr.init(p + "bias", b->bias),
                     gr.init(p + "running_mean", b->running_mean), gr.init(p + "running_var", b->running_var)},
                    {attr_float("epsilon", static_cast<float>(s.eps))}, out);
        break;
      }
      case LayerKind::ReLU:
        x = gr.node("Relu", {x}, {}, out);
        break;
      case LayerKind::PReLU:
        x = gr.node("PRelu", {x, gr.init(p + "weight", net.layer_as<torch::nn::PReLUImpl>(i)->weight.view({-1, 1, 1}))},
                    {}, out);
        break;
      case LayerKind::Clamp: {
        // y = Max(Min(x, hi), lo), bounds [1, C, 1, 1] (0/6 on clipped channels, -inf/+inf on
        // reserved ones): exact. (OpenCV 4.6 cannot read this or any other opset >= 11 form of
        // a clip: its importer takes Clip only with opset-6 attributes and rejects Min/Max against
        // constants; ONNX Runtime runs it.)
        auto c = net.layer_as<ChannelClampImpl>(i);
        const auto hi = gr.node("Min", {x, gr.init(p + "max", c->max.view({1, -1, 1, 1}))}, {});
        x = gr.node("Max", {hi, gr.init(p + "min", c->min.view({1, -1, 1, 1}))}, {}, out);
        break;
      }
      case LayerKind::MaxPool:
        x = gr.node("MaxPool", {x},
                    {attr_ints("kernel_shape", {s.kernel, s.kernel}), attr_ints("strides", {s.stride, s.stride}),
                     attr_ints("pads", {s.padding, s.padding, s.padding, s.padding})},
                    out);
        break;
      case LayerKind::AvgPool:
        x = gr.node("GlobalAveragePool", {x}, {}, out);
        break;
      case LayerKind::Flatten:
        x = gr.node("Flatten", {x}, {attr_int("axis", 1)}, out);
        break;
      case LayerKind::Linear: {
        auto l = net.layer_as<torch::nn::LinearImpl>(i);
        std::vector<std::string> in = {x, gr.init(p + "weight", l->weight)};
        if (s.bias) in.push_back(gr.init(p + "bias", l->bias));
        x = gr.node("Gemm", in, {attr_int("transB", 1)}, out);
        break;
      }
      case LayerKind::SE: {
        // a = x[:, :scaled]; g = Sigmoid(Conv1x1(Relu(Conv1x1(GlobalAveragePool(a))))); [a * g ; x[:, scaled:]]
        auto e = net.layer_as<ChannelSEImpl>(i);
        const auto slice = [&](int64_t from, int64_t to, const std::string& tag) {
          const auto opts = torch::TensorOptions().dtype(torch::kLong);
          return gr.node("Slice", {x, gr.init(p + tag + "_starts", torch::full({1}, from, opts)),
                                   gr.init(p + tag + "_ends", torch::full({1}, to, opts)),
                                   gr.init(p + tag + "_axes", torch::ones({1}, opts))},
                         {});
        };
        const std::string a = s.scaled == s.out_channels ? x : slice(0, s.scaled, "a");
        const auto conv1x1 = [&](const std::string& in, const torch::Tensor& w, const torch::Tensor& b,
                                 const std::string& tag) {
          return gr.node("Conv", {in, gr.init(p + tag + "_weight", w.view({w.size(0), w.size(1), 1, 1})), gr.init(p + tag + "_bias", b)},
                         {attr_ints("kernel_shape", {1, 1})});
        };
        auto g = gr.node("GlobalAveragePool", {a}, {});
        g = gr.node("Relu", {conv1x1(g, e->w1, e->b1, "w1")}, {});
        g = gr.node("Sigmoid", {conv1x1(g, e->w2, e->b2, "w2")}, {});
        if (s.scaled == s.out_channels) {
          x = gr.node("Mul", {a, g}, {}, out);
        } else {
          const auto y = gr.node("Mul", {a, g}, {});
          x = gr.node("Concat", {y, slice(s.scaled, s.out_channels, "b")}, {attr_int("axis", 1)}, out);
        }
        break;
      }
    }
  }
  gr.g.bytes(2, "rmnet_plain");
  return gr.model_bytes(net.options().in_channels(), net.options().num_classes());
}

void export_onnx(const PlainNetImpl& net, const std::string& path) {
  TORCH_CHECK(net.size() > 0 && net.spec(net.size() - 1).kind == LayerKind::Linear,
              "ONNX export expects a classifier chain ending in a Linear layer");
  write_file_atomic(path, to_onnx(net));
}

}  // namespace rmnet
