// Latency measurement and the per-layer latency table. See include/rmnet/prune/latency.h.
#include "rmnet/prune/latency.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include <fmt/format.h>
#include <torch/torch.h>

#include "rmnet/ir/chain.h"
#include "prune_internal.h"
#include "rmnet/convert/verify.h"

namespace rmnet {

namespace {

void check(const LatencyOptions& o) {
  TORCH_CHECK(o.batch() >= 1, "latency batch must be at least 1 (got ", o.batch(), ")");
  TORCH_CHECK(o.input_size() >= 0, "latency input_size must be non-negative (got ", o.input_size(), ")");
  TORCH_CHECK(o.iters() >= 1 && o.warmup() >= 0, "latency iters must be at least 1 and warmup non-negative (got ",
              o.iters(), ", ", o.warmup(), ")");
  for (double f : o.grid()) TORCH_CHECK(f > 0 && f <= 1, "latency grid fractions must be in (0, 1] (got ", f, ")");
}

/// Median ms of forwards of `x` through `m`.
double time_ms(ModelImpl& m, const torch::Tensor& x, int64_t warmup, int64_t iters) {
  torch::NoGradGuard no_grad;
  for (int64_t i = 0; i < warmup; ++i) m.forward(x);
  std::vector<double> t;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto y = m.forward(x);
    (void)y.sum().item<double>();  // finished (and the same work on every runtime)
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::nth_element(t.begin(), t.begin() + static_cast<std::ptrdiff_t>(t.size() / 2), t.end());
  return t[t.size() / 2];
}

double time_net(const PlainNetImpl& net, const std::vector<int64_t>& shape, const LatencyOptions& o) {
  const auto [dtype, device] = ir::dtype_device(net);
  torch::manual_seed(0);
  auto x = torch::randn(shape, torch::TensorOptions().dtype(dtype).device(device));
  if (o.runtime() == Runtime::Eager) {
    auto& m = const_cast<PlainNetImpl&>(net);
    const bool was_training = m.is_training();
    m.eval();
    const double t = time_ms(m, x, o.warmup(), o.iters());
    m.train(was_training);
    return t;
  }
  auto prepared = deploy(net, DeployOptions().runtime(o.runtime()).device(device));
  return time_ms(*prepared, x, o.warmup(), o.iters());
}

int64_t at_fraction(int64_t n, double f, int64_t multiple) {
  auto k = static_cast<int64_t>(std::ceil(f * static_cast<double>(n) - 1e-9));
  k = std::max<int64_t>(multiple, (k + multiple - 1) / multiple * multiple);
  return std::min(k, n);
}

std::vector<int64_t> grid_of(int64_t n, const std::vector<double>& fractions, int64_t multiple) {
  std::vector<int64_t> g;
  for (double f : fractions) g.push_back(at_fraction(n, f, multiple));
  g.push_back(n);
  std::sort(g.begin(), g.end());
  g.erase(std::unique(g.begin(), g.end()), g.end());
  return g;
}

/// Position of v on the grid: (lower index, weight of the upper point); extrapolates linearly below
/// the first and above the last point.
std::pair<size_t, double> locate(const std::vector<int64_t>& g, int64_t v) {
  if (g.size() == 1) return {0, 0.0};
  size_t i = 0;
  while (i + 2 < g.size() && v > g[i + 1]) ++i;
  return {i, static_cast<double>(v - g[i]) / static_cast<double>(g[i + 1] - g[i])};
}

}  // namespace

double measure_latency_ms(const PlainNetImpl& net, const LatencyOptions& o) {
  check(o);
  const int64_t size = o.input_size() > 0 ? o.input_size() : default_input_size(net);
  return time_net(net, {o.batch(), net.options().in_channels(), size, size}, o);
}

LatencyTable LatencyTable::measure(const PlainNetImpl& net, const std::vector<bool>& variable, const LatencyOptions& o,
                                  const std::vector<LayerSpec>& shapes) {
  check(o);
  TORCH_CHECK(variable.size() == net.size(), "internal: latency table flags for ", variable.size(), " of ",
              net.size(), " layers");
  TORCH_CHECK(shapes.empty() || shapes.size() == net.size(), "latency table shapes for ", shapes.size(), " of ",
              net.size(), " layers");
  LatencyTable table;
  table.whole_ms_ = measure_latency_ms(net, o);
  const int64_t size = o.input_size() > 0 ? o.input_size() : default_input_size(net);
  const auto sides = output_sides(net.specs(), size);
  double sum_full = 0.0;
  for (size_t i = 0; i < net.size(); ++i) {
    const auto& s = shapes.empty() ? net.spec(i) : shapes[i];
    const int64_t side = i == 0 ? size : sides[i - 1];  // of the layer's input
    if (!variable[i] || (s.kind != LayerKind::Conv && s.kind != LayerKind::Linear)) continue;
    Layer l;
    l.index = i;
    const bool depthwise = s.kind == LayerKind::Conv && s.groups > 1 && s.groups == s.in_channels &&
                           s.groups == s.out_channels;
    l.tied = depthwise;
    const int64_t g = s.kind == LayerKind::Conv && !depthwise ? s.groups : 1;
    l.ins = depthwise ? std::vector<int64_t>{s.in_channels} : grid_of(s.in_channels, o.grid(), g);
    l.outs = grid_of(s.out_channels, o.grid(), g);
    for (auto cin : l.ins) {
      for (auto cout : l.outs) {
        std::vector<LayerSpec> specs;
        std::vector<int64_t> shape;
        int64_t in = depthwise ? cout : cin;
        if (s.kind == LayerKind::Conv) {
          specs = {LayerSpec::conv(in, cout, s.kernel, s.stride, s.padding, depthwise ? cout : s.groups, true),
                   LayerSpec::relu()};
          shape = {o.batch(), in, side, side};
        } else {
          specs = {LayerSpec::avgpool(), LayerSpec::flatten(), LayerSpec::linear(cin, cout, true)};
          shape = {o.batch(), cin, 1, 1};
        }
        auto one = PlainNet(specs, ModelOptions("plain").in_channels(in).num_classes(cout));
        l.ms.push_back(time_net(*one, shape, o));
      }
    }
    sum_full += l.ms.back();
    table.layers_.push_back(std::move(l));
  }
  table.rest_ms_ = table.whole_ms_ - sum_full;
  return table;
}

double LatencyTable::estimate(const std::vector<LayerSpec>& specs) const {
  // The single-layer timings each include a call's overhead, so their sum can exceed the whole
  // network's time (rest_ms_ < 0): the prediction is the whole scaled by the tables' ratio, which
  // is exact at full size, never negative, and conservative where the overhead does not shrink.
  double total = 0.0;
  for (const auto& l : layers_) {
    TORCH_CHECK(l.index < specs.size(), "internal: latency table for layer ", l.index, " of ", specs.size());
    const auto& s = specs[l.index];
    const auto [j, b] = locate(l.outs, s.out_channels);
    const size_t no = l.outs.size();
    const auto at = [&](size_t a, size_t c) { return l.ms[a * no + c]; };
    const auto along_out = [&](size_t a) { return no == 1 ? at(a, 0) : (1 - b) * at(a, j) + b * at(a, j + 1); };
    double v;
    if (l.tied || l.ins.size() == 1) {
      v = along_out(0);
    } else {
      const auto [i, a] = locate(l.ins, s.in_channels);
      v = (1 - a) * along_out(i) + a * along_out(i + 1);
    }
    total += std::max(v, 0.0);
  }
  const double rest = std::max(rest_ms_, 0.0), full = whole_ms_ - rest_ms_ + rest;  // sum at full size + rest
  return full > 0 ? whole_ms_ * (total + rest) / full : whole_ms_;
}

int64_t LatencyTable::points() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += static_cast<int64_t>(l.ms.size());
  return n;
}

}  // namespace rmnet
