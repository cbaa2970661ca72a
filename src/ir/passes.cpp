// The Chain -> Chain passes: fold BatchNorm into convs, fuse adjacent pointwise convs (paper Eq. 4),
// replace activations that are ReLUs or identities in disguise; and the log that runs and times them.
#include "rmnet/ir/passes.h"

#include <limits>

#include <torch/torch.h>

namespace rmnet {

PointwiseFusion pointwise_fusion_from_string(const std::string& s) {
  if (s == "never") return PointwiseFusion::Never;
  if (s == "always") return PointwiseFusion::Always;
  if (s == "auto") return PointwiseFusion::Auto;
  TORCH_CHECK(false, "unknown pointwise fusion policy '", s, "' (expected never, always or auto)");
}

std::string to_string(PointwiseFusion f) {
  switch (f) {
    case PointwiseFusion::Never:
      return "never";
    case PointwiseFusion::Always:
      return "always";
    case PointwiseFusion::Auto:
      return "auto";
  }
  return "?";
}

namespace ir {

namespace {

bool is_pointwise(const LayerSpec& s) {
  return s.kind == LayerKind::Conv && s.kernel == 1 && s.stride == 1 && s.padding == 0 && s.groups == 1;
}

torch::Tensor bias_or_zeros(const ChainLayer& l) {
  auto it = l.tensors.find("bias");
  if (it != l.tensors.end()) return it->second;
  return torch::zeros({l.spec.out_channels}, torch::TensorOptions().dtype(torch::kDouble));
}

}  // namespace

Chain fold_batchnorm(const Chain& in) {
  Chain out;
  out.stored = in.stored;
  for (size_t i = 0; i < in.layers.size(); ++i) {
    const auto& l = in.layers[i];
    if (l.spec.kind == LayerKind::Conv && i + 1 < in.layers.size() &&
        in.layers[i + 1].spec.kind == LayerKind::BatchNorm) {
      const auto& bl = in.layers[i + 1];
      BNParams bn{to_f64(bl.at("weight")), to_f64(bl.at("bias")), to_f64(bl.at("running_mean")),
                  to_f64(bl.at("running_var")), bl.spec.eps, in.stored};
      const auto a = bn.scale();
      // W' = a W,  b' = a (b - mean) + beta  (a in float64, rounded once to the weight's dtype)
      const auto& w = l.at("weight");
      out.conv(w * a.to(w.scalar_type()).view({-1, 1, 1, 1}), bn.fold_bias(to_f64(bias_or_zeros(l))),
               l.spec.stride, l.spec.padding, l.spec.groups);
      out.mark(l.origin);
      ++i;
    } else {
      out.push(l);
    }
  }
  return out;
}

Chain fuse_pointwise(const Chain& in, PointwiseFusion policy) {
  Chain out;
  out.stored = in.stored;
  for (const auto& l : in.layers) {
    if (policy != PointwiseFusion::Never && is_pointwise(l.spec) && !out.layers.empty() &&
        is_pointwise(out.layers.back().spec)) {
      auto& prev = out.layers.back();
      const int64_t cin = prev.spec.in_channels, mid = prev.spec.out_channels, cout = l.spec.out_channels;
      const bool cheaper = cin * cout <= cin * mid + mid * cout;
      if (policy == PointwiseFusion::Always || cheaper) {
        // Z = W2 (W1 X + B1) + B2 = (W2 W1) X + (W2 B1 + B2)
        const auto w1 = prev.at("weight").flatten(1), w2 = l.at("weight").flatten(1);
        const auto w = torch::matmul(w2, w1).view({cout, cin, 1, 1});
        const auto b = torch::matmul(w2.to(torch::kDouble), to_f64(bias_or_zeros(prev))) + to_f64(bias_or_zeros(l));
        out.layers.pop_back();
        out.conv(w, b, 1, 0);
        out.mark(l.origin);
        continue;
      }
    }
    out.push(l);
  }
  return out;
}

Chain simplify_activations(const Chain& in) {
  Chain out;
  out.stored = in.stored;
  const double inf = std::numeric_limits<double>::infinity();
  for (const auto& l : in.layers) {
    if (l.spec.kind == LayerKind::Clamp) {
      const auto &lo = l.at("min"), &hi = l.at("max");
      if (lo.eq(-inf).all().item<bool>() && hi.eq(inf).all().item<bool>()) continue;  // identity
      if (lo.eq(0).all().item<bool>() && hi.eq(inf).all().item<bool>()) {
        out.relu();
        continue;
      }
    } else if (l.spec.kind == LayerKind::PReLU) {
      const auto& w = l.at("weight");
      if (w.eq(1).all().item<bool>()) continue;  // identity
      if (w.eq(0).all().item<bool>()) {
        out.relu();
        continue;
      }
    }
    out.push(l);
  }
  return out;
}

Pass fold_batchnorm_pass() { return {"fold_batchnorm", [](const Chain& c) { return fold_batchnorm(c); }}; }
Pass simplify_activations_pass() {
  return {"simplify_activations", [](const Chain& c) { return simplify_activations(c); }};
}
Pass fuse_pointwise_pass(PointwiseFusion policy) {
  return {"fuse_pointwise(" + to_string(policy) + ")", [policy](const Chain& c) { return fuse_pointwise(c, policy); }};
}

void PassLog::lap(std::string name, PassRecord::Kind kind) {
  const auto now = std::chrono::steady_clock::now();
  records_.push_back({std::move(name), std::chrono::duration<double>(now - clock_).count(), kind});
  clock_ = now;
}

Chain PassLog::run(const Pass& pass, const Chain& in) {
  clock_ = std::chrono::steady_clock::now();
  Chain out = pass.run(in);
  lap(pass.name, PassRecord::Kind::Transform);
  return out;
}

Chain PassLog::run(const std::vector<Pass>& passes, Chain chain) {
  for (const auto& p : passes) chain = run(p, chain);
  return chain;
}

std::string PassLog::transforms() const {
  std::string names;
  for (const auto& r : records_)
    if (r.kind == PassRecord::Kind::Transform) names += (names.empty() ? "" : ",") + r.name;
  return names;
}

std::vector<std::pair<std::string, double>> pass_seconds(const std::vector<PassRecord>& records) {
  std::vector<std::pair<std::string, double>> out;
  for (const auto& r : records) out.emplace_back(r.name, r.seconds);
  return out;
}

}  // namespace ir
}  // namespace rmnet
