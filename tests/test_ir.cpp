// The chain IR (ir/layer.h, ir/traits.h, ir/chain.h, ir/passes.h) and the entry points built on it:
// the traits table, the pass log, results' records, clone(), the prune criterion variant, the typed
// model kind and the INT8 executor behind DeployedNet.
#include <gtest/gtest.h>

#include <set>

#include "helpers.h"
#include "rmnet/bench/bench.h"
#include "rmnet/deploy/int8.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/ir/chain.h"
#include "rmnet/ir/passes.h"
#include "rmnet/ir/traits.h"
#include "rmnet/prune/slim.h"
#include "rmnet/quant/quantize.h"

using namespace rmnet;

namespace {

// One layer of every kind, in a chain that runs (SE and PReLU and clamps with real values).
std::vector<LayerSpec> every_kind() {
  return {LayerSpec::conv(3, 8, 3, 1, 1),  LayerSpec::batchnorm(8), LayerSpec::prelu(8),
          LayerSpec::se(8, 8, 4),          LayerSpec::clamp(8),     LayerSpec::relu(),
          LayerSpec::maxpool(3, 2, 1),     LayerSpec::avgpool(),    LayerSpec::flatten(),
          LayerSpec::linear(8, 5)};
}

PlainNet random_net(torch::ScalarType dtype, uint64_t seed = 7) {
  torch::manual_seed(seed);
  PlainNet net(every_kind(), ModelOptions("plain").num_classes(5).in_channels(3));
  randomize_batchnorm(*net, seed);
  torch::NoGradGuard g;
  for (auto& p : net->parameters()) p.normal_(0.0, 0.5);
  for (size_t i = 0; i < net->size(); ++i)
    if (net->spec(i).kind == LayerKind::Clamp) {  // a real clamp: lower bounds below, upper above zero
      auto t = net->layer(i)->named_buffers(false);
      if (auto* lo = t.find("min")) lo->uniform_(-1.0, -0.1);
      if (auto* hi = t.find("max")) hi->uniform_(0.5, 2.0);
    }
  net->to(dtype);
  net->eval();
  return net;
}

}  // namespace

TEST(Traits, OneEntryPerKindWithRoundTrippingNames) {
  std::set<std::string> names;
  for (const auto& t : ir::all_traits()) {
    EXPECT_EQ(&ir::traits(t.kind), &t);
    EXPECT_EQ(layer_kind_from_string(t.name), t.kind);
    EXPECT_EQ(to_string(t.kind), t.name);
    names.insert(t.name);
  }
  EXPECT_EQ(names.size(), ir::all_traits().size());
  EXPECT_EQ(names.size(), every_kind().size());  // every kind of the chain has its entry
  EXPECT_THROW(layer_kind_from_string("dropout"), c10::Error);
  // equalization relies on these: ReLU and the max-pool are positively homogeneous, a clamp is not
  EXPECT_TRUE(ir::traits(LayerKind::ReLU).positively_homogeneous);
  EXPECT_TRUE(ir::traits(LayerKind::MaxPool).positively_homogeneous);
  EXPECT_FALSE(ir::traits(LayerKind::Clamp).positively_homogeneous);
  EXPECT_FALSE(ir::traits(LayerKind::SE).positively_homogeneous);
}

TEST(Traits, FunctionalApplyEqualsTheModuleAndShapesAndMacsAreTrue) {
  for (auto dtype : {torch::kDouble, torch::kFloat}) {
    auto net = random_net(dtype);
    torch::NoGradGuard g;
    auto x = torch::randn({2, 3, 9, 9}, torch::TensorOptions().dtype(dtype)) * 3;
    int64_t macs = 0;
    for (size_t i = 0; i < net->size(); ++i) {
      const auto& s = net->spec(i);
      const auto& t = ir::traits(s.kind);
      auto m = net->layer(i);
      const auto y_module = t.forward(*m, x);
      const auto y_apply = t.apply(s, ir::module_tensors(*m), x);
      EXPECT_TRUE(torch::equal(y_module, y_apply)) << s.describe();
      EXPECT_EQ(t.output_shape(s, x.sizes().vec()), y_module.sizes().vec()) << s.describe();
      // the declared tensors are the module's, with their shapes
      for (const auto& d : t.tensors(s)) EXPECT_EQ(ir::module_tensors(*m)(d.name).sizes().vec(), d.shape) << d.name;
      macs += t.macs(s, x.sizes().vec());
      x = y_module;
    }
    // per image: the conv 3x3 3->8 on 9x9, SE's two FCs 8->4->8, the linear 8->5
    EXPECT_EQ(macs, 8 * 3 * 9 * 9 * 9 + 2 * 8 * 4 + 8 * 5);
  }
}

TEST(Chain, PassesThroughTheLogEqualThePlainNetForms) {
  auto net = test::plain_bn_of("resnet8", torch::kDouble);
  ir::WorkDtypeGuard work(torch::kDouble);
  ir::PassLog log;
  auto ch = log.run({ir::fold_batchnorm_pass(), ir::simplify_activations_pass(),
                     ir::fuse_pointwise_pass(PointwiseFusion::Auto)},
                    ir::Chain::from(*net));
  log.lap("build");
  ASSERT_EQ(log.records().size(), 4u);
  EXPECT_EQ(log.transforms(), "fold_batchnorm,simplify_activations,fuse_pointwise(auto)");
  EXPECT_EQ(log.records().back().kind, ir::PassRecord::Kind::Step);
  for (const auto& r : log.records()) EXPECT_GE(r.seconds, 0.0);
  auto built = ch.build(net->options(), torch::kDouble, torch::kCPU);
  auto via_nets = fuse_pointwise(*simplify_activations(*fold_batchnorm(*net)), PointwiseFusion::Auto);
  ASSERT_EQ(built->size(), via_nets->size());
  torch::NoGradGuard g;
  auto x = torch::randn({2, 3, 16, 16}, torch::kDouble);
  EXPECT_TRUE(torch::equal(built->forward(x), via_nets->forward(x)));
}

TEST(Results, ConvertPruneQuantizeCarryTypedPassRecords) {
  auto model = test::random_model("resnet8", torch::kFloat);
  auto c = convert(*model);
  ASSERT_TRUE(c.report.passed) << c.report.to_string();
  EXPECT_EQ(c.net.ptr(), c.plain.ptr());
  std::vector<std::string> names;
  std::string transforms;
  for (const auto& r : c.passes) {
    names.push_back(r.name);
    if (r.kind == ir::PassRecord::Kind::Transform) transforms += (transforms.empty() ? "" : ",") + r.name;
  }
  EXPECT_EQ(names, (std::vector<std::string>{"float64_copy", "reserve_merge", "fold_batchnorm", "simplify_activations",
                                             "fuse_pointwise(auto)", "build", "verify", "cost"}));
  EXPECT_EQ(transforms, c.net->metadata().at("passes"));
  ASSERT_EQ(c.pass_seconds.size(), c.passes.size());
  for (size_t i = 0; i < c.passes.size(); ++i) EXPECT_EQ(c.pass_seconds[i].first, c.passes[i].name);

  auto kbn = test::plain_bn_of("resnet8", torch::kFloat);
  auto p = prune(*kbn, PruneOptions().ratio(0.3));
  ASSERT_EQ(p.passes.size(), 1u);
  EXPECT_EQ(p.passes[0].name, "prune");

  auto q = quantize(*c.net, torch::randn({8, 3, 16, 16}), QuantizeOptions());
  std::vector<std::string> qnames;
  for (const auto& r : q.passes) qnames.push_back(r.name);
  // exact_copies: resnet8's three blocks have non-negative inputs (after a ReLU)
  EXPECT_EQ(qnames, (std::vector<std::string>{"fold_batchnorm", "equalize", "calibrate", "exact_copies", "quantize"}));
  EXPECT_EQ(q.exact_copy_blocks, 3);
  auto q_off = quantize(*c.net, torch::randn({8, 3, 16, 16}), QuantizeOptions().exact_copies(false));
  qnames.clear();
  for (const auto& r : q_off.passes) qnames.push_back(r.name);
  EXPECT_EQ(qnames, (std::vector<std::string>{"fold_batchnorm", "equalize", "calibrate", "quantize"}));
}

TEST(Clone, DeepCopiesEveryKindOfModelExactly) {
  torch::NoGradGuard g;
  auto residual = test::random_model("se_resnet20", torch::kFloat);
  auto plain = random_net(torch::kFloat);
  plain->layer(0)->parameters()[0].set_requires_grad(false);  // a frozen tensor stays frozen
  auto q = quantize(*random_net(torch::kFloat), torch::randn({8, 3, 12, 12}), QuantizeOptions()).net;
  for (ModelPtr m : std::vector<ModelPtr>{residual, plain.ptr(), q.ptr()}) {
    m->metadata()["note"] = "kept";
    auto copy = m->clone_model();
    EXPECT_EQ(copy->kind(), m->kind());
    EXPECT_EQ(copy->family(), m->family());
    EXPECT_EQ(copy->metadata(), m->metadata());
    EXPECT_EQ(copy->is_training(), m->is_training());
    auto x = torch::randn({2, 3, 12, 12});
    EXPECT_TRUE(torch::equal(copy->forward(x), m->forward(x))) << m->family();
    const auto a = m->named_parameters(true), b = copy->named_parameters(true);
    ASSERT_EQ(a.size(), b.size());
    for (const auto& p : a) {
      EXPECT_NE(b[p.key()].data_ptr(), p.value().data_ptr()) << p.key();  // its own storage
      EXPECT_EQ(b[p.key()].requires_grad(), p.value().requires_grad()) << p.key();
    }
    // the copy is independent: changing it leaves the source alone
    const auto before = m->forward(x);
    for (auto& p : copy->parameters())
      if (p.is_floating_point()) p.add_(1.0);
    EXPECT_TRUE(torch::equal(m->forward(x), before));
    // through torch::nn::Module's clone too
    auto as_module = std::dynamic_pointer_cast<ModelImpl>(m->clone());
    ASSERT_TRUE(as_module);
    EXPECT_TRUE(torch::equal(as_module->forward(x), before));
  }
  // a float64 copy computes what the float32 source does, in float64
  auto wide = plain->clone_model(torch::kDouble);
  auto x = torch::randn({2, 3, 12, 12});
  EXPECT_EQ(wide->parameters()[0].scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::allclose(wide->forward(x.to(torch::kDouble)).to(torch::kFloat), plain->forward(x), 1e-4, 1e-5));
  // provenance of a converted network survives
  auto converted = test::plain_bn_of("resnet8", torch::kFloat);
  auto c2 = std::dynamic_pointer_cast<PlainNetImpl>(converted->clone_model());
  ASSERT_TRUE(c2);
  ASSERT_EQ(c2->provenance().size(), converted->provenance().size());
  for (size_t i = 0; i < c2->size(); ++i) EXPECT_EQ(c2->origin(i).known(), converted->origin(i).known());
  // a deployed network is refused by name
  auto d = deploy(*plain, DeployOptions().runtime(Runtime::TorchScript));
  try {
    d->clone_model();
    FAIL() << "a deployed network was cloned";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot be cloned"), std::string::npos) << e.what();
  }
}

TEST(PruneCriterion, VariantSetsExactlyOneFieldAndPrunesAsTheFields) {
  PruneOptions o;
  EXPECT_TRUE(std::holds_alternative<std::monostate>(o.criterion()));
  o.ratio(0.2).target_macs(0.5);  // two set: none
  EXPECT_TRUE(std::holds_alternative<std::monostate>(o.criterion()));
  o.criterion(criterion::TargetMacs{0.6});
  EXPECT_EQ(o.ratio(), -1.0);
  EXPECT_EQ(o.target_macs(), 0.6);
  ASSERT_TRUE(std::holds_alternative<criterion::TargetMacs>(o.criterion()));
  EXPECT_EQ(std::get<criterion::TargetMacs>(o.criterion()).fraction, 0.6);
  o.criterion(criterion::Threshold{0.25});
  EXPECT_EQ(o.target_macs(), -1.0);
  EXPECT_EQ(std::get<criterion::Threshold>(o.criterion()).value, 0.25);
  o.criterion(criterion::TargetSpeedup{1.5});
  EXPECT_EQ(o.target_speedup(), 1.5);
  EXPECT_EQ(o.threshold(), -1.0);

  auto net = test::plain_bn_of("resnet8", torch::kFloat);
  auto a = prune(*net, PruneOptions().criterion(criterion::TargetMacs{0.7}));
  auto b = prune(*net, PruneOptions().target_macs(0.7));
  EXPECT_EQ(a.report.channels_removed, b.report.channels_removed);
  EXPECT_EQ(a.net->metadata().at("prune_criterion"), "target_macs 0.7");
  torch::NoGradGuard g;
  a.net->eval();
  b.net->eval();
  auto x = torch::randn({2, 3, 32, 32});
  EXPECT_TRUE(torch::equal(a.net->forward(x), b.net->forward(x)));
}

TEST(ModelKind, TypedKindsAndPruneRefusesDeployedAndQuantizedByKind) {
  auto residual = test::random_model("resnet8");
  auto plain = test::plain_bn_of("resnet8", torch::kFloat);
  EXPECT_EQ(residual->kind(), ModelKind::Residual);
  EXPECT_EQ(plain->kind(), ModelKind::Plain);
  auto d = deploy(*plain, DeployOptions().runtime(Runtime::TorchScript));
  EXPECT_EQ(d->kind(), ModelKind::Deployed);
  EXPECT_EQ(to_string(d->kind()), "deployed");
  EXPECT_EQ(as_deployed(*d.ptr()), d.get());
  EXPECT_EQ(as_deployed(*plain.ptr()), nullptr);
  try {
    prune(*d, PruneOptions().ratio(0.2));
    FAIL() << "a deployed network was pruned";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("deployed"), std::string::npos) << e.what();
  }
  auto q = quantize(*fold_batchnorm(*plain), torch::randn({4, 3, 16, 16}), QuantizeOptions()).net;
  EXPECT_EQ(q->kind(), ModelKind::Quantized);
  try {
    prune(*q, PruneOptions().ratio(0.2));
    FAIL() << "a quantized network was pruned";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("quantized"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("residual"), std::string::npos) << e.what();
  }
}

TEST(Int8Executor, BehindDeployedNetEqualsTheInt8NetAndSharesItsServices) {
  if (!int8_runtime_available()) GTEST_SKIP() << "no oneDNN INT8 operators in this LibTorch";
  auto net = random_net(torch::kFloat, 11);
  auto q = quantize(*net, torch::randn({16, 3, 12, 12}) * 2, QuantizeOptions()).net;
  auto d = deploy(*q);
  Int8Net old_style(*q, 0);
  EXPECT_EQ(d->runtime(), Runtime::Int8);
  EXPECT_EQ(d->family(), "quantized");
  EXPECT_EQ(runtime_name(*d), "int8");
  EXPECT_EQ(d->fallbacks(), q->fallbacks());
  EXPECT_FALSE(d->fallbacks().empty());  // SE and PReLU run in float32
  EXPECT_NE(d->graph().find("qconv"), std::string::npos) << d->graph();
  torch::NoGradGuard g;
  for (int64_t size : {12, 17}) {
    auto x = torch::randn({3, 3, size, size}) * 2;
    EXPECT_TRUE(torch::equal(d->forward(x), old_style->forward(x)));
  }
  // the shared input checks and profile
  EXPECT_THROW(d->forward(torch::randn({2, 4, 12, 12})), c10::Error);
  EXPECT_THROW(d->forward(torch::randint(0, 255, {2, 3, 12, 12}, torch::kByte)), c10::Error);
  const auto steps = d->profile(torch::randn({2, 3, 12, 12}), 0, 1);
  ASSERT_FALSE(steps.empty());
  EXPECT_EQ(steps.back().output_shape, (std::vector<int64_t>{2, 5}));
  // a float runtime for a quantized network is refused by name
  EXPECT_THROW(deploy(*q, DeployOptions().runtime(Runtime::OneDNN)), c10::Error);
}

TEST(BenchOptions, HoldsDeployOptions) {
  BenchOptions o;
  o.device(torch::kCPU).dtype(torch::kBFloat16).channels_last(true).runtime(Runtime::TorchScript).buffer_cache_mb(7);
  EXPECT_EQ(o.deploy().dtype(), torch::kBFloat16);
  EXPECT_TRUE(o.deploy().channels_last());
  EXPECT_EQ(o.deploy().runtime(), Runtime::TorchScript);
  EXPECT_EQ(o.deploy().buffer_cache_mb(), 7);
  o.deploy(DeployOptions().packed_shapes(3).runtime(Runtime::OneDNN));
  EXPECT_EQ(o.runtime(), Runtime::OneDNN);
  EXPECT_EQ(o.deploy().packed_shapes(), 3);
  EXPECT_EQ(o.buffer_cache_mb(), DeployOptions().buffer_cache_mb());
}
