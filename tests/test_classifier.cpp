// The C++ inference API: preprocessing from the model file, batching, top-k, labels.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <opencv2/imgproc.hpp>

#include "helpers.h"
#include "rmnet/infer/classifier.h"
#include "rmnet/io/model_file.h"

using namespace rmnet;

TEST(Classifier, MatchesTheModelOnPreprocessedImages) {
  auto model = test::random_model("resnet20", torch::kFloat, false, 4);
  Preprocess pre;
  pre.resize = 36;
  pre.crop = 32;
  pre.to_metadata(model->metadata());
  const auto path = test::temp_path("cls.rmnet"), labels = test::temp_path("labels.txt");
  save_model(*model, path);
  std::ofstream(labels) << "a\nb\nc\nd\n";
  Classifier cls(path, ClassifierOptions().labels(labels).batch_size(2));
  EXPECT_EQ(cls.preprocess().crop, 32);
  std::vector<cv::Mat> images;
  for (int i = 0; i < 3; ++i) {
    cv::Mat m(40 + 10 * i, 50, CV_8UC3);
    cv::randu(m, 0, 255);
    images.push_back(m);
  }
  auto res = cls.classify(images, 3);
  ASSERT_EQ(res.size(), 3u);
  torch::NoGradGuard g;
  for (size_t i = 0; i < images.size(); ++i) {
    ASSERT_EQ(res[i].size(), 3u);
    auto x = pre.apply(images[i], 3).unsqueeze(0);
    auto probs = torch::softmax(model->forward(x), 1)[0];
    const auto best = probs.argmax().item<int64_t>();
    EXPECT_EQ(res[i][0].index, best);
    EXPECT_NEAR(res[i][0].score, probs[best].item<double>(), 1e-5);
    EXPECT_EQ(res[i][0].label, std::string(1, static_cast<char>('a' + best)));
    EXPECT_GE(res[i][0].score, res[i][1].score);
  }
  // preprocessing: BGR -> RGB, shorter side to 36, center crop 32, normalise
  cv::Mat blue(36, 36, CV_8UC3, cv::Scalar(255, 0, 0));
  auto t = pre.apply(blue, 3);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 32, 32}));
  EXPECT_NEAR(t[2][5][5].item<double>(), (1.0 - 0.406) / 0.225, 1e-5);  // blue is the third RGB channel
  EXPECT_NEAR(t[0][5][5].item<double>(), (0.0 - 0.485) / 0.229, 1e-5);
  std::filesystem::remove(path);
  std::filesystem::remove(labels);
}

TEST(Classifier, ClearErrors) {
  auto model = test::random_model("resnet20", torch::kFloat, false, 4);
  const auto path = test::temp_path("nopre.rmnet");
  save_model(*model, path);
  try {
    Classifier c(path);
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("stores no preprocessing"), std::string::npos);
  }
  Preprocess().to_metadata(model->metadata());
  save_model(*model, path);
  const auto labels = test::temp_path("labels3.txt");
  std::ofstream(labels) << "a\nb\nc\n";
  try {
    Classifier c(path, ClassifierOptions().labels(labels));
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("3 names, the model 4 classes"), std::string::npos) << e.what();
  }
  Classifier c(path);
  try {
    c.classify_files({test::temp_path("missing.png")});
    FAIL() << "expected an error";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing.png"), std::string::npos);
  }
  std::filesystem::remove(path);
  std::filesystem::remove(labels);
}
