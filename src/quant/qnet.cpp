#include "rmnet/quant/qnet.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "rmnet/ir/traits.h"

namespace rmnet {

std::string to_string(QuantRole r) {
  switch (r) {
    case QuantRole::Int8: return "int8";
    case QuantRole::U8: return "u8";
    case QuantRole::Fallback: return "float32 (fallback)";
    case QuantRole::Head: return "float32 (head)";
  }
  return "?";
}

QuantPlan quant_plan(const std::vector<LayerSpec>& layers) {
  const size_t n = layers.size();
  QuantPlan p;
  p.role.assign(n, QuantRole::Head);
  p.point.assign(n, false);
  p.head = n;
  for (size_t i = 0; i < n; ++i) {
    if (ir::traits(layers[i].kind).quant == ir::QuantClass::Head) {
      p.head = i;
      break;
    }
  }
  for (size_t i = 0; i < p.head; ++i) {
    const auto& s = layers[i];
    switch (ir::traits(s.kind).quant) {
      case ir::QuantClass::Reject:
        TORCH_CHECK(false, "quantization: layer ", i, " is a BatchNorm (", s.describe(),
                    "); fold it into its conv first (fold_batchnorm)");
      case ir::QuantClass::Int8: {
        // the conv's run of activations: relu/clamp fused on its INT8 output, PReLU in float, up to
        // the quantization point
        p.role[i] = QuantRole::Int8;
        size_t j = i + 1;
        for (; j < p.head; ++j) {
          const auto kj = layers[j].kind;
          if (kj == LayerKind::ReLU || kj == LayerKind::Clamp) {
            p.role[j] = QuantRole::Int8;
          } else if (kj == LayerKind::PReLU) {
            p.role[j] = QuantRole::Fallback;
          } else {
            break;
          }
        }
        p.point[j - 1] = true;
        i = j - 1;
        break;
      }
      case ir::QuantClass::U8:
        p.role[i] = QuantRole::U8;
        break;
      case ir::QuantClass::Fallback:
        p.role[i] = QuantRole::Fallback;
        p.point[i] = true;
        break;
      case ir::QuantClass::Head:
        TORCH_CHECK(false, "quantization: unexpected layer ", i, " (", s.describe(), ")");
    }
  }
  return p;
}

size_t QuantPlan::point_of(size_t conv) const {
  TORCH_CHECK(conv < head && role[conv] == QuantRole::Int8, "quantization plan: layer ", conv, " is not an INT8 conv");
  size_t k = conv;
  while (!point[k]) ++k;  // quant_plan marks the end of every INT8 run before the head
  return k;
}

bool QuantPlan::run_has_fallback(size_t conv) const {
  const size_t k = point_of(conv);
  for (size_t j = conv + 1; j <= k; ++j)
    if (role[j] == QuantRole::Fallback) return true;
  return false;
}

torch::Tensor quantize_u8(const torch::Tensor& x, double scale, int64_t zero_point) {
  return torch::clamp(torch::round(x / scale) + static_cast<double>(zero_point), 0, 255).to(torch::kByte);
}

torch::Tensor dequantize_u8(const torch::Tensor& q, double scale, int64_t zero_point) {
  return (q.to(torch::kFloat) - static_cast<double>(zero_point)) * scale;
}

torch::Tensor fake_quantize_u8(const torch::Tensor& x, double scale, int64_t zero_point) {
  return dequantize_u8(quantize_u8(x, scale, zero_point), scale, zero_point);
}

const torch::Tensor& QuantLayerImpl::add_param(const std::string& name, torch::Tensor t) {
  return by_name_[name] = register_parameter(name, std::move(t), /*requires_grad=*/false);
}
const torch::Tensor& QuantLayerImpl::add_buffer(const std::string& name, torch::Tensor t) {
  return by_name_[name] = register_buffer(name, std::move(t));
}
bool QuantLayerImpl::has(const std::string& name) const { return by_name_.count(name) > 0; }
const torch::Tensor& QuantLayerImpl::get(const std::string& name) const {
  auto it = by_name_.find(name);
  TORCH_CHECK(it != by_name_.end(), "quantized layer has no tensor '", name, "'");
  return it->second;
}

QuantizedNetImpl::QuantizedNetImpl(std::vector<LayerSpec> layers, ModelOptions options)
    : ModelImpl(std::move(options)), specs_(std::move(layers)) {
  check_chain(specs_, options_.in_channels());
  plan_ = quant_plan(specs_);
  const auto f = torch::TensorOptions().dtype(torch::kFloat);
  const auto l = torch::TensorOptions().dtype(torch::kLong);
  input_scale_tensor = register_buffer("input_scale", torch::ones({1}, f));
  input_zero_point_tensor = register_buffer("input_zero_point", torch::zeros({1}, l));
  for (size_t i = 0; i < specs_.size(); ++i) {
    const auto& s = specs_[i];
    auto q = std::make_shared<QuantLayerImpl>();
    if (s.kind == LayerKind::Conv) {  // INT8 weight with per-channel scales; the bias always (BN folded)
      q->add_param("weight", torch::zeros({s.out_channels, s.in_channels / s.groups, s.kernel, s.kernel},
                                          torch::TensorOptions().dtype(torch::kChar)));
      q->add_param("bias", torch::zeros({s.out_channels}, f));
      q->add_buffer("weight_scale", torch::ones({s.out_channels}, f));
    } else {
      for (const auto& t : ir::traits(s.kind).tensors(s))
        t.parameter ? q->add_param(t.name, torch::zeros(t.shape, f)) : q->add_buffer(t.name, torch::zeros(t.shape, f));
    }
    if (plan_.point[i]) {
      q->add_buffer("out_scale", torch::ones({1}, f));
      q->add_buffer("out_zero_point", torch::zeros({1}, l));
    }
    layers_.push_back(register_module(std::to_string(i), q));
  }
}

double QuantizedNetImpl::input_scale() const { return input_scale_tensor.item<double>(); }
int64_t QuantizedNetImpl::input_zero_point() const { return input_zero_point_tensor.item<int64_t>(); }
double QuantizedNetImpl::out_scale(size_t i) const { return tensor(i, "out_scale").item<double>(); }
int64_t QuantizedNetImpl::out_zero_point(size_t i) const { return tensor(i, "out_zero_point").item<int64_t>(); }


torch::Tensor quant_float_layer(const LayerSpec& s, const std::map<std::string, torch::Tensor>& t, torch::Tensor x) {
  const auto get = [&](const char* name) -> const torch::Tensor& {
    auto it = t.find(name);
    TORCH_CHECK(it != t.end(), "quantized layer ", s.describe(), " has no tensor '", name, "'");
    return it->second;
  };
  if (s.kind == LayerKind::Conv) {
    const auto w = get("weight").to(torch::kFloat) * get("weight_scale").view({-1, 1, 1, 1});
    return torch::conv2d(x, w, get("bias"), s.stride, s.padding, 1, s.groups);
  }
  const auto& traits = ir::traits(s.kind);
  TORCH_CHECK(traits.quant != ir::QuantClass::Reject, "a quantized network has no ", s.describe(), " layer");
  return traits.apply(s, [&](const std::string& name) { return get(name.c_str()); }, x);
}

std::map<std::string, torch::Tensor> QuantLayerImpl::tensors() const {
  std::map<std::string, torch::Tensor> m;
  for (const auto& p : named_parameters(false)) m[p.key()] = p.value();
  for (const auto& b : named_buffers(false)) m[b.key()] = b.value();
  return m;
}

torch::Tensor QuantizedNetImpl::forward(torch::Tensor x) {
  torch::NoGradGuard ng;
  x = x.to(input_scale_tensor.device(), torch::kFloat);
  x = fake_quantize_u8(x, input_scale(), input_zero_point());
  for (size_t i = 0; i < specs_.size(); ++i) {
    x = quant_float_layer(specs_[i], layers_[i]->tensors(), x);
    if (plan_.point[i]) x = fake_quantize_u8(x, out_scale(i), out_zero_point(i));
  }
  return x;
}

std::shared_ptr<ModelImpl> QuantizedNetImpl::make_like() const {
  return std::make_shared<QuantizedNetImpl>(specs_, options_);
}

std::vector<std::string> QuantizedNetImpl::fallbacks() const {
  std::vector<std::string> r;
  for (size_t i = 0; i < specs_.size(); ++i)
    if (plan_.role[i] == QuantRole::Fallback) r.push_back(fmt::format("{}: {}", i, specs_[i].describe()));
  return r;
}

std::string QuantizedNetImpl::summary() const {
  std::string out = fmt::format("{:>4}  {:<44} {:<20} {}\n", "#", "layer", "runs in", "activation (scale, zero point)");
  out += fmt::format("{:>4}  {:<44} {:<20} {:.6g}, {}\n", "in", "quantize input", "u8", input_scale(),
                     input_zero_point());
  for (size_t i = 0; i < specs_.size(); ++i) {
    std::string act = plan_.point[i] ? fmt::format("{:.6g}, {}", out_scale(i), out_zero_point(i)) : "";
    if (i == plan_.head) out += fmt::format("{:>4}  {:<44} {:<20}\n", "", "dequantize", "");
    out += fmt::format("{:>4}  {:<44} {:<20} {}\n", i, specs_[i].describe(), to_string(plan_.role[i]), act);
  }
  const auto fb = fallbacks();
  out += fb.empty() ? "float32 fallbacks: none\n" : fmt::format("float32 fallbacks: {}\n", fmt::join(fb, "; "));
  return out;
}

void QuantizedNetImpl::to(torch::Dtype dtype, bool non_blocking) {
  torch::NoGradGuard g;
  for (auto& t : parameters(true))
    if (t.is_floating_point()) t.set_data(t.to(dtype, non_blocking));
  for (auto& t : buffers(true))
    if (t.is_floating_point()) t.set_data(t.to(dtype, non_blocking));
}

void QuantizedNetImpl::to(torch::Device device, torch::Dtype dtype, bool non_blocking) {
  torch::nn::Module::to(device, non_blocking);
  to(dtype, non_blocking);
}

}  // namespace rmnet
