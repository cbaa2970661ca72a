// ONNX export read back by a strict third-party reader: OpenCV's DNN module runs it to the same
// logits as the plain network.
#include <gtest/gtest.h>

#include <filesystem>

#include <opencv2/dnn.hpp>

#include "helpers.h"
#include "rmnet/io/export.h"
#include "rmnet/io/torchvision.h"

using namespace rmnet;

namespace {
torch::Tensor run_opencv(const std::string& onnx, const torch::Tensor& x) {
  auto net = cv::dnn::readNetFromONNX(onnx);
  auto xc = x.contiguous();
  std::vector<int> shape(xc.sizes().begin(), xc.sizes().end());
  cv::Mat blob(static_cast<int>(shape.size()), shape.data(), CV_32F, xc.data_ptr<float>());
  net.setInput(blob, "input");
  cv::Mat out = net.forward("logits");
  return torch::from_blob(out.ptr<float>(), {out.size[0], out.size[1]}, torch::kFloat).clone();
}
}  // namespace

TEST(Onnx, OpenCvRunsTheExportToTheSameLogits) {
  // A BasicBlock ResNet, a Bottleneck ResNet (grouped reserve convs), a MobileNetV2 with ReLU
  // (depthwise convs, PReLU reserve). OpenCV 4.6 cannot read ReLU6 networks' per-channel clamp
  // (its importer takes Clip only in the opset-6 attribute form, which opset >= 11 forbids, and
  // rejects Min/Max against constants); those are checked with ONNX Runtime in test_exports.py.
  for (const std::string arch : {"resnet20", "resnet18", "resnet50", "mobilenet_v2_cifar_relu"}) {
    const bool relu = arch.ends_with("_relu");
    auto model = test::random_model(relu ? "mobilenet_v2_cifar" : arch, torch::kFloat, true, 10, !relu);
    auto r = convert(*model);
    const auto path = test::temp_path(arch + ".onnx");
    export_onnx(*r.plain, path);
    const int64_t size = arch == "resnet18" || arch == "resnet50" ? 64 : 32;
    auto x = torch::randn({2, 3, size, size}) * 3;
    torch::NoGradGuard g;
    auto ref = r.plain->forward(x);
    torch::Tensor y;
    try {
      y = run_opencv(path, x);
    } catch (const cv::Exception& e) {
      ADD_FAILURE() << arch << ": OpenCV could not run the export: " << e.what();
      continue;
    }
    EXPECT_LE((y - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-4) << arch;
    std::filesystem::remove(path);
  }
}

TEST(Export, TorchScriptLoadsBackInCppAndMatches) {
  for (const std::string arch : {"resnet20", "mobilenet_v2_cifar"}) {
    auto model = test::random_model(arch);
    for (bool keep_bn : {false, true}) {
      auto r = convert(*model, ConvertOptions().keep_bn(keep_bn));
      const auto path = test::temp_path(arch + ".pt");
      export_torchscript(*r.plain, path);
      auto m = torch::jit::load(path);
      auto x = torch::randn({2, 3, 32, 32}) * 3;
      torch::NoGradGuard g;
      r.plain->eval();
      auto ref = r.plain->forward(x);
      auto y = m.forward({x}).toTensor();
      EXPECT_LE((y - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-5) << arch;
      std::filesystem::remove(path);
    }
  }
}

TEST(Export, PthStateDictReadsBack) {
  auto r = convert(*test::random_model("resnet20"), ConvertOptions().keep_bn(true));
  const auto path = test::temp_path("plain.pth");
  export_pth(*r.plain, path);
  auto sd = read_state_dict(path);  // rmnet's own reader of torch.save files
  std::map<std::string, torch::Tensor> expected;
  for (const auto& p : r.plain->named_parameters()) expected[p.key()] = p.value();
  for (const auto& b : r.plain->named_buffers()) expected[b.key()] = b.value();
  ASSERT_EQ(sd.size(), expected.size());
  EXPECT_EQ(sd.front().first, "0.weight");
  for (const auto& [k, t] : sd) EXPECT_TRUE(torch::equal(t, expected.at(k))) << k;
  EXPECT_TRUE(std::filesystem::exists(path + ".json"));
  std::filesystem::remove(path);
  std::filesystem::remove(path + ".json");
}
