// Autocast guard, loss scaling and channels_last: what train_epoch uses for --amp and --channels-last.
#include <gtest/gtest.h>

#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "rmnet/models/registry.h"
#include "rmnet/train/amp.h"
#include "rmnet/train/trainer.h"

using namespace rmnet;

TEST(Amp, AutocastGuardCastsAndRestores) {
  auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 4, 3));
  auto x = torch::randn({1, 3, 8, 8});
  EXPECT_FALSE(at::autocast::is_autocast_enabled(torch::kCPU));
  {
    AutocastGuard g(torch::kCPU, torch::kBFloat16);
    EXPECT_TRUE(at::autocast::is_autocast_enabled(torch::kCPU));
    EXPECT_EQ(conv->forward(x).scalar_type(), torch::kBFloat16);
  }
  EXPECT_FALSE(at::autocast::is_autocast_enabled(torch::kCPU));
  EXPECT_EQ(conv->forward(x).scalar_type(), torch::kFloat);
  {
    AutocastGuard off(torch::kCPU, torch::kFloat);  // fp32: nothing changes
    EXPECT_FALSE(at::autocast::is_autocast_enabled(torch::kCPU));
  }
  EXPECT_EQ(parse_amp_dtype("off"), torch::kFloat);
  EXPECT_EQ(parse_amp_dtype("bf16"), torch::kBFloat16);
  EXPECT_EQ(parse_amp_dtype("fp16"), torch::kHalf);
  try {
    parse_amp_dtype("int8");
    FAIL() << "int8 accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("autocast dtype 'int8'"), std::string::npos);
  }
}

TEST(Amp, LossScalerSkipsOverflowAndGrows) {
  auto p = torch::ones({3}, torch::requires_grad());
  p.mutable_grad() = torch::tensor({1024.0f, 2048.0f, 4096.0f});
  LossScaler s;
  s.scale = 1024;
  s.growth_interval = 2;
  EXPECT_TRUE(s.unscale_and_check({p}));
  EXPECT_TRUE(torch::allclose(p.grad(), torch::tensor({1.0f, 2.0f, 4.0f})));
  s.update(true);
  EXPECT_EQ(s.scale, 1024);
  s.update(true);
  EXPECT_EQ(s.scale, 2048);  // growth_interval finite steps double it
  p.mutable_grad() = torch::tensor({1.0f, std::numeric_limits<float>::infinity(), 0.0f});
  EXPECT_FALSE(s.unscale_and_check({p}));
  s.update(false);
  EXPECT_EQ(s.scale, 1024);  // overflow halves it
  EXPECT_EQ(s.skipped_steps, 1);
  EXPECT_EQ(s.good_steps, 0);
}

TEST(Amp, Bf16AndChannelsLastTrainLikeFp32) {
  // Same data, same init: bf16 autocast + channels_last ends near the fp32 run, and both learn.
  torch::manual_seed(5);
  auto images = torch::randint(0, 60, {64, 1, 12, 12}, torch::kUInt8);
  auto labels = torch::randint(0, 4, {64}, torch::kLong);
  for (int64_t i = 0; i < 64; ++i) {
    const int64_t c = labels[i].item<int64_t>(), y = (c / 2) * 6, x = (c % 2) * 6;
    images[i].slice(1, y, y + 6).slice(2, x, x + 6).add_(150);
  }
  auto ds = std::make_shared<TensorDataset>(images, labels, 4);
  auto run = [&](torch::ScalarType amp, bool cl) {
    torch::manual_seed(0);
    auto m = create_model(ModelOptions("resnet8").num_classes(4).in_channels(1));
    if (cl) to_channels_last(*m);
    DataLoader loader(ds, normalize(normalization_for("mnist")), LoaderOptions().batch_size(16).workers(0).seed(1));
    TrainOptions o;
    o.amp_dtype(amp).channels_last(cl).schedule(ScheduleOptions().kind("constant").lr(0.05).epochs(6).steps_per_epoch(4));
    auto opt = make_sgd(*m, o);
    TrainState st;
    EpochStats first, last;
    for (int e = 0; e < 6; ++e) {
      last = train_epoch(*m, loader, *opt, o, st);
      if (e == 0) first = last;
    }
    return std::make_tuple(first.loss, last.loss, m);
  };
  auto [f32_first, f32_last, m32] = run(torch::kFloat, false);
  auto [b16_first, b16_last, m16] = run(torch::kBFloat16, true);
  EXPECT_LT(f32_last, 0.7 * f32_first);
  EXPECT_LT(b16_last, 0.7 * b16_first);
  EXPECT_NEAR(b16_first, f32_first, 0.05);  // same start, bf16 rounding only
  for (const auto& p : m16->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat);  // master weights stay fp32
    if (p.dim() == 4) EXPECT_TRUE(p.is_contiguous(torch::MemoryFormat::ChannelsLast));
  }
}
