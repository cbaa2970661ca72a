// Passes 2 and 3: fold BatchNorm into convs, fuse adjacent pointwise convs (paper Eq. 4), and
// replace activations that are ReLUs or identities in disguise.
#include "rmnet/convert/fuse.h"

#include <limits>

#include <torch/torch.h>

#include "chain.h"

namespace rmnet {
using detail::BNParams;
using detail::Chain;
using detail::ChainLayer;

namespace {

PlainNet rebuild(const PlainNetImpl& src, const Chain& ch) {
  auto [dtype, device] = detail::dtype_device(src);
  auto net = ch.build(src.options(), dtype, device);
  net->metadata() = src.metadata();
  return net;
}

bool is_pointwise(const LayerSpec& s) {
  return s.kind == LayerKind::Conv && s.kernel == 1 && s.stride == 1 && s.padding == 0 && s.groups == 1;
}

torch::Tensor bias_or_zeros(const ChainLayer& l) {
  auto it = l.tensors.find("bias");
  if (it != l.tensors.end()) return it->second;
  return torch::zeros({l.spec.out_channels}, torch::TensorOptions().dtype(torch::kDouble));
}

}  // namespace

PlainNet fold_batchnorm(const PlainNetImpl& net) {
  const Chain in = Chain::from(net);
  Chain out;
  for (size_t i = 0; i < in.layers.size(); ++i) {
    const auto& l = in.layers[i];
    if (l.spec.kind == LayerKind::Conv && i + 1 < in.layers.size() &&
        in.layers[i + 1].spec.kind == LayerKind::BatchNorm) {
      const auto& bl = in.layers[i + 1];
      BNParams bn{bl.at("weight"), bl.at("bias"), bl.at("running_mean"), bl.at("running_var"), bl.spec.eps};
      const auto a = bn.scale();
      // W' = a W,  b' = a (b - mean) + beta
      out.conv(l.at("weight") * a.view({-1, 1, 1, 1}), (bias_or_zeros(l) - bn.mean) * a + bn.bias, l.spec.stride,
               l.spec.padding, l.spec.groups);
      ++i;
    } else {
      out.push(l);
    }
  }
  return rebuild(net, out);
}

PlainNet fuse_pointwise(const PlainNetImpl& net, PointwiseFusion policy) {
  const Chain in = Chain::from(net);
  Chain out;
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
        const auto b = torch::matmul(w2, bias_or_zeros(prev)) + bias_or_zeros(l);
        out.layers.pop_back();
        out.conv(w, b, 1, 0);
        continue;
      }
    }
    out.push(l);
  }
  return rebuild(net, out);
}

PlainNet simplify_activations(const PlainNetImpl& net) {
  const Chain in = Chain::from(net);
  Chain out;
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
  return rebuild(net, out);
}

}  // namespace rmnet
