#include "rmnet/ir/chain.h"

#include <algorithm>
#include <cmath>

namespace rmnet::ir {

namespace {
thread_local torch::ScalarType t_work_dtype = torch::kDouble;
bool is_weight(const LayerSpec& s, const std::string& name) {
  return name == "weight" && (s.kind == LayerKind::Conv || s.kind == LayerKind::Linear);
}
}  // namespace

torch::Tensor to_f64(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU);
  return c.is_floating_point() ? c.to(torch::kDouble) : c.clone();
}

torch::Tensor to_work(const torch::Tensor& t) { return t.detach().to(torch::kCPU, t_work_dtype); }
torch::TensorOptions work_options() { return torch::TensorOptions().dtype(t_work_dtype); }

WorkDtypeGuard::WorkDtypeGuard(torch::ScalarType model_dtype) : previous_(t_work_dtype) {
  t_work_dtype = model_dtype == torch::kDouble ? torch::kDouble : torch::kFloat;
}
WorkDtypeGuard::~WorkDtypeGuard() { t_work_dtype = previous_; }

BNParams BNParams::from(const torch::nn::BatchNorm2dImpl& bn) {
  const auto& o = bn.options;
  TORCH_CHECK(o.track_running_stats(), "BatchNorm2d without running statistics cannot be converted");
  BNParams p;
  const auto c = o.num_features();
  auto dopt = torch::TensorOptions().dtype(torch::kDouble);
  p.weight = o.affine() ? to_f64(bn.weight) : torch::ones({c}, dopt);
  p.bias = o.affine() ? to_f64(bn.bias) : torch::zeros({c}, dopt);
  p.mean = to_f64(bn.running_mean);
  p.var = to_f64(bn.running_var);
  p.eps = o.eps();
  p.stored = bn.running_mean.scalar_type();
  return p;
}

torch::Tensor BNParams::fold_bias(const torch::Tensor& b) const {
  const auto t = ((b.defined() ? b : torch::zeros_like(mean)) - mean) * scale();
  const auto r = t + bias;
  const int digits = stored == torch::kFloat   ? 24
                     : stored == torch::kHalf  ? 11
                     : stored == torch::kBFloat16 ? 8
                                               : 53;
  const double ulps = 4 * std::ldexp(1.0, 1 - digits);
  return torch::where(r.abs() <= ulps * (t.abs() + bias.abs()), torch::zeros_like(r), r);
}

BNParams BNParams::identity(const torch::Tensor& mean, const torch::Tensor& var, double eps) {
  BNParams p;
  p.mean = to_f64(mean);
  p.var = to_f64(var);
  p.eps = eps;
  p.weight = torch::sqrt(p.var + eps);
  p.bias = p.mean.clone();
  return p;
}

BNParams BNParams::cat(const std::vector<BNParams>& parts) {
  BNParams p;
  std::vector<torch::Tensor> w, b, m, v;
  for (const auto& q : parts) {
    TORCH_CHECK(q.eps == parts.front().eps, "cannot join BatchNorms with different eps (", q.eps, " vs ",
                parts.front().eps, ")");
    w.push_back(q.weight);
    b.push_back(q.bias);
    m.push_back(q.mean);
    v.push_back(q.var);
  }
  p.weight = torch::cat(w);
  p.bias = torch::cat(b);
  p.mean = torch::cat(m);
  p.var = torch::cat(v);
  p.eps = parts.front().eps;
  return p;
}

void Chain::conv(const torch::Tensor& weight, const torch::Tensor& bias, int64_t stride, int64_t padding,
                 int64_t groups) {
  ChainLayer l;
  l.spec = LayerSpec::conv(weight.size(1) * groups, weight.size(0), weight.size(2), stride, padding, groups,
                           bias.defined());
  l.tensors["weight"] = to_work(weight);
  if (bias.defined()) l.tensors["bias"] = to_f64(bias);
  push(std::move(l));
}

void Chain::batchnorm(const BNParams& bn, double momentum) {
  ChainLayer l;
  l.spec = LayerSpec::batchnorm(bn.weight.size(0), bn.eps, momentum);
  l.tensors["weight"] = bn.weight;
  l.tensors["bias"] = bn.bias;
  l.tensors["running_mean"] = bn.mean;
  l.tensors["running_var"] = bn.var;
  push(std::move(l));
}

void Chain::relu() { push({LayerSpec::relu(), {}, {}}); }

void Chain::prelu(const torch::Tensor& slopes) {
  push({LayerSpec::prelu(slopes.size(0)), {{"weight", to_f64(slopes)}}, {}});
}

void Chain::clamp(const torch::Tensor& lo, const torch::Tensor& hi) {
  push({LayerSpec::clamp(lo.size(0)), {{"min", to_f64(lo)}, {"max", to_f64(hi)}}, {}});
}

void Chain::maxpool(int64_t kernel, int64_t stride, int64_t padding) {
  push({LayerSpec::maxpool(kernel, stride, padding), {}, {}});
}
void Chain::avgpool() { push({LayerSpec::avgpool(), {}, {}}); }
void Chain::flatten() { push({LayerSpec::flatten(), {}, {}}); }

void Chain::linear(const torch::Tensor& weight, const torch::Tensor& bias) {
  ChainLayer l;
  l.spec = LayerSpec::linear(weight.size(1), weight.size(0), bias.defined());
  l.tensors["weight"] = to_work(weight);
  if (bias.defined()) l.tensors["bias"] = to_f64(bias);
  push(std::move(l));
}

void Chain::push(ChainLayer layer) {
  const auto k = layer.spec.kind;
  if (!layer.origin.known() && k != LayerKind::Conv && k != LayerKind::Linear && !layers.empty())
    layer.origin = layers.back().origin;
  layers.push_back(std::move(layer));
}

void Chain::mark(LayerOrigin origin) {
  TORCH_CHECK(!layers.empty(), "internal: provenance for a layer of an empty chain");
  const auto& s = layers.back().spec;
  TORCH_CHECK(!origin.known() || origin.channels() == s.out_channels, "internal: provenance of ", s.describe(),
              " describes ", origin.channels(), " channels");
  layers.back().origin = std::move(origin);
}

std::string Chain::name(const torch::nn::Module& m) const {
  auto it = names.find(&m);
  return it == names.end() ? "?" : it->second;
}

void Chain::name_modules(const torch::nn::Module& model) {
  names.clear();
  for (const auto& item : model.named_modules("", /*include_self=*/false)) names[item.value().get()] = item.key();
}

Chain Chain::from(const PlainNetImpl& net) {
  Chain c;
  for (size_t i = 0; i < net.size(); ++i) {
    ChainLayer l;
    l.spec = net.spec(i);
    auto m = net.layer(i);
    for (const auto& p : m->named_parameters(false))
      l.tensors[p.key()] = is_weight(l.spec, p.key()) ? to_work(p.value()) : to_f64(p.value());
    for (const auto& b : m->named_buffers(false)) l.tensors[b.key()] = to_f64(b.value());
    l.origin = net.origin(i);
    c.layers.push_back(std::move(l));
  }
  for (const auto& p : net.parameters())
    if (p.is_floating_point()) {
      c.stored = p.scalar_type();
      break;
    }
  return c;
}

PlainNet Chain::build(const ModelOptions& options, torch::ScalarType dtype, torch::Device device) const {
  std::vector<LayerSpec> specs;
  for (const auto& l : layers) specs.push_back(l.spec);
  PlainNet net(std::move(specs), options);
  if (std::any_of(layers.begin(), layers.end(), [](const ChainLayer& l) { return l.origin.known(); })) {
    std::vector<LayerOrigin> origins;
    for (const auto& l : layers) origins.push_back(l.origin);
    net->set_provenance(std::move(origins));
  }
  net->to(device, dtype);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < layers.size(); ++i) {
    auto m = net->layer(i);
    auto params = m->named_parameters(false);
    auto buffers = m->named_buffers(false);
    for (const auto& [name, src] : layers[i].tensors) {
      torch::Tensor* dst = params.find(name);
      if (!dst) dst = buffers.find(name);
      TORCH_CHECK(dst, "plain layer ", i, " (", layers[i].spec.describe(), ") has no tensor '", name, "'");
      TORCH_CHECK(dst->sizes() == src.sizes(), "plain layer ", i, " (", layers[i].spec.describe(), "): '",
                  name, "' has shape ", dst->sizes(), " but the conversion produced ", src.sizes());
      dst->copy_(src);
    }
  }
  return net;
}

std::pair<torch::ScalarType, torch::Device> dtype_device(const torch::nn::Module& m) {
  for (const auto& p : m.parameters())
    if (p.is_floating_point()) return {p.scalar_type(), p.device()};
  return {torch::kFloat, torch::Device(torch::kCPU)};
}

DiracPattern dirac_pattern(const torch::Tensor& weight, int64_t groups) {
  torch::NoGradGuard no_grad;
  const auto w = weight.detach();
  const int64_t o = w.size(0), in_g = w.size(1), kh = w.size(2), kw = w.size(3);
  const int64_t centre = (kh / 2) * kw + kw / 2;
  const auto nz = w.reshape({o, in_g, kh * kw}).ne(0);
  const auto at_centre = nz.select(2, centre);  // [O, I/g]
  auto off = nz.clone();                        // the non-zeros off the centre tap
  off.select(2, centre).fill_(false);
  DiracPattern p;
  p.rows = off.flatten(1).any(1).logical_not() & at_centre.sum(1).eq(1);
  p.lone_cols = torch::zeros({in_g * groups}, nz.options());
  p.centre_cols = p.lone_cols.clone();
  if (groups == 1) {
    const auto only_centre = off.any(2).any(0).logical_not();  // [I]
    const auto centre_count = at_centre.sum(0);
    if (kh % 2 == 1) p.lone_cols = only_centre & centre_count.eq(1);
    if (kh > 1) p.centre_cols = only_centre & centre_count.gt(0);
  }
  return p;
}

}  // namespace rmnet::ir
