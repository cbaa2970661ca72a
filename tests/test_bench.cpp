// Cost counting (models/profile.h), the deploy runtime (deploy/runtime.h) and the benchmark
// (bench/bench.h).
#include <gtest/gtest.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "helpers.h"
#include "rmnet/bench/bench.h"
#include "rmnet/deploy/runtime.h"
#include "rmnet/infer/classifier.h"
#include "rmnet/io/model_file.h"
#include "rmnet/models/profile.h"

using namespace rmnet;
using namespace rmnet::test;

TEST(Profile, MatchesTorchvisionCounts) {
  // Reference: forward hooks on torchvision's models in Python (conv + linear MACs per image).
  auto r18 = create_model(ModelOptions("resnet18"));
  auto c = profile_model(*r18, 3, 224);
  EXPECT_EQ(c.flops, 1814073344);
  EXPECT_EQ(c.params, 11689512);
  ASSERT_EQ(c.layers.size(), 21u);  // 20 convs + fc
  EXPECT_EQ(c.layers.front().name, "conv1");
  EXPECT_EQ(c.layers.front().flops, 118013952);  // 64*112*112 * 3*7*7
  EXPECT_EQ(c.layers.front().out_shape, (std::vector<int64_t>{1, 64, 112, 112}));
  EXPECT_EQ(c.layers.back().name, "fc");
  EXPECT_EQ(c.layers.back().kind, "linear");
  EXPECT_EQ(c.layers.back().flops, 512000);
  EXPECT_EQ(count_flops(*r18, 3, 32), 37523456);

  auto mb = create_model(ModelOptions("mobilenet_v2"));
  auto m = profile_model(*mb, 3, 224);
  EXPECT_EQ(m.flops, 300774272);
  EXPECT_EQ(m.params, 3504872);
  EXPECT_EQ(count_flops(*mb, 3, 32), 7392128);
}

TEST(Profile, PlainChainHandComputed) {
  PlainNet net(std::vector<LayerSpec>{LayerSpec::conv(3, 8, 3, 2, 1), LayerSpec::relu(),
                                      LayerSpec::conv(8, 16, 1, 1, 0, /*groups=*/2, /*bias=*/false),
                                      LayerSpec::avgpool(), LayerSpec::flatten(), LayerSpec::linear(16, 10)},
               ModelOptions("plain").num_classes(10));
  auto c = profile_model(*net, 3, 8);
  ASSERT_EQ(c.layers.size(), 3u);
  EXPECT_EQ(c.layers[0].name, "0");
  EXPECT_EQ(c.layers[0].flops, 8 * 4 * 4 * 27);  // out 8x4x4, 3*3*3 each
  EXPECT_EQ(c.layers[0].params, 8 * 27 + 8);
  EXPECT_EQ(c.layers[1].name, "2");
  EXPECT_EQ(c.layers[1].flops, 16 * 4 * 4 * 4);  // 8/2 inputs per group
  EXPECT_EQ(c.layers[1].params, 16 * 4);
  EXPECT_EQ(c.layers[2].name, "5");
  EXPECT_EQ(c.layers[2].flops, 160);
  EXPECT_EQ(c.flops, 8 * 4 * 4 * 27 + 16 * 4 * 4 * 4 + 160);
  EXPECT_EQ(c.params, 8 * 27 + 8 + 16 * 4 + 160 + 10);
  EXPECT_NE(error_of([&] { profile_model(*net, 3, 0); }).find("input_size"), std::string::npos);
  EXPECT_EQ(format_count(1814073344.0), "1.814 G");
}

TEST(Convert, ReportsCostBeforeAndAfter) {
  auto m = random_model("mobilenet_v2_cifar");
  auto never = convert(*m, ConvertOptions().fuse_pointwise(PointwiseFusion::Never));
  auto autof = convert(*m, ConvertOptions().fuse_pointwise(PointwiseFusion::Auto));
  auto always = convert(*m, ConvertOptions().fuse_pointwise(PointwiseFusion::Always));
  EXPECT_EQ(never.cost_input_size, 32);
  EXPECT_EQ(never.cost_before.flops, count_flops(*m, 3, 32));
  EXPECT_EQ(never.cost_after.flops, count_flops(*never.plain, 3, 32));
  EXPECT_EQ(never.plain->metadata().at("cost.flops_after"), std::to_string(never.cost_after.flops));
  // Expansion 6: fusing pw-linear with the next pw-expand multiplies their cost, so auto keeps
  // them apart and "always" is far more expensive.
  EXPECT_LE(autof.cost_after.flops, never.cost_after.flops);
  EXPECT_GT(always.cost_after.flops, 2 * never.cost_after.flops);
  // Skipped on request
  auto none = convert(*m, ConvertOptions().cost_input_size(-1));
  EXPECT_EQ(none.cost_input_size, 0);
  EXPECT_EQ(none.cost_after.flops, 0);
}

TEST(Deploy, SameLogitsAsThePlainNetwork) {
  torch::manual_seed(3);
  const auto x = 3 * torch::randn({4, 3, 32, 32});
  struct Case {
    std::string arch;
    ConvertOptions co;
  };
  const std::vector<Case> cases = {
      {"resnet8", ConvertOptions()},
      {"resnet8", ConvertOptions().keep_bn(true)},                  // BN folded by freezing
      {"resnet8", ConvertOptions().downsample(DownsampleMode::Type1)},  // PReLU
      {"mobilenet_v2_cifar", ConvertOptions()},                     // ReLU6 with mixed clamps
      {"mobilenet_v2_cifar", ConvertOptions().fuse_pointwise(PointwiseFusion::Always)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.arch);
    auto m = random_model(c.arch);
    auto plain = convert(*m, c.co).plain;
    auto d = deploy(*plain);
    EXPECT_LE(rel_diff(*plain, *d, x), 1e-4);
    EXPECT_LE(rel_diff(*m, *d, x), 1e-4);
    EXPECT_EQ(d->source_parameters(), count_parameters(*plain));
    auto unopt = deploy(*plain, DeployOptions().runtime(Runtime::TorchScript).optimize(false));
    EXPECT_LE(rel_diff(*plain, *unopt, x), 1e-4);
    auto cl = deploy(*plain, DeployOptions().runtime(Runtime::TorchScript).channels_last(true));
    EXPECT_LE(rel_diff(*plain, *cl, x), 1e-4);
    auto ts = deploy(*plain, DeployOptions().runtime(Runtime::TorchScript));
    EXPECT_LE(rel_diff(*plain, *ts, x), 1e-4);
  }
}

TEST(Deploy, PrepareInferencePicksTheRuntime) {
  auto m = random_model("resnet8");
  auto plain = convert(*m).plain;
  EXPECT_NE(dynamic_cast<DeployedNetImpl*>(prepare_inference(plain.ptr(), Runtime::Auto).get()), nullptr);
  EXPECT_EQ(prepare_inference(plain.ptr(), Runtime::Eager).get(), plain.get());
  EXPECT_EQ(prepare_inference(m, Runtime::Auto).get(), m.get());
  EXPECT_NE(error_of([&] { prepare_inference(m, Runtime::Deploy); }).find("plain networks only"), std::string::npos);
  EXPECT_EQ(runtime_from_string("deploy"), Runtime::Deploy);
  EXPECT_NE(error_of([&] { runtime_from_string("fast"); }).find("unknown runtime 'fast'"), std::string::npos);
}

TEST(Bench, TinyModelsAndJsonParses) {
  auto m = random_model("resnet8");
  auto plain = convert(*m).plain;
  auto o = BenchOptions().batch(2).warmup(1).iters(3);
  int64_t calls = 0;
  auto a = benchmark(m, "resnet8", o, [&](const std::string&, int64_t, int64_t) { ++calls; });
  auto b = benchmark(plain.ptr(), "resnet8 (RM)", o);
  EXPECT_EQ(calls, 4);
  EXPECT_EQ(a.runtime, "eager");
  EXPECT_EQ(b.runtime, "onednn");
  EXPECT_EQ(a.input_size, 32);
  EXPECT_EQ(a.flops, count_flops(*m, 3, 32));
  EXPECT_EQ(b.flops, count_flops(*plain, 3, 32));
  EXPECT_EQ(b.params, count_parameters(*plain));
  EXPECT_GT(a.images_per_second, 0);
  EXPECT_GE(a.latency_p90_ms, a.latency_p50_ms);
  EXPECT_NEAR(a.gflops_per_second, a.flops * a.images_per_second / 1e9, 1e-9 * a.gflops_per_second + 1e-12);
  EXPECT_GT(b.peak_memory_bytes, 0);
  auto j = nlohmann::json::parse(bench_json({a, b}, o));
  ASSERT_EQ(j["models"].size(), 2u);
  EXPECT_EQ(j["models"][0]["name"], "resnet8");
  EXPECT_DOUBLE_EQ(j["models"][1]["images_per_second"].get<double>(), b.images_per_second);
  EXPECT_DOUBLE_EQ(j["models"][0]["ratio_to_first"].get<double>(), 1.0);
  EXPECT_EQ(j["options"]["batch"], 2);
  EXPECT_NE(bench_table({a, b}).find("resnet8 (RM)"), std::string::npos);
  // bf16 autocast (eager) and bf16 weights (deploy) run and return batch-sized outputs
  auto c = benchmark(plain.ptr(), "bf16", BenchOptions().batch(2).warmup(0).iters(1).dtype(torch::kBFloat16));
  EXPECT_EQ(c.dtype, "bf16");
  EXPECT_NE(error_of([&] { benchmark(m, "x", BenchOptions().iters(0)); }).find("iters"), std::string::npos);
}

TEST(Deploy, ClassifierUsesTheDeployRuntimeForPlainNetworks) {
  auto m = random_model("resnet8", torch::kFloat, true, 4);
  auto plain = convert(*m).plain;
  Preprocess pre;
  pre.resize = 36;
  pre.crop = 32;
  pre.to_metadata(plain->metadata());
  const auto path = temp_path("deploy_cls.rmnet");
  save_model(*plain, path);
  Classifier fast(path);
  Classifier eager(path, ClassifierOptions().runtime(Runtime::Eager));
  EXPECT_NE(dynamic_cast<const DeployedNetImpl*>(&fast.model()), nullptr);
  EXPECT_EQ(dynamic_cast<const DeployedNetImpl*>(&eager.model()), nullptr);
  std::vector<cv::Mat> images;
  for (int i = 0; i < 3; ++i) {
    cv::Mat img(40, 44 + 3 * i, CV_8UC3);
    cv::randu(img, 0, 255);
    images.push_back(img);
  }
  auto a = fast.classify(images, 2), b = eager.classify(images, 2);
  for (size_t i = 0; i < images.size(); ++i) {
    EXPECT_EQ(a[i][0].index, b[i][0].index);
    EXPECT_NEAR(a[i][0].score, b[i][0].score, 1e-5);
  }
  std::filesystem::remove(path);
}
