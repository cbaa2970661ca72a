// The precision policy (deploy/precision.h, `--dtype auto`): native bf16 detection, and the choice
// made on a measured top-1 agreement, which must be the agreement of the two deployments.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "helpers.h"
#include "rmnet/bench/bench.h"
#include "rmnet/deploy/precision.h"
#include "rmnet/infer/classifier.h"
#include "rmnet/io/model_file.h"

using namespace rmnet;

namespace {

/// A plain resnet8 whose classes 0 and 1 are a near tie on the images x: class 1's weights are
/// class 0's times (1 + 2^-12), both biases about 100, class 1's lower by 2^-12 times the median
/// over x of class 0's product p. float32 tells them apart (class 1 wins where p is above its
/// median: half of x); bf16 rounds both rows and both biases to the same values, so they tie and
/// argmax says 0. The agreement of bf16 with float32 is about one half.
ModelPtr near_tie_plain(const torch::Tensor& x) {
  auto r = convert(*test::random_model("resnet8"), ConvertOptions());
  TORCH_CHECK(r.report.passed, r.report.to_string());
  ModelPtr net = r.net.ptr();
  torch::Tensor w, b;
  for (auto& p : net->named_parameters()) {
    if (p.value().dim() == 2) w = p.value();
    if (w.defined() && p.value().dim() == 1 && p.value().size(0) == w.size(0)) b = p.value();
  }
  TORCH_CHECK(w.defined() && b.defined(), "no classifier weight and bias found");
  torch::NoGradGuard g;
  net->eval();
  const double step = std::ldexp(1.0, -12);
  w[1].copy_(w[0] * (1.0 + step));
  b.fill_(0.0);
  const double median = net->forward(x).select(1, 0).median().item<double>();
  b[0].fill_(100.0);
  b[1].fill_(100.0 - step * median);
  return net;
}

double agreement_of(const ModelPtr& net, const torch::Tensor& x, int64_t batch) {
  torch::NoGradGuard g;
  auto a = prepare_inference(net, Runtime::OneDNN, DeployOptions().dtype(torch::kFloat));
  auto b = prepare_inference(net, Runtime::OneDNN, DeployOptions().dtype(torch::kBFloat16));
  std::vector<torch::Tensor> same;
  for (int64_t i = 0; i < x.size(0); i += batch) {
    const auto xb = x.narrow(0, i, std::min(batch, x.size(0) - i));
    same.push_back(a->forward(xb).argmax(1).eq(b->forward(xb).argmax(1)));
  }
  return torch::cat(same).to(torch::kDouble).mean().item<double>();
}

}  // namespace

TEST(Precision, NativeBf16MatchesTheKernelsCpuFlags) {
  std::ifstream in("/proc/cpuinfo");
  if (!in) GTEST_SKIP() << "no /proc/cpuinfo";
  std::string line;
  bool flags_seen = false, bf16 = false;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    flags_seen = true;
    std::istringstream words(line.substr(line.find(':') + 1));
    for (std::string f; words >> f;) bf16 = bf16 || f == "avx512_bf16" || f == "amx_bf16";
    break;
  }
  if (!flags_seen) GTEST_SKIP() << "no flags line in /proc/cpuinfo";
  EXPECT_EQ(cpu_has_native_bf16(), bf16);
}

TEST(Precision, NamesRoundTripAndBadOnesAreNamed) {
  for (auto p : {Precision::F32, Precision::BF16, Precision::Auto}) EXPECT_EQ(precision_from_string(to_string(p)), p);
  EXPECT_EQ(precision_from_string("bfloat16"), Precision::BF16);
  EXPECT_NE(test::error_of([] { precision_from_string("fp8"); }).find("'fp8'"), std::string::npos);
}

TEST(Precision, ChoosesOnTheMeasuredAgreement) {
  const auto x = synthetic_check_images(*test::random_model("resnet8"), 16, 64);
  EXPECT_TRUE(torch::equal(x, synthetic_check_images(*test::random_model("resnet8"), 16, 64)));  // deterministic
  auto net = near_tie_plain(x);
  const double agree = agreement_of(net, x, 7);
  ASSERT_GT(agree, 0.2);
  ASSERT_LT(agree, 0.8);  // the near tie flips about half of the predictions in bf16

  const auto base = DeployOptions().runtime(Runtime::OneDNN);
  auto c = choose_precision(net, x, base, PrecisionOptions().native_bf16(true).batch_size(7));
  EXPECT_EQ(c.dtype, torch::kFloat);
  EXPECT_DOUBLE_EQ(c.agreement, agree);
  EXPECT_EQ(c.checked, 64);
  EXPECT_NE(c.reason.find("below"), std::string::npos) << c.reason;

  c = choose_precision(net, x, base, PrecisionOptions().native_bf16(true).min_agreement(agree));
  EXPECT_EQ(c.dtype, torch::kBFloat16) << c.reason;
  EXPECT_EQ(c.dtype_name(), "bf16");

  // without native bf16 nothing is measured
  c = choose_precision(net, x, base, PrecisionOptions().native_bf16(false).min_agreement(0.0));
  EXPECT_EQ(c.dtype, torch::kFloat);
  EXPECT_EQ(c.checked, 0);
  EXPECT_LT(c.agreement, 0.0);
  EXPECT_NE(c.reason.find("no native bf16"), std::string::npos) << c.reason;

  // the network itself is untouched: its float32 outputs are what they were
  auto again = near_tie_plain(x);
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::equal(net->forward(x), again->forward(x)));
}

TEST(Precision, ModelsThatDoNotDeployInBf16StayFloat32) {
  const auto x = torch::randn({4, 3, 16, 16});
  const auto policy = PrecisionOptions().native_bf16(true).min_agreement(0.0);
  auto residual = test::random_model("resnet8");
  auto c = choose_precision(residual, x, DeployOptions(), policy);
  EXPECT_EQ(c.dtype, torch::kFloat);
  EXPECT_NE(c.reason.find("residual"), std::string::npos) << c.reason;

  auto plain = near_tie_plain(x);
  c = choose_precision(plain, x, DeployOptions().runtime(Runtime::Eager), policy);
  EXPECT_EQ(c.dtype, torch::kFloat);
  EXPECT_NE(c.reason.find("eager"), std::string::npos) << c.reason;

  auto deployed = prepare_inference(plain, Runtime::OneDNN, DeployOptions().dtype(torch::kBFloat16));
  c = choose_precision(deployed, x, DeployOptions(), policy);
  EXPECT_EQ(c.dtype, torch::kBFloat16);
  EXPECT_NE(c.reason.find("already deployed"), std::string::npos) << c.reason;

  // a bad check set is named
  EXPECT_NE(test::error_of([&] { choose_precision(plain, torch::randn({3, 16, 16}), DeployOptions(), policy); })
                .find("check set"),
            std::string::npos);
}

TEST(Precision, BenchAndClassifierReportTheChoice) {
  const auto x = synthetic_check_images(*test::random_model("resnet8"), 16, 32);
  auto net = near_tie_plain(x);
  auto r = benchmark(net, "tie", BenchOptions().batch(2).warmup(0).iters(1).input_size(16).auto_precision(true).check_images(32));
  ASSERT_TRUE(r.precision.has_value());
  EXPECT_EQ(r.dtype, r.precision->dtype_name());
  EXPECT_EQ(r.precision->native_bf16, cpu_has_native_bf16());
  if (r.precision->native_bf16) {
    EXPECT_EQ(r.precision->checked, 32);
    EXPECT_DOUBLE_EQ(r.precision->agreement, agreement_of(net, x, 64));
    EXPECT_EQ(r.dtype, "fp32");  // the near tie disagrees on about half
  }
  EXPECT_NE(bench_json({r}, BenchOptions().auto_precision(true)).find("\"dtype_choice\""), std::string::npos);

  // the Classifier: auto on check files; bf16 on a residual model is refused by name
  Preprocess pre;
  pre.resize = 18;
  pre.crop = 16;
  pre.to_metadata(net->metadata());
  const auto path = test::temp_path("prec.rmnet"), img = test::temp_path("prec.png");
  save_model(*net, path);
  cv::Mat m(20, 24, CV_8UC3);
  cv::randu(m, 0, 255);
  cv::imwrite(img, m);
  Classifier cls(path, ClassifierOptions().precision(Precision::Auto).check_files({img, img, img}));
  if (cpu_has_native_bf16()) EXPECT_EQ(cls.precision().checked, 3);
  EXPECT_FALSE(cls.precision().reason.empty());
  Classifier forced(path, ClassifierOptions().precision(Precision::BF16));
  EXPECT_EQ(forced.precision().dtype, torch::kBFloat16);
  EXPECT_EQ(as_deployed(forced.model())->deploy_options().dtype(), torch::kBFloat16);

  auto residual = test::random_model("resnet8");
  pre.to_metadata(residual->metadata());
  save_model(*residual, path);
  const auto msg = test::error_of([&] { Classifier c(path, ClassifierOptions().precision(Precision::BF16)); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("bf16"), std::string::npos) << msg;
  std::filesystem::remove(path);
  std::filesystem::remove(img);
}
