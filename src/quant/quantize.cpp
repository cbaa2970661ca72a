// Post-training quantization of a plain network (see rmnet/quant/quantize.h).
#include "rmnet/quant/quantize.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "rmnet/convert/fuse.h"
#include "rmnet/deploy/shortcuts.h"

namespace rmnet {

Observer observer_from_string(const std::string& s) {
  if (s == "minmax") return Observer::MinMax;
  if (s == "percentile") return Observer::Percentile;
  if (s == "mse") return Observer::MSE;
  TORCH_CHECK(false, "unknown observer '", s, "' (expected minmax, percentile or mse)");
}

std::string to_string(Observer o) {
  switch (o) {
    case Observer::MinMax: return "minmax";
    case Observer::Percentile: return "percentile";
    case Observer::MSE: return "mse";
  }
  return "?";
}

std::pair<torch::Tensor, torch::Tensor> quantize_weight_s8(const torch::Tensor& w) {
  const auto wf = w.detach().to(torch::kCPU, torch::kFloat);
  const auto scale = (wf.abs().flatten(1).amax(1) / 127.0).clamp_min(1e-12);
  std::vector<int64_t> shape(wf.dim(), 1);
  shape[0] = -1;
  const auto q = torch::clamp(torch::round(wf / scale.view(shape)), -127, 127).to(torch::kChar);
  return {q, scale};
}

std::pair<double, double> observe_range(const torch::Tensor& hist0, double lo, double hi, Observer observer,
                                        double percentile) {
  TORCH_CHECK(lo <= hi, "observe_range: lo > hi (", lo, " > ", hi, ")");
  const auto include0 = [](double a, double b) { return std::make_pair(std::min(a, 0.0), std::max(b, 0.0)); };
  if (observer == Observer::MinMax || hi - lo <= 0) return include0(lo, hi);
  const auto hist = hist0.to(torch::kDouble).flatten();
  const int64_t nb = hist.numel();
  const double total = hist.sum().item<double>();
  if (total <= 0) return include0(lo, hi);
  const double w = (hi - lo) / static_cast<double>(nb);
  if (observer == Observer::Percentile) {
    TORCH_CHECK(percentile > 50 && percentile <= 100, "percentile must be in (50, 100] (got ", percentile, ")");
    const auto cdf = hist.cumsum(0) / total;
    const double p = percentile / 100.0;
    const int64_t ih = std::min<int64_t>((cdf < p).sum().item<int64_t>(), nb - 1);
    double h = lo + static_cast<double>(ih + 1) * w, l = lo;
    if (lo < 0) {
      const int64_t il = (cdf < 1.0 - p).sum().item<int64_t>();
      l = lo + static_cast<double>(il) * w;
    }
    return include0(l, std::min(h, hi));
  }
  // MSE: candidate ranges a * [lo, hi] (lo fixed at 0 for a non-negative tensor), expected squared
  // error per bin centre: (distance to the range)^2 outside, step^2 / 12 inside; exact zeros (the
  // bin at 0 of a non-negative tensor, e.g. after ReLU) cost nothing.
  const auto opt = torch::TensorOptions().dtype(torch::kDouble);
  const auto centers = lo + (torch::arange(nb, opt) + 0.5) * w;  // [B]
  const int64_t K = 200;
  const auto a = torch::linspace(1.0 / K, 1.0, K, opt).view({-1, 1});  // [K, 1]
  const double l0 = std::min(lo, 0.0), h0 = std::max(hi, 0.0);
  const auto lc = a * l0, hc = a * h0;  // [K, 1]
  const auto step = (hc - lc) / 255.0;
  const auto c = centers.view({1, -1});
  const auto below = (c < lc).to(torch::kDouble), above = (c > hc).to(torch::kDouble);
  const auto inside = 1.0 - below - above;
  auto err = below * (c - lc).pow(2) + above * (c - hc).pow(2) + inside * step.pow(2) / 12.0;  // [K, B]
  auto wts = hist.clone();
  if (lo >= 0) wts[0] = 0;
  const auto total_err = (err * wts.view({1, -1})).sum(1);
  const int64_t best = total_err.argmin().item<int64_t>();
  return {lc[best][0].item<double>(), hc[best][0].item<double>()};
}

namespace {

std::pair<double, int64_t> scale_zero_point(double lo, double hi) {
  lo = std::min(lo, 0.0);
  hi = std::max(hi, 0.0);
  if (hi - lo < 1e-12) return {1.0, 0};  // a constant zero tensor
  const double scale = (hi - lo) / 255.0;
  const int64_t zp = std::clamp<int64_t>(static_cast<int64_t>(std::lround(-lo / scale)), 0, 255);
  return {scale, zp};
}

struct PointStats {
  double lo = std::numeric_limits<double>::infinity(), hi = -std::numeric_limits<double>::infinity();
  torch::Tensor hist;
};

/// An RM block whose copies can pass the block input's codes unchanged (QuantizeOptions::exact_copies).
struct CopyBlock {
  size_t x_point = 0;  ///< the quantization point of the block input (n: the network input)
  struct Run {
    size_t conv = 0, point = 0;           ///< A or a middle conv, and its quantization point
    std::vector<int64_t> rows, branch;    ///< its copy rows; its other rows
  };
  std::vector<Run> runs;  ///< A, then the middle convs
  size_t b = 0;           ///< the merge conv
};

/// The RM blocks of the BN-free chain `f` whose copy rows are lone positive centre taps with zero
/// bias, through activation runs that commute with a positive per-channel scale (ReLU, PReLU, a
/// clamp whose copy rows are [0 or -inf, inf)), each conv reading the previous one's point directly.
std::vector<CopyBlock> copy_blocks(const PlainNetImpl& f, const QuantPlan& plan) {
  std::vector<CopyBlock> out;
  const size_t n = f.size();
  for (const auto& sc : dirac_shortcuts(f)) {
    if (sc.convs.size() < 2 || sc.convs.back() >= plan.head) continue;
    CopyBlock blk;
    blk.b = sc.convs.back();
    blk.x_point = n;
    for (size_t k = sc.convs.front(); k-- > 0;)
      if (plan.point[k]) {
        blk.x_point = k;
        break;
      }
    bool ok = true;
    for (size_t t = 0; t + 1 < sc.convs.size() && ok; ++t) {
      const size_t c = sc.convs[t];
      const auto& spec = f.spec(c);
      ok = plan.role[c] == QuantRole::Int8 && spec.kernel % 2 == 1;
      const size_t point = ok ? plan.point_of(c) : 0;
      ok = ok && sc.convs[t + 1] == point + 1 && !plan.run_has_fallback(c);
      CopyBlock::Run run;
      run.conv = c;
      run.point = point;
      for (int64_t r = 0; r < static_cast<int64_t>(sc.copies[t].size()); ++r)
        (sc.copies[t][r] >= 0 ? run.rows : run.branch).push_back(r);
      ok = ok && !run.rows.empty() && !run.branch.empty();
      if (!ok) break;
      // the copy rows are the runtime's (dirac_shortcuts): one positive weight at a centre tap, the
      // rest and the bias zero within the float runtime's tolerance (a BN fold's rounding)
      const auto idx = torch::tensor(run.rows, torch::kLong);
      auto conv = f.layer_as<torch::nn::Conv2dImpl>(c);
      const auto w = conv->weight.detach().index_select(0, idx).flatten(1);
      const int64_t centre = (spec.kernel / 2) * spec.kernel + spec.kernel / 2, kk = spec.kernel * spec.kernel;
      const auto at = w.abs().argmax(1);
      ok = (at % kk).eq(centre).all().item<bool>() && w.gather(1, at.view({-1, 1})).gt(0).all().item<bool>();
      for (size_t j = c + 1; j <= point && ok; ++j) {
        const auto kind = f.spec(j).kind;
        if (kind == LayerKind::Clamp) {
          auto cl = f.layer_as<ChannelClampImpl>(j);
          const auto lo = cl->min.detach().index_select(0, idx);
          ok = (lo.eq(0) | lo.isneginf()).all().item<bool>() &&
               cl->max.detach().index_select(0, idx).isposinf().all().item<bool>();
        } else {
          ok = kind == LayerKind::ReLU || kind == LayerKind::PReLU;
        }
      }
      blk.runs.push_back(std::move(run));
    }
    if (ok) out.push_back(std::move(blk));
  }
  return out;
}

/// Rescales block `blk`'s copy rows so that each conv maps its input codes to the same output codes
/// (weight s_out / s_in at the centre tap), the conv reading them divided by the same factor: the
/// float function is unchanged (the runs commute with positive per-channel scales). A copy row's
/// other weights and its bias, zero within the float runtime's tolerance, become exactly zero (its
/// other weights would quantize to s8 0 beside the copy weight anyway).
void make_copies_exact(PlainNetImpl& f, const CopyBlock& blk, const std::vector<std::pair<double, int64_t>>& qp) {
  double s_in = qp[blk.x_point].first;
  for (size_t t = 0; t < blk.runs.size(); ++t) {
    const auto& run = blk.runs[t];
    const double s_out = qp[run.point].first;
    auto conv = f.layer_as<torch::nn::Conv2dImpl>(run.conv);
    const size_t next = t + 1 < blk.runs.size() ? blk.runs[t + 1].conv : blk.b;
    auto consumer = f.layer_as<torch::nn::Conv2dImpl>(next);
    const auto& cs = f.spec(next);
    const int64_t ig = cs.in_channels / cs.groups, og = cs.out_channels / cs.groups;
    auto w = conv->weight.detach();
    auto wc = consumer->weight.detach();
    const float target = static_cast<float>(s_out / s_in);
    for (int64_t r : run.rows) {
      auto row = w[r].view({-1});
      const int64_t at = row.abs().argmax().item<int64_t>();
      const float k = target / row[at].item<float>();
      row.zero_();
      row[at] = target;
      if (conv->bias.defined()) conv->bias.detach()[r] = 0;
      auto cols = wc.narrow(0, r / ig * og, og).select(1, r % ig);
      cols.div_(k);
    }
    s_in = s_out;
  }
}

}  // namespace

std::vector<int64_t> calibration_indices(int64_t size, int64_t n, uint64_t seed) {
  TORCH_CHECK(size > 0, "the calibration data set is empty");
  TORCH_CHECK(n > 0, "calibration needs at least one image (got ", n, ")");
  std::vector<int64_t> idx(static_cast<size_t>(size));
  std::iota(idx.begin(), idx.end(), int64_t{0});
  Rng rng(seed);
  std::shuffle(idx.begin(), idx.end(), rng);
  idx.resize(static_cast<size_t>(std::min(size, n)));
  return idx;
}

torch::Tensor calibration_images(const Dataset& dataset, const Transform& transform, int64_t n, uint64_t seed) {
  const auto idx = calibration_indices(static_cast<int64_t>(dataset.size()), n, seed);
  Rng rng(seed);
  std::vector<torch::Tensor> images;
  images.reserve(idx.size());
  for (int64_t i : idx) images.push_back(transform(dataset.get(static_cast<size_t>(i)).image, rng));
  return torch::stack(images);
}

QuantizeResult quantize(const ModelImpl& model, const torch::Tensor& calibration, const QuantizeOptions& o) {
  const auto* plain = dynamic_cast<const PlainNetImpl*>(&model);
  TORCH_CHECK(plain, "quantize: '", model.options().arch(), "' is a residual model (family ", model.family(),
              "); convert it to a plain network first (rmnet convert, or rmnet::convert)");
  TORCH_CHECK(calibration.defined() && calibration.dim() == 4 && calibration.size(0) > 0,
              "quantize: the calibration set is empty (expected float images [N, C, H, W] with N >= 1)");
  TORCH_CHECK(calibration.size(1) == plain->options().in_channels(), "quantize: calibration images have ",
              calibration.size(1), " channels, the network takes ", plain->options().in_channels());
  TORCH_CHECK(o.batch_size() > 0, "quantize: batch_size must be positive (got ", o.batch_size(), ")");
  TORCH_CHECK(o.bins() >= 16, "quantize: bins must be >= 16 (got ", o.bins(), ")");
  QuantizeResult r;
  ir::PassLog log;
  const auto lap = [&](const std::string& pass) { log.lap(pass, ir::PassRecord::Kind::Transform); };

  PlainNet f = fold_batchnorm(*plain);
  lap("fold_batchnorm");
  f->to(torch::kCPU, torch::kFloat);
  f->eval();
  const auto data = calibration.to(torch::kCPU, torch::kFloat);
  const auto before = activation_ranges(*f, data, o.batch_size());
  auto after = before;
  if (o.equalize()) {
    f = o.equalize_by() == EqualizeBy::Activations ? equalize_activations(*f, before, o.equalize_options())
                                                   : equalize(*f, o.equalize_options());
    f->eval();
    after = activation_ranges(*f, data, o.batch_size());
    lap("equalize");
  }
  const auto spread = [](const torch::Tensor& r) {
    const double med = r.median().item<double>();
    return med > 0 ? r.max().item<double>() / med : std::numeric_limits<double>::infinity();
  };
  for (const auto& [producer, range] : before)
    r.activation_spread.push_back({producer, range.numel(), spread(range), spread(after.at(producer))});
  const auto plan = quant_plan(f->specs());
  const size_t n = f->size();
  std::vector<CopyBlock> blocks;
  if (o.exact_copies()) blocks = copy_blocks(*f, plan);
  // per point of a candidate block's A or middle conv: its branch channels (what calibration sees
  // of it once the block is kept) and their min / max
  std::map<size_t, torch::Tensor> branch_of;
  std::map<size_t, PointStats> branch_stats;
  for (const auto& blk : blocks)
    for (const auto& run : blk.runs) branch_of[run.point] = torch::tensor(run.branch, torch::kLong);

  // Calibration: the float network, layer by layer; statistics of the input (slot n) and of every point.
  std::vector<PointStats> stats(n + 1);
  const int64_t N = data.size(0);
  const auto run = [&](const std::function<void(size_t, const torch::Tensor&)>& observe) {
    torch::NoGradGuard ng;
    for (int64_t b = 0; b < N; b += o.batch_size()) {
      auto x = data.narrow(0, b, std::min(o.batch_size(), N - b));
      observe(n, x);
      for (size_t i = 0; i < plan.head; ++i) {
        x = f->forward_range(x, i, i + 1);
        if (plan.point[i]) observe(i, x);
      }
    }
  };
  run([&](size_t k, const torch::Tensor& x) {
    const auto widen = [](PointStats& s, const torch::Tensor& v) {
      s.lo = std::min(s.lo, v.min().item<double>());
      s.hi = std::max(s.hi, v.max().item<double>());
    };
    widen(stats[k], x);
    if (const auto it = branch_of.find(k); it != branch_of.end()) widen(branch_stats[k], x.index_select(1, it->second));
  });
  if (o.observer() != Observer::MinMax) {
    run([&](size_t k, const torch::Tensor& x) {
      const auto add = [&](PointStats& s, const torch::Tensor& v) {
        if (!(s.hi > s.lo)) return;
        auto h = torch::histc(v, o.bins(), s.lo, s.hi).to(torch::kDouble);
        s.hist = s.hist.defined() ? s.hist + h : h;
      };
      add(stats[k], x);
      if (const auto it = branch_of.find(k); it != branch_of.end()) add(branch_stats[k], x.index_select(1, it->second));
    });
  }
  const auto range_of = [&](const PointStats& s) {
    return s.hist.defined() ? observe_range(s.hist, s.lo, s.hi, o.observer(), o.percentile()) : std::make_pair(s.lo, s.hi);
  };
  std::vector<std::pair<double, int64_t>> qp(n + 1);
  for (size_t k = 0; k <= n; ++k) {
    if (k < n && !plan.point[k]) continue;
    const auto [lo, hi] = range_of(stats[k]);
    qp[k] = scale_zero_point(lo, hi);
  }
  // exact copies: a code passes as itself where every point the copies pass has the block input's
  // zero point z (and the copy weight s_out / s_in); each such point's scale is then set by its branch
  // channels alone, the smallest that holds their range at zero point z. A block whose branch range
  // no scale can hold at z (z = 255 with positive values, z = 0 with negative ones) keeps its
  // copies requantized, its points calibrated on every channel.
  {
    std::vector<CopyBlock> kept;
    for (auto& blk : blocks) {
      const int64_t z = qp[blk.x_point].second;
      std::vector<std::pair<double, int64_t>> forced;
      bool ok = true;
      for (const auto& run : blk.runs) {
        auto [lo, hi] = range_of(branch_stats[run.point]);
        lo = std::min(lo, 0.0);
        hi = std::max(hi, 0.0);
        ok = ok && (hi <= 0 || z < 255) && (lo >= 0 || z > 0);
        double scale = 0;
        if (hi > 0 && z < 255) scale = std::max(scale, hi / static_cast<double>(255 - z));
        if (lo < 0 && z > 0) scale = std::max(scale, -lo / static_cast<double>(z));
        forced.emplace_back(scale > 1e-12 ? scale : 1.0, z);
      }
      if (!ok) continue;
      for (size_t t = 0; t < blk.runs.size(); ++t) qp[blk.runs[t].point] = forced[t];
      kept.push_back(std::move(blk));
    }
    blocks = std::move(kept);
  }
  log.lap("calibrate");
  if (!blocks.empty()) {
    torch::NoGradGuard ng;
    for (const auto& blk : blocks) make_copies_exact(*f, blk, qp);
    lap("exact_copies");
  }

  // The quantized network.
  auto q = QuantizedNet(f->specs(), plain->options());
  torch::NoGradGuard ng;
  q->input_scale_tensor.fill_(qp[n].first);
  q->input_zero_point_tensor.fill_(qp[n].second);
  for (size_t i = 0; i < n; ++i) {
    const auto& s = f->spec(i);
    auto& ql = q->layer(i);
    auto set = [&](const std::string& name, const torch::Tensor& v) {
      TORCH_CHECK(v.defined(), "quantize: internal: layer ", i, " (", s.describe(), ") has no tensor '", name, "'");
      const_cast<torch::Tensor&>(ql.get(name)).copy_(v.detach().to(torch::kCPU));
    };
    auto m = f->layer(i);
    switch (s.kind) {
      case LayerKind::Conv: {
        auto c = f->layer_as<torch::nn::Conv2dImpl>(i);
        auto [wq, ws] = quantize_weight_s8(c->weight);
        set("weight", wq);
        set("weight_scale", ws);
        if (s.bias) set("bias", c->bias);
        break;
      }
      case LayerKind::Linear: {
        auto l = f->layer_as<torch::nn::LinearImpl>(i);
        set("weight", l->weight);
        if (s.bias) set("bias", l->bias);
        break;
      }
      case LayerKind::Clamp: {
        auto c = f->layer_as<ChannelClampImpl>(i);
        set("min", c->min);
        set("max", c->max);
        break;
      }
      case LayerKind::PReLU: set("weight", f->layer_as<torch::nn::PReLUImpl>(i)->weight); break;
      case LayerKind::SE: {
        auto e = f->layer_as<ChannelSEImpl>(i);
        set("w1", e->w1);
        set("b1", e->b1);
        set("w2", e->w2);
        set("b2", e->b2);
        break;
      }
      default: break;
    }
    if (plan.point[i]) {
      set("out_scale", torch::full({1}, qp[i].first));
      set("out_zero_point", torch::full({1}, qp[i].second, torch::kLong));
    }
  }
  lap("quantize");

  q->metadata() = plain->metadata();
  auto& md = q->metadata();
  md["quant.observer"] = to_string(o.observer());
  if (o.observer() == Observer::Percentile) md["quant.percentile"] = fmt::format("{}", o.percentile());
  md["quant.equalize"] = o.equalize() ? to_string(o.equalize_by()) : "no";
  if (o.equalize()) md["quant.equalized_pairs"] = f->metadata().count("quant.equalized_pairs") ? f->metadata().at("quant.equalized_pairs") : "0";
  md["quant.calibration_images"] = std::to_string(N);
  md["quant.weights"] = "s8 symmetric per output channel";
  md["quant.activations"] = "u8 per tensor";
  md["quant.exact_copies"] = o.exact_copies() ? std::to_string(blocks.size()) : "off";
  const auto fb = q->fallbacks();
  md["quant.fallbacks"] = fb.empty() ? "none" : fmt::format("{}", fmt::join(fb, "; "));
  r.passes = log.records();
  r.pass_seconds = ir::pass_seconds(r.passes);
  std::string timing;
  for (const auto& [pass, secs] : r.pass_seconds) timing += fmt::format("{}{} {:.3f} s", timing.empty() ? "" : ", ", pass, secs);
  md["quant.passes"] = timing;
  r.net = q;
  r.float_net = f;
  r.calibration_images = N;
  r.exact_copy_blocks = static_cast<int64_t>(blocks.size());
  return r;
}

}  // namespace rmnet
