// The selection controls of network slimming (include/rmnet/prune/slim.h): MACs and parameter
// targets, the per-layer cap, per-layer ratios, rounding kept counts to a multiple.
#include <gtest/gtest.h>

#include <numeric>

#include "helpers.h"
#include "rmnet/convert/rm.h"
#include "rmnet/models/profile.h"
#include "rmnet/prune/slim.h"

namespace rmnet {
namespace {
using test::random_model;

PlainNet plain_of(const std::string& arch) {
  auto r = convert(*random_model(arch, torch::kFloat), ConvertOptions().keep_bn(true).verify(false));
  r.plain->eval();
  return r.plain;
}

/// Output height (= width) of every layer of a chain for a square input.
std::vector<int64_t> sizes_of(const PlainNetImpl& net, int64_t size) {
  std::vector<int64_t> out;
  for (const auto& s : net.specs()) {
    if (s.kind == LayerKind::Conv || s.kind == LayerKind::MaxPool) size = (size + 2 * s.padding - s.kernel) / s.stride + 1;
    if (s.kind == LayerKind::AvgPool) size = 1;
    out.push_back(size);
  }
  return out;
}

/// An upper bound of the MACs and parameters one channel group of any unit costs (the step a target
/// can miss by): its producer filter, its tied depthwise filters, its consumer input slice.
std::pair<int64_t, int64_t> largest_group_cost(const PlainNetImpl& net, const std::vector<PruneUnit>& units,
                                               int64_t size) {
  const auto hw = sizes_of(net, size);
  int64_t macs = 0, params = 0;
  for (const auto& u : units) {
    const auto& p = net.spec(u.producer);
    int64_t m = hw[u.producer] * hw[u.producer] * p.in_channels / p.groups * p.kernel * p.kernel;
    int64_t q = p.in_channels / p.groups * p.kernel * p.kernel + 2;
    for (auto j : u.sliced) {
      const auto& s = net.spec(j);
      if (s.kind == LayerKind::Conv) {
        m += hw[j] * hw[j] * s.kernel * s.kernel;
        q += s.kernel * s.kernel;
      }
      q += s.kind == LayerKind::BatchNorm ? 2 : s.kind == LayerKind::PReLU ? 1 : 0;
    }
    const auto& c = net.spec(u.consumer);
    if (c.kind == LayerKind::Conv) {
      m += hw[u.consumer] * hw[u.consumer] * c.out_channels / c.groups * c.kernel * c.kernel;
      q += c.out_channels / c.groups * c.kernel * c.kernel;
    } else {
      m += c.out_channels;
      q += c.out_channels;
    }
    macs = std::max(macs, u.groups * m);
    params = std::max(params, u.groups * q);
  }
  return {macs, params};
}

TEST(PruneControls, TargetMacsIsMetWithinOneChannelGroup) {
  for (const std::string arch : {"resnet20", "mobilenet_v2_cifar"}) {
    auto net = plain_of(arch);
    const int64_t before = count_flops(*net, 3, 32);
    for (double target : {0.7, 0.4}) {
      auto r = prune(*net, PruneOptions().target_macs(target).input_size(32).keep_one(true));
      const int64_t after = count_flops(*r.net, 3, 32);
      EXPECT_EQ(r.report.macs_before, before) << arch;
      EXPECT_EQ(r.report.macs_after, after) << arch;  // the cost model is the profiler's count
      const auto limit = static_cast<int64_t>(target * static_cast<double>(before));
      EXPECT_LE(after, limit) << arch << " target " << target;
      EXPECT_GT(after, limit - largest_group_cost(*net, prune_units(*net), 32).first) << arch << " target " << target;
    }
  }
}

TEST(PruneControls, TargetParamsIsMetWithinOneChannelGroup) {
  auto net = plain_of("rmnet26x3_32");  // grouped units: steps of several channels
  const int64_t before = count_parameters(*net);
  auto r = prune(*net, PruneOptions().target_params(0.5).keep_one(true));
  const int64_t after = count_parameters(*r.net);
  EXPECT_EQ(r.report.params_after, after);
  const auto limit = static_cast<int64_t>(0.5 * static_cast<double>(before));
  EXPECT_LE(after, limit);
  EXPECT_GT(after, limit - largest_group_cost(*net, prune_units(*net), 32).second);
  for (const auto& s : r.net->specs())
    if (s.kind == LayerKind::Conv) EXPECT_EQ(s.out_channels % s.groups, 0) << s.describe();
}

TEST(PruneControls, RoundToGivesMultiples) {
  for (int64_t q : {8, 16}) {
    auto net = plain_of("resnet20");
    auto r = prune(*net, PruneOptions().ratio(0.4).round_to(q).keep_one(true));
    int64_t pruned = 0;
    for (const auto& u : r.report.units) {
      const auto k = static_cast<int64_t>(u.kept.size());
      EXPECT_TRUE(k % q == 0 || k == u.channels) << "unit at layer " << u.producer << " keeps " << k;
      EXPECT_GE(k, q);
      EXPECT_EQ(r.net->spec(u.producer).out_channels, k);
      pruned += k < u.channels ? 1 : 0;
    }
    EXPECT_GT(pruned, 3) << q;
    // a grouped unit keeps a multiple of lcm(groups, q) channels
    auto g = prune(*plain_of("rmnet26x3_32"), PruneOptions().ratio(0.4).round_to(q).keep_one(true));
    for (const auto& u : g.report.units) {
      const auto k = static_cast<int64_t>(u.kept.size());
      EXPECT_TRUE(k % std::lcm(u.groups, q) == 0 || k == u.channels) << "unit at layer " << u.producer;
    }
  }
}

TEST(PruneControls, MaxLayerRatioCapsEveryLayer) {
  auto net = plain_of("resnet20");
  auto r = prune(*net, PruneOptions().ratio(0.6).max_layer_ratio(0.7));
  int64_t removed = 0, capped = 0;
  for (const auto& u : r.report.units) {
    const int64_t lost = u.channels - static_cast<int64_t>(u.kept.size());
    EXPECT_LE(lost, static_cast<int64_t>(0.7 * static_cast<double>(u.channels) + 1e-9)) << "unit " << u.producer;
    capped += lost == static_cast<int64_t>(0.7 * static_cast<double>(u.channels) + 1e-9) ? 1 : 0;
    removed += lost;
  }
  EXPECT_GT(capped, 0);  // the cap bites, and the global count goes on in other layers
  EXPECT_EQ(removed, static_cast<int64_t>(0.6 * static_cast<double>(r.report.channels_total)));
  // without the cap the same ratio empties some layer
  EXPECT_NE(test::error_of([&] { prune(*net, PruneOptions().ratio(0.95)); }).find("every channel"), std::string::npos);
  EXPECT_EQ(test::error_of([&] { prune(*net, PruneOptions().ratio(0.95).max_layer_ratio(0.9)); }), "");
}

TEST(PruneControls, LayerScopeRemovesTheSameFractionEverywhere) {
  auto net = plain_of("resnet20");
  auto r = prune(*net, PruneOptions().ratio(0.25).scope(PruneScope::Layer));
  for (const auto& u : r.report.units)
    EXPECT_EQ(u.channels - static_cast<int64_t>(u.kept.size()), u.channels / 4) << "unit " << u.producer;
  EXPECT_EQ(r.net->metadata().at("prune_criterion"), "ratio 0.25 (layer)");
}

}  // namespace
}  // namespace rmnet
