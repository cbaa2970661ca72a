// Least-squares reconstruction of the consumers after channel removal (He et al. 2017, "Channel
// Pruning for Accelerating Very Deep Neural Networks"; ThiNet). In a plain chain every consumer sees
// only its producer, so after pruning, each consumer can be refitted to reproduce the original
// network's output of that layer from what the pruned network now gives it:
//
//   min_{W', b'}  sum_rows || W' x_p + b' - y_o ||^2 + lambda || W' - W ||^2
//
// x_p: the pruned network's input to the layer (k x k patches of its kept channels, at sampled output
// positions), y_o: the original layer's output at the same positions (on the original network's own
// input), W: the layer's weights after slicing (the ridge pulls towards them where the calibration
// data says little; lambda = ridge * mean diagonal of x_p^T x_p). The layers are refitted in chain
// order on the pruned network as it is refitted, so each fit also absorbs the error the layers before
// it left (not only the removed channels' share), and a removed channel's mean output is absorbed by
// b'. Grouped consumers are fitted per group; the bias goes into the conv's bias, or into the running
// mean of the BatchNorm after a conv without bias (BN(Wx + b) = BN with mean - b of Wx).
// Solved in float64 by QR least squares (LAPACK gelsy) on centred columns with the ridge as extra
// rows; the per-layer rows (sampled positions) are kept in memory for the solve.
#include <algorithm>
#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/ir/chain.h"
#include "prune_internal.h"

namespace rmnet::detail {
using ir::dtype_device;

namespace {

/// The sampled rows of one group's least-squares problem, x [rows, in] and y [rows, out] (float64).
struct Rows {
  std::vector<torch::Tensor> xs, ys;
  void add(const torch::Tensor& x, const torch::Tensor& y) {
    xs.push_back(x);
    ys.push_back(y);
  }
  /// [W'^T; b'] (in + 1, out): least squares with a ridge towards w0t (in, out) on the weights; the
  /// intercept b' only when `intercept` (0 otherwise). Solved by QR on centred columns with the ridge
  /// as extra rows (sqrt(lambda) I W = sqrt(lambda) W0), not by normal equations: those square the
  /// condition number, and the columns of neighbouring taps and reserved copies are close to
  /// collinear. lambda = ridge * the mean squared column norm.
  torch::Tensor solve(const torch::Tensor& w0t, double ridge, bool intercept) const {
    auto x = torch::cat(xs, 0), y = torch::cat(ys, 0);
    const int64_t n = x.size(1);
    torch::Tensor mu, ybar;
    if (intercept) {
      mu = x.mean(0);
      ybar = y.mean(0);
      x = x - mu;
      y = y - ybar;
    }
    const double lambda = ridge * std::max(x.pow(2).sum(0).mean().item<double>(), 1e-300);
    const double r = std::sqrt(lambda);
    auto a = torch::cat({x, torch::eye(n, x.options()) * r}, 0);
    auto b = torch::cat({y, w0t * r}, 0);
    auto w = std::get<0>(torch::linalg_lstsq(a, b, c10::nullopt, "gelsy"));  // [n, out]
    auto bias = intercept ? ybar - mu.unsqueeze(0).mm(w).squeeze(0) : torch::zeros({w.size(1)}, w.options());
    return torch::cat({w, bias.unsqueeze(0)}, 0);
  }
};

double relative_error(const torch::Tensor& y, const torch::Tensor& ref) {
  const double den = ref.to(torch::kDouble).pow(2).sum().item<double>();
  return den > 0 ? std::sqrt((y.to(torch::kDouble) - ref.to(torch::kDouble)).pow(2).sum().item<double>() / den) : 0.0;
}

/// Refits conv layer i of `pruned` (input xp) to the original's output yo (its kept channels).
/// `orig_mean`: the running mean of the original's BN after the layer (kept channels), or undefined:
/// the fold of removed channels shifted the pruned BN's mean; the fit's intercept replaces that.
/// With reconstruct_keep_dirac, Dirac rows keep their weights, bias and BN mean, Dirac columns their
/// weights (the fit is of the other columns, to the output less those columns' share), and columns
/// with weights at the centre tap only (a downsample block's projection) are refitted at the centre.
void refit_conv(PlainNetImpl& pruned, size_t i, const torch::Tensor& xp, const torch::Tensor& yo,
                const torch::Tensor& orig_mean, const PruneOptions& o, torch::Generator& gen) {
  const auto& s = pruned.spec(i);
  auto conv = pruned.layer_as<torch::nn::Conv2dImpl>(i);
  const int64_t k = s.kernel, g = s.groups, out = s.out_channels, gout = out / g, gin = s.in_channels / g;
  const auto w_before = conv->weight.detach().to(torch::kCPU, torch::kDouble).clone();
  // Dirac rows and lone (shortcut) columns stay as they are; a projection's columns (weights at the
  // centre tap only) stay so: fitted at the centre
  std::vector<bool> fixed_rows(out, false), fixed_cols(s.in_channels, false), centre_cols(s.in_channels, false);
  const int64_t centre = (k / 2) * k + k / 2;
  if (o.reconstruct_keep_dirac()) {
    const auto d = ir::dirac_pattern(w_before, g);
    const auto rows = d.rows.accessor<bool, 1>();
    const auto lone = d.lone_cols.accessor<bool, 1>();
    const auto only_centre = d.centre_cols.accessor<bool, 1>();
    for (int64_t r = 0; r < out; ++r) fixed_rows[r] = rows[r];
    for (int64_t c = 0; c < s.in_channels; ++c) {
      fixed_cols[c] = lone[c];
      centre_cols[c] = only_centre[c] && !lone[c];
    }
  }
  // the free columns of the patch matrix (all of them unless a dense conv has Dirac or projection columns)
  std::vector<int64_t> free_taps;
  for (int64_t c = 0; c < gin; ++c)
    for (int64_t t = 0; t < k * k; ++t)
      if (!(g == 1 && (fixed_cols[c] || (centre_cols[c] && t != centre)))) free_taps.push_back(c * k * k + t);
  if (free_taps.empty()) return;  // every input is a Dirac column: nothing to fit
  const bool all_free = static_cast<int64_t>(free_taps.size()) == gin * k * k;
  const auto free_index = torch::tensor(free_taps, torch::kLong);
  // the Dirac columns' share of the output, per patch row: x[:, fixed taps] w[:, fixed taps]^T
  torch::Tensor w_fixed_t;  // [gin*k*k, out] with only the fixed columns' weights (g == 1)
  if (!all_free) {
    auto wf = w_before.reshape({out, gin * k * k}).clone();
    wf.index_fill_(1, free_index, 0.0);
    w_fixed_t = wf.t().contiguous();
  }
  const int64_t positions = yo.size(2) * yo.size(3);
  const int64_t take = std::min<int64_t>(positions, o.reconstruct_positions());
  auto pos = torch::randperm(positions, gen, torch::TensorOptions().dtype(torch::kLong)).narrow(0, 0, take).to(xp.device());
  std::vector<Rows> eq(g);
  const int64_t chunk = 32;
  for (int64_t b = 0; b < xp.size(0); b += chunk) {
    const int64_t nb = std::min(chunk, xp.size(0) - b);
    auto cols = torch::nn::functional::unfold(
        xp.narrow(0, b, nb), torch::nn::functional::UnfoldFuncOptions({k, k}).padding(s.padding).stride(s.stride));
    auto x = cols.index_select(2, pos).permute({0, 2, 1}).reshape({nb * take, -1}).to(torch::kCPU, torch::kDouble);
    auto y = yo.narrow(0, b, nb).flatten(2).index_select(2, pos).permute({0, 2, 1}).reshape({nb * take, out});
    y = y.to(torch::kCPU, torch::kDouble);
    if (!all_free) {
      y = y - x.mm(w_fixed_t);
      x = x.index_select(1, free_index);
    }
    for (int64_t j = 0; j < g; ++j) {
      const int64_t width = all_free ? gin * k * k : x.size(1);
      eq[j].add(x.narrow(1, j * width, width), y.narrow(1, j * gout, gout));
    }
  }
  const bool has_bias = conv->bias.defined() && conv->bias.numel() > 0;
  const bool bn_after = i + 1 < pruned.size() && pruned.spec(i + 1).kind == LayerKind::BatchNorm;
  const auto w = conv->weight.detach().to(torch::kCPU, torch::kDouble);
  std::vector<torch::Tensor> ws, bs;
  for (int64_t j = 0; j < g; ++j) {
    auto w0t = w.narrow(0, j * gout, gout).reshape({gout, gin * k * k}).t();
    if (!all_free) w0t = w0t.index_select(0, free_index);
    const int64_t width = w0t.size(0);
    auto sol = eq[j].solve(w0t, o.reconstruct_ridge(), has_bias || bn_after);
    auto wj = sol.narrow(0, 0, width).t();  // [gout, width]
    if (!all_free) {  // the Dirac columns back at their places
      auto full = w_before.narrow(0, j * gout, gout).reshape({gout, gin * k * k}).clone();
      full.index_copy_(1, free_index, wj);
      wj = full;
    }
    ws.push_back(wj.reshape({gout, gin, k, k}));
    bs.push_back(sol[width]);
  }
  torch::NoGradGuard no_grad;
  auto nw = torch::cat(ws, 0);
  auto nb = torch::cat(bs, 0);
  std::vector<int64_t> keep_rows;  // Dirac rows: weights, bias and BN mean as they were
  for (int64_t r = 0; r < out; ++r)
    if (fixed_rows[r]) keep_rows.push_back(r);
  const auto kr = torch::tensor(keep_rows, torch::kLong);
  if (!keep_rows.empty()) nw.index_copy_(0, kr, w_before.index_select(0, kr));
  conv->weight.copy_(nw);
  if (has_bias) {
    if (!keep_rows.empty()) nb.index_copy_(0, kr, conv->bias.detach().to(torch::kCPU, torch::kDouble).index_select(0, kr));
    conv->bias.copy_(nb);
  }
  if (bn_after) {  // the BN's mean back to the original's; conv(x) + b' without a bias: mean - b'
    auto bn = pruned.layer_as<torch::nn::BatchNorm2dImpl>(i + 1);
    auto mean = orig_mean.to(torch::kCPU, torch::kDouble);
    if (!has_bias) mean = mean - nb;
    if (!keep_rows.empty())
      mean.index_copy_(0, kr, bn->running_mean.detach().to(torch::kCPU, torch::kDouble).index_select(0, kr));
    bn->running_mean.copy_(mean.to(bn->running_mean.options()));
  }
}

/// Refits linear layer i. After a global average pool the rows are the pooled features, one per
/// image, usually fewer than the features; but pooling is linear, so with the pre-pool features
/// (xp_map, xo_map: [N, C, H, W], undefined when there are none) the fit is made per position against
/// the original linear applied per position (`w0`, `b0`, restricted to the kept outputs): N*H*W rows,
/// and the pooled outputs agree where the positions do.
void refit_linear(PlainNetImpl& pruned, const PlainNetImpl& original, size_t i, const torch::Tensor& xp,
                  const torch::Tensor& yo, const torch::Tensor& xp_map, const torch::Tensor& xo_map,
                  const PruneOptions& o) {
  auto lin = pruned.layer_as<torch::nn::LinearImpl>(i);
  const bool has_bias = lin->bias.defined() && lin->bias.numel() > 0;
  Rows eq;
  if (xp_map.defined() && yo.size(1) == original.spec(i).out_channels) {
    auto orig = original.layer_as<torch::nn::LinearImpl>(i);
    const auto rows = [](const torch::Tensor& m) {
      return m.permute({0, 2, 3, 1}).reshape({-1, m.size(1)}).to(torch::kCPU, torch::kDouble);
    };
    auto xo_rows = rows(xo_map);
    auto w0 = orig->weight.detach().to(torch::kCPU, torch::kDouble);
    auto y_rows = xo_rows.mm(w0.t());
    if (orig->bias.defined() && orig->bias.numel() > 0) y_rows += orig->bias.detach().to(torch::kCPU, torch::kDouble);
    eq.add(rows(xp_map), y_rows);
  } else {
    eq.add(xp.to(torch::kCPU, torch::kDouble), yo.to(torch::kCPU, torch::kDouble));
  }
  const auto w = lin->weight.detach().to(torch::kCPU, torch::kDouble);
  auto sol = eq.solve(w.t(), o.reconstruct_ridge(), has_bias);
  torch::NoGradGuard no_grad;
  lin->weight.copy_(sol.narrow(0, 0, w.size(1)).t());
  if (has_bias) lin->bias.copy_(sol[w.size(1)]);
}

}  // namespace

void reconstruct_consumers(const PlainNetImpl& original, PlainNetImpl& pruned, const std::vector<PruneUnit>& units,
                           const torch::Tensor& calibration, const PruneOptions& o, PruneReport& rep) {
  TORCH_CHECK(calibration.defined() && calibration.dim() == 4 && calibration.size(0) > 0,
              "reconstruction needs calibration images [N, C, H, W] (got ",
              calibration.defined() ? calibration.sizes().vec() : std::vector<int64_t>{}, ")");
  TORCH_CHECK(calibration.size(1) == original.options().in_channels(), "the calibration images have ",
              calibration.size(1), " channels, the network takes ", original.options().in_channels());
  TORCH_CHECK(o.reconstruct_positions() >= 1, "reconstruct_positions must be at least 1 (got ",
              o.reconstruct_positions(), ")");
  TORCH_CHECK(std::isfinite(o.reconstruct_ridge()) && o.reconstruct_ridge() > 0, "reconstruct_ridge must be a ",
              "positive number (got ", o.reconstruct_ridge(), ")");
  torch::NoGradGuard no_grad;
  // the consumers to refit: every unit's consumer from the first unit that lost channels on
  size_t first = original.size();
  for (const auto& u : units)
    if (static_cast<int64_t>(u.kept.size()) < u.channels) first = std::min(first, u.producer);
  std::vector<bool> refit(original.size(), false);
  for (const auto& u : units)
    if (u.consumer > first) refit[u.consumer] = true;

  auto gen = at::make_generator<at::CPUGeneratorImpl>(o.reconstruct_seed());
  auto [dtype, device] = dtype_device(original);
  auto xo = calibration.to(device, dtype), xp = xo;
  double before = 0.0, after = 0.0;
  // the kept output channels of a layer that is also a unit's producer
  std::vector<torch::Tensor> kept_out(original.size());
  for (const auto& u : units)
    if (static_cast<int64_t>(u.kept.size()) < u.channels)
      kept_out[u.producer] = torch::tensor(u.kept, torch::kLong).to(device);
  torch::Tensor pooled_p, pooled_o;  // the input of a global average pool, until the next linear
  for (size_t i = 0; i < original.size(); ++i) {
    const auto kind_i = original.spec(i).kind;
    if (kind_i == LayerKind::AvgPool) {
      pooled_p = xp;
      pooled_o = xo;
    } else if (kind_i != LayerKind::Flatten && kind_i != LayerKind::Linear) {
      pooled_p = pooled_o = torch::Tensor();
    }
    auto yo = const_cast<PlainNetImpl&>(original).forward_range(xo, i, i + 1);
    torch::Tensor target;
    if (refit[i]) {
      const auto kind = pruned.spec(i).kind;
      target = kept_out[i].defined() ? yo.index_select(1, kept_out[i]) : yo;
      before += relative_error(pruned.forward_range(xp, i, i + 1), target);
      if (kind == LayerKind::Conv) {
        torch::Tensor mean;
        if (i + 1 < original.size() && original.spec(i + 1).kind == LayerKind::BatchNorm) {
          mean = original.layer_as<torch::nn::BatchNorm2dImpl>(i + 1)->running_mean.detach();
          if (kept_out[i].defined()) mean = mean.index_select(0, kept_out[i].to(mean.device()));
        }
        refit_conv(pruned, i, xp, target, mean, o, gen);
      } else if (kind == LayerKind::Linear) {
        refit_linear(pruned, original, i, xp, target, pooled_p, pooled_o, o);
      }
      ++rep.reconstructed;
    }
    auto yp = pruned.forward_range(xp, i, i + 1);
    if (refit[i]) after += relative_error(yp, target);
    xo = yo;
    xp = yp;
  }
  if (rep.reconstructed > 0) {
    rep.reconstruction_error_before = before / static_cast<double>(rep.reconstructed);
    rep.reconstruction_error_after = after / static_cast<double>(rep.reconstructed);
  }
}

}  // namespace rmnet::detail
