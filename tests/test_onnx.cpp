// ONNX export read back by a strict third-party reader: OpenCV's DNN module runs it to the same
// logits as the plain network.
#include <gtest/gtest.h>

#include <filesystem>

#include <opencv2/dnn.hpp>

#include "helpers.h"
#include "rmnet/io/export.h"

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
  // ResNets only: OpenCV 4.6's ONNX importer reads Clip only in its opset-6 form (min/max
  // attributes, one input), which opset >= 11 forbids, so ReLU6 networks are checked with ONNX
  // Runtime instead (tests/test_exports.py).
  for (const std::string arch : {"resnet20", "resnet18"}) {
    auto model = test::random_model(arch);
    auto r = convert(*model);
    const auto path = test::temp_path(arch + ".onnx");
    export_onnx(*r.plain, path);
    const int64_t size = arch == "resnet18" ? 64 : 32;
    auto x = torch::randn({2, 3, size, size}) * 3;
    torch::NoGradGuard g;
    auto ref = r.plain->forward(x);
    auto y = run_opencv(path, x);
    EXPECT_LE((y - ref).abs().max().item<double>() / ref.abs().max().item<double>(), 1e-4) << arch;
    std::filesystem::remove(path);
  }
}
