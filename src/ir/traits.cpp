// The one table of plain layer kinds (rmnet/ir/traits.h), and the LayerSpec basics built on it.
#include "rmnet/ir/traits.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/models/batchnorm.h"
#include "rmnet/models/plain.h"

namespace rmnet {
namespace ir {
namespace {

namespace nn = torch::nn;
using A = OnnxAttr;
using Shape = std::vector<int64_t>;

// ---- shared pieces -------------------------------------------------------------------------

std::string pair(int64_t v) { return fmt::format("[{}, {}]", v, v); }

/// A float literal for TorchScript source (exact: 17 significant digits).
std::string scalar(double v) {
  if (std::isinf(v)) return v > 0 ? "float('inf')" : "float('-inf')";
  return fmt::format("{:.17g}", v) + (std::floor(v) == v && std::abs(v) < 1e15 ? ".0" : "");
}

torch::Tensor channel_view(const torch::Tensor& t, int64_t dim) {
  std::vector<int64_t> shape(dim, 1);
  shape[1] = t.size(0);
  return t.view(shape);
}

int64_t window_out(int64_t h, const LayerSpec& s) { return (h + 2 * s.padding - s.kernel) / s.stride + 1; }

std::vector<A> window_attrs(const LayerSpec& s) {
  return {A::is("kernel_shape", {s.kernel, s.kernel}), A::is("strides", {s.stride, s.stride}),
          A::is("pads", {s.padding, s.padding, s.padding, s.padding})};
}

// Defaults of the table's function slots.
std::vector<TensorDecl> no_tensors(const LayerSpec&) { return {}; }
void no_check(const LayerSpec&, int64_t, const std::string&) {}
Shape same_shape(const LayerSpec&, const Shape& in) { return in; }
int64_t no_macs(const LayerSpec&, const Shape&) { return 0; }
void per_channel_check(const LayerSpec& s, int64_t c, const std::string& where) {
  TORCH_CHECK(s.out_channels == c, where, " has ", s.out_channels, " channels, but ", c, " arrive");
}
template <typename M>
torch::Tensor module_forward(nn::Module& m, const torch::Tensor& x) {
  return static_cast<M&>(m).forward(x);
}

// ---- conv ----------------------------------------------------------------------------------

LayerTraits conv_traits() {
  LayerTraits t{LayerKind::Conv, "conv"};
  t.sets_channels = true;
  t.spatial = true;
  t.quant = QuantClass::Int8;
  t.json = {{"in", &LayerSpec::in_channels}, {"out", &LayerSpec::out_channels}, {"kernel", &LayerSpec::kernel},
            {"stride", &LayerSpec::stride},  {"padding", &LayerSpec::padding},  {"groups", &LayerSpec::groups},
            {"bias", &LayerSpec::bias}};
  t.describe = [](const LayerSpec& s) {
    return fmt::format("Conv2d({}, {}, k={}, s={}, p={}, g={}{})", s.in_channels, s.out_channels, s.kernel,
                       s.stride, s.padding, s.groups, s.bias ? ", bias" : "");
  };
  t.tensors = [](const LayerSpec& s) {
    std::vector<TensorDecl> d{{"weight", {s.out_channels, s.groups >= 1 ? s.in_channels / s.groups : 0, s.kernel, s.kernel}}};
    if (s.bias) d.push_back({"bias", {s.out_channels}});
    return d;
  };
  t.check = [](const LayerSpec& s, int64_t c, const std::string& where) {
    TORCH_CHECK(s.in_channels == c, where, " expects ", s.in_channels, " input channels, but ", c, " arrive");
    TORCH_CHECK(s.groups >= 1 && s.in_channels % s.groups == 0 && s.out_channels % s.groups == 0, where,
                ": groups must divide the input and output channels");
    TORCH_CHECK(s.kernel >= 1 && s.stride >= 1 && s.padding >= 0, where, ": bad geometry");
  };
  t.make = [](const LayerSpec& s) -> std::shared_ptr<nn::Module> {
    return std::make_shared<nn::Conv2dImpl>(
        nn::Conv2dOptions(s.in_channels, s.out_channels, s.kernel).stride(s.stride).padding(s.padding).groups(s.groups).bias(s.bias));
  };
  t.forward = module_forward<nn::Conv2dImpl>;
  t.apply = [](const LayerSpec& s, const TensorFn& w, const torch::Tensor& x) {
    return torch::conv2d(x, w("weight"), s.bias ? w("bias") : torch::Tensor(), s.stride, s.padding, 1, s.groups);
  };
  t.output_shape = [](const LayerSpec& s, const Shape& in) {
    return Shape{in[0], s.out_channels, window_out(in[2], s), window_out(in[3], s)};
  };
  t.macs = [](const LayerSpec& s, const Shape& in) {
    return s.out_channels * (s.in_channels / s.groups) * s.kernel * s.kernel * window_out(in[2], s) * window_out(in[3], s);
  };
  t.onnx = [](const LayerSpec& s, const TensorFn& w, OnnxSink& g, const std::string& p, const std::string& x,
              const std::string& out) {
    std::vector<std::string> in = {x, g.init(p + "weight", w("weight"))};
    if (s.bias) in.push_back(g.init(p + "bias", w("bias")));
    auto attrs = std::vector<A>{A::is("kernel_shape", {s.kernel, s.kernel}), A::is("strides", {s.stride, s.stride}),
                                A::is("pads", {s.padding, s.padding, s.padding, s.padding}), A::is("dilations", {1, 1}),
                                A::i("group", s.groups)};
    return g.node("Conv", in, attrs, out);
  };
  t.torchscript = [](const LayerSpec& s, const TensorFn& w, const TsRegister& reg, std::ostream& src,
                     const std::string& p) {
    reg(p + "weight", w("weight"), true);
    if (s.bias) reg(p + "bias", w("bias"), true);
    src << fmt::format("    x = torch.conv2d(x, self.{0}weight, {1}, {2}, {3}, [1, 1], {4})\n", p,
                       s.bias ? "self." + p + "bias" : "None", pair(s.stride), pair(s.padding), s.groups);
  };
  return t;
}

// ---- batch norm ----------------------------------------------------------------------------

LayerTraits batchnorm_traits() {
  LayerTraits t{LayerKind::BatchNorm, "batchnorm"};
  t.per_channel = true;
  t.quant = QuantClass::Reject;
  t.json = {{"channels", &LayerSpec::out_channels}, {"eps", &LayerSpec::eps}, {"momentum", &LayerSpec::momentum}};
  t.describe = [](const LayerSpec& s) { return fmt::format("BatchNorm2d({}, eps={:g})", s.out_channels, s.eps); };
  t.tensors = [](const LayerSpec& s) {
    return std::vector<TensorDecl>{{"weight", {s.out_channels}},
                                   {"bias", {s.out_channels}},
                                   {"running_mean", {s.out_channels}, false},
                                   {"running_var", {s.out_channels}, false}};
  };
  t.check = per_channel_check;
  t.make = [](const LayerSpec& s) -> std::shared_ptr<nn::Module> {
    return std::make_shared<BatchNorm2dImpl>(nn::BatchNorm2dOptions(s.out_channels).eps(s.eps).momentum(s.momentum));
  };
  t.forward = module_forward<BatchNorm2dImpl>;
  t.apply = [](const LayerSpec& s, const TensorFn& w, const torch::Tensor& x) {
    return torch::batch_norm(x, w("weight"), w("bias"), w("running_mean"), w("running_var"), false, 0.0, s.eps, true);
  };
  t.output_shape = same_shape;
  t.macs = no_macs;
  t.onnx = [](const LayerSpec& s, const TensorFn& w, OnnxSink& g, const std::string& p, const std::string& x,
              const std::string& out) {
    return g.node("BatchNormalization",
                  {x, g.init(p + "weight", w("weight")), g.init(p + "bias", w("bias")),
                   g.init(p + "running_mean", w("running_mean")), g.init(p + "running_var", w("running_var"))},
                  {A::fl("epsilon", static_cast<float>(s.eps))}, out);
  };
  t.torchscript = [](const LayerSpec& s, const TensorFn& w, const TsRegister& reg, std::ostream& src,
                     const std::string& p) {
    reg(p + "weight", w("weight"), true);
    reg(p + "bias", w("bias"), true);
    reg(p + "running_mean", w("running_mean"), false);
    reg(p + "running_var", w("running_var"), false);
    src << fmt::format(
        "    x = torch.batch_norm(x, self.{0}weight, self.{0}bias, self.{0}running_mean, self.{0}running_var, "
        "False, 0.0, {1}, True)\n",
        p, s.eps);
  };
  return t;
}

// ---- activations ---------------------------------------------------------------------------

LayerTraits relu_traits() {
  LayerTraits t{LayerKind::ReLU, "relu"};
  t.positively_homogeneous = true;
  t.quant = QuantClass::U8;
  t.describe = [](const LayerSpec&) { return std::string("ReLU"); };
  t.tensors = no_tensors;
  t.check = no_check;
  t.make = [](const LayerSpec&) -> std::shared_ptr<nn::Module> { return std::make_shared<nn::ReLUImpl>(); };
  t.forward = [](nn::Module&, const torch::Tensor& x) { return torch::relu(x); };
  t.apply = [](const LayerSpec&, const TensorFn&, const torch::Tensor& x) { return torch::relu(x); };
  t.output_shape = same_shape;
  t.macs = no_macs;
  t.onnx = [](const LayerSpec&, const TensorFn&, OnnxSink& g, const std::string&, const std::string& x,
              const std::string& out) { return g.node("Relu", {x}, {}, out); };
  t.torchscript = [](const LayerSpec&, const TensorFn&, const TsRegister&, std::ostream& src, const std::string&) {
    src << "    x = torch.relu(x)\n";
  };
  return t;
}

LayerTraits prelu_traits() {
  LayerTraits t{LayerKind::PReLU, "prelu"};
  t.per_channel = true;
  t.quant = QuantClass::Fallback;
  t.json = {{"channels", &LayerSpec::out_channels}};
  t.describe = [](const LayerSpec& s) { return fmt::format("PReLU({})", s.out_channels); };
  t.tensors = [](const LayerSpec& s) { return std::vector<TensorDecl>{{"weight", {s.out_channels}}}; };
  t.check = per_channel_check;
  t.make = [](const LayerSpec& s) -> std::shared_ptr<nn::Module> {
    return std::make_shared<nn::PReLUImpl>(nn::PReLUOptions().num_parameters(s.out_channels));
  };
  t.forward = module_forward<nn::PReLUImpl>;
  t.apply = [](const LayerSpec&, const TensorFn& w, const torch::Tensor& x) { return torch::prelu(x, w("weight")); };
  t.output_shape = same_shape;
  t.macs = no_macs;
  t.onnx = [](const LayerSpec&, const TensorFn& w, OnnxSink& g, const std::string& p, const std::string& x,
              const std::string& out) {
    return g.node("PRelu", {x, g.init(p + "weight", w("weight").view({-1, 1, 1}))}, {}, out);
  };
  t.torchscript = [](const LayerSpec&, const TensorFn& w, const TsRegister& reg, std::ostream& src,
                     const std::string& p) {
    reg(p + "weight", w("weight"), true);
    src << fmt::format("    x = torch.prelu(x, self.{}weight)\n", p);
  };
  return t;
}

LayerTraits clamp_traits() {
  LayerTraits t{LayerKind::Clamp, "clamp"};
  t.per_channel = true;
  t.quant = QuantClass::U8;
  t.json = {{"channels", &LayerSpec::out_channels}};
  t.describe = [](const LayerSpec& s) { return fmt::format("ChannelClamp({})", s.out_channels); };
  t.tensors = [](const LayerSpec& s) {
    return std::vector<TensorDecl>{{"min", {s.out_channels}, false}, {"max", {s.out_channels}, false}};
  };
  t.check = per_channel_check;
  t.make = [](const LayerSpec& s) -> std::shared_ptr<nn::Module> { return std::make_shared<ChannelClampImpl>(s.out_channels); };
  t.forward = module_forward<ChannelClampImpl>;
  t.apply = [](const LayerSpec&, const TensorFn& w, const torch::Tensor& x) {
    return torch::clamp(x, channel_view(w("min"), x.dim()), channel_view(w("max"), x.dim()));
  };
  t.output_shape = same_shape;
  t.macs = no_macs;
  // y = Max(Min(x, hi), lo), bounds [1, C, 1, 1] (0/6 on clipped channels, -inf/+inf on reserved
  // ones): exact. (OpenCV 4.6 cannot read this or any other opset >= 11 form of a clip: its importer
  // takes Clip only with opset-6 attributes and rejects Min/Max against constants; ONNX Runtime runs it.)
  t.onnx = [](const LayerSpec&, const TensorFn& w, OnnxSink& g, const std::string& p, const std::string& x,
              const std::string& out) {
    const auto hi = g.node("Min", {x, g.init(p + "max", w("max").view({1, -1, 1, 1}))}, {});
    return g.node("Max", {hi, g.init(p + "min", w("min").view({1, -1, 1, 1}))}, {}, out);
  };
  // Uniform bounds (ReLU6) as a scalar clamp, which freezing fuses into the conv; mixed bounds
  // (reserved channels unclipped) as maximum/minimum with broadcast bounds (optimize_for_inference
  // takes clamp bounds as scalars only).
  t.torchscript = [](const LayerSpec&, const TensorFn& w, const TsRegister& reg, std::ostream& src,
                     const std::string& p) {
    const auto lo = w("min").to(torch::kDouble), hi = w("max").to(torch::kDouble);
    const double lo0 = lo[0].item<double>(), hi0 = hi[0].item<double>();
    if (lo.eq(lo0).all().item<bool>() && hi.eq(hi0).all().item<bool>()) {
      if (std::isinf(lo0) && lo0 < 0 && std::isinf(hi0) && hi0 > 0) return;  // identity
      src << fmt::format("    x = torch.clamp(x, {}, {})\n", std::isinf(lo0) ? "None" : scalar(lo0),
                         std::isinf(hi0) ? "None" : scalar(hi0));
    } else {
      reg(p + "min", w("min").view({1, -1, 1, 1}), false);
      reg(p + "max", w("max").view({1, -1, 1, 1}), false);
      src << fmt::format("    x = torch.minimum(torch.maximum(x, self.{0}min), self.{0}max)\n", p);
    }
  };
  return t;
}

// ---- pooling and the head ------------------------------------------------------------------

LayerTraits maxpool_traits() {
  LayerTraits t{LayerKind::MaxPool, "maxpool"};
  t.spatial = true;
  t.positively_homogeneous = true;
  t.quant = QuantClass::U8;
  t.json = {{"kernel", &LayerSpec::kernel}, {"stride", &LayerSpec::stride}, {"padding", &LayerSpec::padding}};
  t.describe = [](const LayerSpec& s) { return fmt::format("MaxPool2d(k={}, s={}, p={})", s.kernel, s.stride, s.padding); };
  t.tensors = no_tensors;
  t.check = no_check;
  t.make = [](const LayerSpec& s) -> std::shared_ptr<nn::Module> {
    return std::make_shared<nn::MaxPool2dImpl>(nn::MaxPool2dOptions(s.kernel).stride(s.stride).padding(s.padding));
  };
  t.forward = module_forward<nn::MaxPool2dImpl>;
  t.apply = [](const LayerSpec& s, const TensorFn&, const torch::Tensor& x) {
    return torch::max_pool2d(x, s.kernel, s.stride, s.padding);
  };
  t.output_shape = [](const LayerSpec& s, const Shape& in) {
    return Shape{in[0], in[1], window_out(in[2], s), window_out(in[3], s)};
  };
  t.macs = no_macs;
  t.onnx = [](const LayerSpec& s, const TensorFn&, OnnxSink& g, const std::string&, const std::string& x,
              const std::string& out) { return g.node("MaxPool", {x}, window_attrs(s), out); };
  t.torchscript = [](const LayerSpec& s, const TensorFn&, const TsRegister&, std::ostream& src, const std::string&) {
    src << fmt::format("    x = torch.max_pool2d(x, {}, {}, {}, [1, 1], False)\n", pair(s.kernel), pair(s.stride),
                       pair(s.padding));
  };
  return t;
}

LayerTraits avgpool_traits() {
  LayerTraits t{LayerKind::AvgPool, "avgpool"};
  t.spatial = false;  // adaptive: also accepts [N, C, 1, 1]-like inputs; the chain checks place it
  t.positively_homogeneous = true;
  t.quant = QuantClass::Head;
  t.describe = [](const LayerSpec&) { return std::string("AdaptiveAvgPool2d(1)"); };
  t.tensors = no_tensors;
  t.check = no_check;
  t.make = [](const LayerSpec&) -> std::shared_ptr<nn::Module> {
    return std::make_shared<nn::AdaptiveAvgPool2dImpl>(nn::AdaptiveAvgPool2dOptions({1, 1}));
  };
  t.forward = module_forward<nn::AdaptiveAvgPool2dImpl>;
  t.apply = [](const LayerSpec&, const TensorFn&, const torch::Tensor& x) { return torch::adaptive_avg_pool2d(x, {1, 1}); };
  t.output_shape = [](const LayerSpec&, const Shape& in) { return Shape{in[0], in[1], 1, 1}; };
  t.macs = no_macs;
  t.onnx = [](const LayerSpec&, const TensorFn&, OnnxSink& g, const std::string&, const std::string& x,
              const std::string& out) { return g.node("GlobalAveragePool", {x}, {}, out); };
  t.torchscript = [](const LayerSpec&, const TensorFn&, const TsRegister&, std::ostream& src, const std::string&) {
    src << "    x = torch.adaptive_avg_pool2d(x, [1, 1])\n";
  };
  return t;
}

LayerTraits flatten_traits() {
  LayerTraits t{LayerKind::Flatten, "flatten"};
  t.positively_homogeneous = true;
  t.quant = QuantClass::Head;
  t.describe = [](const LayerSpec&) { return std::string("Flatten"); };
  t.tensors = no_tensors;
  t.check = no_check;
  t.make = [](const LayerSpec&) -> std::shared_ptr<nn::Module> { return std::make_shared<nn::FlattenImpl>(); };
  t.forward = [](nn::Module&, const torch::Tensor& x) { return torch::flatten(x, 1); };
  t.apply = [](const LayerSpec&, const TensorFn&, const torch::Tensor& x) { return x.flatten(1); };
  t.output_shape = [](const LayerSpec&, const Shape& in) {
    return in.size() == 4 ? Shape{in[0], in[1] * in[2] * in[3]} : in;
  };
  t.macs = no_macs;
  t.onnx = [](const LayerSpec&, const TensorFn&, OnnxSink& g, const std::string&, const std::string& x,
              const std::string& out) { return g.node("Flatten", {x}, {A::i("axis", 1)}, out); };
  t.torchscript = [](const LayerSpec&, const TensorFn&, const TsRegister&, std::ostream& src, const std::string&) {
    src << "    x = torch.flatten(x, 1)\n";
  };
  return t;
}

LayerTraits linear_traits() {
  LayerTraits t{LayerKind::Linear, "linear"};
  t.sets_channels = true;
  t.quant = QuantClass::Head;
  t.json = {{"in", &LayerSpec::in_channels}, {"out", &LayerSpec::out_channels}, {"bias", &LayerSpec::bias}};
  t.describe = [](const LayerSpec& s) {
    return fmt::format("Linear({}, {}{})", s.in_channels, s.out_channels, s.bias ? ", bias" : "");
  };
  t.tensors = [](const LayerSpec& s) {
    std::vector<TensorDecl> d{{"weight", {s.out_channels, s.in_channels}}};
    if (s.bias) d.push_back({"bias", {s.out_channels}});
    return d;
  };
  t.check = [](const LayerSpec& s, int64_t c, const std::string& where) {
    TORCH_CHECK(s.in_channels == c, where, " expects ", s.in_channels, " features, but ", c, " arrive");
  };
  t.make = [](const LayerSpec& s) -> std::shared_ptr<nn::Module> {
    return std::make_shared<nn::LinearImpl>(nn::LinearOptions(s.in_channels, s.out_channels).bias(s.bias));
  };
  t.forward = module_forward<nn::LinearImpl>;
  t.apply = [](const LayerSpec& s, const TensorFn& w, const torch::Tensor& x) {
    return torch::linear(x, w("weight"), s.bias ? w("bias") : torch::Tensor());
  };
  t.output_shape = [](const LayerSpec& s, const Shape& in) { return Shape{in[0], s.out_channels}; };
  t.macs = [](const LayerSpec& s, const Shape&) { return s.in_channels * s.out_channels; };
  t.onnx = [](const LayerSpec& s, const TensorFn& w, OnnxSink& g, const std::string& p, const std::string& x,
              const std::string& out) {
    std::vector<std::string> in = {x, g.init(p + "weight", w("weight"))};
    if (s.bias) in.push_back(g.init(p + "bias", w("bias")));
    return g.node("Gemm", in, {A::i("transB", 1)}, out);
  };
  t.torchscript = [](const LayerSpec& s, const TensorFn& w, const TsRegister& reg, std::ostream& src,
                     const std::string& p) {
    reg(p + "weight", w("weight"), true);
    if (s.bias) reg(p + "bias", w("bias"), true);
    src << fmt::format("    x = torch.linear(x, self.{}weight, {})\n", p, s.bias ? "self." + p + "bias" : "None");
  };
  return t;
}

// ---- squeeze-and-excitation ----------------------------------------------------------------

LayerTraits se_traits() {
  LayerTraits t{LayerKind::SE, "se"};
  t.per_channel = true;
  t.spatial = true;
  t.quant = QuantClass::Fallback;
  t.json = {{"channels", &LayerSpec::out_channels}, {"scaled", &LayerSpec::scaled}, {"hidden", &LayerSpec::hidden}};
  t.describe = [](const LayerSpec& s) {
    return s.scaled == s.out_channels ? fmt::format("SE({}, hidden={})", s.out_channels, s.hidden)
                                      : fmt::format("SE({} of {}, hidden={})", s.scaled, s.out_channels, s.hidden);
  };
  t.tensors = [](const LayerSpec& s) {
    return std::vector<TensorDecl>{
        {"w1", {s.hidden, s.scaled}}, {"b1", {s.hidden}}, {"w2", {s.scaled, s.hidden}}, {"b2", {s.scaled}}};
  };
  t.check = [](const LayerSpec& s, int64_t c, const std::string& where) {
    TORCH_CHECK(s.out_channels == c, where, " has ", s.out_channels, " channels, but ", c, " arrive");
    TORCH_CHECK(s.scaled >= 1 && s.scaled <= c && s.hidden >= 1, where, ": bad SE widths");
  };
  t.make = [](const LayerSpec& s) -> std::shared_ptr<nn::Module> {
    return std::make_shared<ChannelSEImpl>(s.out_channels, s.scaled, s.hidden);
  };
  t.forward = module_forward<ChannelSEImpl>;
  t.apply = [](const LayerSpec& s, const TensorFn& w, const torch::Tensor& x) {
    auto a = s.scaled == s.out_channels ? x : x.narrow(1, 0, s.scaled);
    auto g = torch::sigmoid(torch::linear(torch::relu(torch::linear(a.mean({2, 3}), w("w1"), w("b1"))), w("w2"), w("b2")));
    auto y = a * g.unsqueeze(2).unsqueeze(3);
    return s.scaled == s.out_channels ? y : torch::cat({y, x.narrow(1, s.scaled, s.out_channels - s.scaled)}, 1);
  };
  t.output_shape = same_shape;
  t.macs = [](const LayerSpec& s, const Shape&) { return 2 * s.scaled * s.hidden; };
  // a = x[:, :scaled]; g = Sigmoid(Conv1x1(Relu(Conv1x1(GlobalAveragePool(a))))); [a * g ; x[:, scaled:]]
  t.onnx = [](const LayerSpec& s, const TensorFn& w, OnnxSink& g, const std::string& p, const std::string& x,
              const std::string& out) {
    const auto slice = [&](int64_t from, int64_t to, const std::string& tag) {
      const auto opts = torch::TensorOptions().dtype(torch::kLong);
      return g.node("Slice", {x, g.init(p + tag + "_starts", torch::full({1}, from, opts)),
                              g.init(p + tag + "_ends", torch::full({1}, to, opts)),
                              g.init(p + tag + "_axes", torch::ones({1}, opts))},
                    {});
    };
    const std::string a = s.scaled == s.out_channels ? x : slice(0, s.scaled, "a");
    const auto conv1x1 = [&](const std::string& in, const torch::Tensor& wt, const torch::Tensor& b,
                             const std::string& tag) {
      return g.node("Conv", {in, g.init(p + tag + "_weight", wt.view({wt.size(0), wt.size(1), 1, 1})), g.init(p + tag + "_bias", b)},
                    {A::is("kernel_shape", {1, 1})});
    };
    auto e = g.node("GlobalAveragePool", {a}, {});
    e = g.node("Relu", {conv1x1(e, w("w1"), w("b1"), "w1")}, {});
    e = g.node("Sigmoid", {conv1x1(e, w("w2"), w("b2"), "w2")}, {});
    if (s.scaled == s.out_channels) return g.node("Mul", {a, e}, {}, out);
    const auto y = g.node("Mul", {a, e}, {});
    return g.node("Concat", {y, slice(s.scaled, s.out_channels, "b")}, {A::i("axis", 1)}, out);
  };
  t.torchscript = [](const LayerSpec& s, const TensorFn& w, const TsRegister& reg, std::ostream& src,
                     const std::string& p) {
    for (const char* n : {"w1", "b1", "w2", "b2"}) reg(p + n, w(n), true);
    src << fmt::format("    a = torch.narrow(x, 1, 0, {})\n", s.scaled);
    src << fmt::format(
        "    g = torch.sigmoid(torch.linear(torch.relu(torch.linear(torch.mean(a, [2, 3]), self.{0}w1, self.{0}b1)), "
        "self.{0}w2, self.{0}b2))\n",
        p);
    if (s.scaled == s.out_channels)
      src << "    x = a * g.unsqueeze(2).unsqueeze(3)\n";
    else
      src << fmt::format("    x = torch.cat([a * g.unsqueeze(2).unsqueeze(3), torch.narrow(x, 1, {}, {})], 1)\n",
                         s.scaled, s.out_channels - s.scaled);
  };
  return t;
}

std::vector<LayerTraits> make_table() {
  std::vector<LayerTraits> t = {conv_traits(),    batchnorm_traits(), relu_traits(),    prelu_traits(),
                                clamp_traits(),   maxpool_traits(),   avgpool_traits(), flatten_traits(),
                                linear_traits(),  se_traits()};
  for (size_t i = 0; i < t.size(); ++i)
    TORCH_INTERNAL_ASSERT(static_cast<size_t>(t[i].kind) == i, "layer traits table out of LayerKind order");
  return t;
}

}  // namespace

const std::vector<LayerTraits>& all_traits() {
  static const std::vector<LayerTraits> table = make_table();
  return table;
}

const LayerTraits& traits(LayerKind kind) {
  const auto i = static_cast<size_t>(kind);
  const auto& t = all_traits();
  TORCH_CHECK(i < t.size(), "unknown plain layer kind ", i);
  return t[i];
}

TensorFn module_tensors(const torch::nn::Module& m) {
  return [&m](const std::string& name) -> torch::Tensor {
    const auto params = m.named_parameters(false);
    if (const auto* p = params.find(name)) return *p;
    const auto buffers = m.named_buffers(false);
    if (const auto* b = buffers.find(name)) return *b;
    TORCH_CHECK(false, "plain layer ", m.name(), " has no tensor '", name, "'");
  };
}

}  // namespace ir

// ---- LayerSpec basics, from the table ------------------------------------------------------

std::string to_string(LayerKind kind) {
  const auto i = static_cast<size_t>(kind);
  return i < ir::all_traits().size() ? ir::all_traits()[i].name : "?";
}

LayerKind layer_kind_from_string(const std::string& name) {
  for (const auto& t : ir::all_traits())
    if (name == t.name) return t.kind;
  TORCH_CHECK(false, "unknown plain layer type '", name, "'");
}

std::optional<int64_t> LayerSpec::output_channels() const {
  if (ir::traits(kind).sets_channels) return out_channels;
  return std::nullopt;
}

std::string LayerSpec::describe() const { return ir::traits(kind).describe(*this); }

std::vector<int64_t> output_sides(const std::vector<LayerSpec>& layers, int64_t size) {
  std::vector<int64_t> sides(layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& s = layers[i];
    if (s.kind == LayerKind::Conv || s.kind == LayerKind::MaxPool)
      size = (size + 2 * s.padding - s.kernel) / s.stride + 1;
    else if (s.kind == LayerKind::AvgPool)
      size = 1;
    sides[i] = size;
  }
  return sides;
}

void check_chain(const std::vector<LayerSpec>& layers, int64_t in_channels) {
  int64_t c = in_channels;
  bool flat = false;
  for (size_t i = 0; i < layers.size(); ++i) {
    const auto& s = layers[i];
    const auto& t = ir::traits(s.kind);
    const auto where = fmt::format("plain layer {} ({})", i, s.describe());
    TORCH_CHECK(!(flat && t.spatial), where, " follows a Flatten");
    t.check(s, c, where);
    if (t.sets_channels) c = s.out_channels;
    if (s.kind == LayerKind::Flatten) flat = true;
    TORCH_CHECK(c >= 1, where, " leaves no channels");
  }
}

}  // namespace rmnet
