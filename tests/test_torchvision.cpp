// Weights trained in Python: torchvision state_dicts saved the ordinary way are read natively,
// give torchvision's own logits, and convert to plain networks that give them too.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "helpers.h"
#include "rmnet/io/torchvision.h"

using namespace rmnet;
namespace fs = std::filesystem;

namespace {

class TorchvisionWeights : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = test::temp_path("torchvision");
    fs::create_directories(dir_);
    const std::string cmd = std::string(RMNET_TEST_PYTHON) + " " + RMNET_TEST_SOURCE_DIR +
                            "/make_torchvision_weights.py " + dir_;
    ok_ = std::system(cmd.c_str()) == 0;
  }
  static void TearDownTestSuite() { fs::remove_all(dir_); }
  void SetUp() override {
    // CI sets RMNET_REQUIRE_PYTHON_TESTS: there a missing interpreter is a failure, not a skip
    // (a skipped interop test is a hole nobody sees).
    if (!ok_ && std::getenv("RMNET_REQUIRE_PYTHON_TESTS"))
      FAIL() << "RMNET_REQUIRE_PYTHON_TESTS is set, but Python with torch/torchvision (" << RMNET_TEST_PYTHON
             << ") could not write the test weights";
    if (!ok_) GTEST_SKIP() << "Python with torch/torchvision not available (" << RMNET_TEST_PYTHON << ")";
  }
  static torch::Tensor io(const std::string& name, const std::string& key) {
    for (const auto& [k, t] : read_state_dict(dir_ + "/" + name + "_io.pth"))
      if (k == key) return t;
    return {};
  }
  static std::string dir_;
  static bool ok_;
};
std::string TorchvisionWeights::dir_;
bool TorchvisionWeights::ok_ = false;

double rel(const torch::Tensor& a, const torch::Tensor& b) {
  return (a - b).abs().max().item<double>() / b.abs().max().item<double>();
}

}  // namespace

TEST_F(TorchvisionWeights, ImportedModelsGiveTorchvisionsLogits) {
  for (const std::string name : {"resnet18", "mobilenet_v2", "resnet50"}) {
    auto model = import_torchvision(name, dir_ + "/" + name + ".pth");
    EXPECT_EQ(model->options().num_classes(), 10) << name;  // inferred from the classifier
    auto x = io(name, "x"), y = io(name, "y");
    ASSERT_TRUE(x.defined() && y.defined());
    torch::NoGradGuard g;
    EXPECT_LE(rel(model->forward(x), y), 1e-5) << name;
    auto r = convert(*model);
    EXPECT_TRUE(r.report.passed) << name << ": " << r.report.to_string();
    EXPECT_LE(rel(r.plain->forward(x), y), 1e-4) << name;
  }
}

TEST_F(TorchvisionWeights, TorchScriptArchives) {
  auto model = import_torchvision("resnet18", dir_ + "/resnet18_script.pt");
  torch::NoGradGuard g;
  EXPECT_LE(rel(model->forward(io("resnet18", "x")), io("resnet18", "y")), 1e-5);
}

TEST_F(TorchvisionWeights, BadInputIsNamed) {
  using test::error_of;
  // another architecture: the first mismatching key with both shapes
  auto msg = error_of([&] { import_torchvision("resnet50", dir_ + "/resnet18.pth"); });
  EXPECT_NE(msg.find("layer1.0.conv1.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[64, 64, 3, 3]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[64, 64, 1, 1]"), std::string::npos) << msg;
  // a wrong class count
  msg = error_of([&] { import_torchvision("resnet18", dir_ + "/resnet18.pth", 1000); });
  EXPECT_NE(msg.find("fc.weight"), std::string::npos) << msg;
  // truncated, and not a zip at all
  std::string bytes;
  {
    std::ifstream in(dir_ + "/resnet18.pth", std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  const auto truncated = dir_ + "/truncated.pth";
  std::ofstream(truncated, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  msg = error_of([&] { import_torchvision("resnet18", truncated); });
  EXPECT_NE(msg.find(truncated), std::string::npos) << msg;
  const auto text = dir_ + "/text.pth";
  std::ofstream(text) << "not a pickle";
  msg = error_of([&] { import_torchvision("resnet18", text); });
  EXPECT_NE(msg.find(text), std::string::npos) << msg;
  msg = error_of([&] { import_torchvision("vgg16", dir_ + "/resnet18.pth"); });
  EXPECT_NE(msg.find("vgg16"), std::string::npos) << msg;
}
