#include "rmnet/infer/classifier.h"

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#if RMNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

#include "rmnet/io/model_file.h"

namespace rmnet {
namespace {
std::vector<double> parse_list(const std::string& s, const std::string& key) {
  std::vector<double> v;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    try {
      v.push_back(std::stod(item));
    } catch (const std::exception&) {
      TORCH_CHECK(false, "metadata '", key, "' is not a comma-separated list of numbers: '", s, "'");
    }
  }
  return v;
}
}  // namespace

std::optional<Preprocess> Preprocess::from_metadata(const std::map<std::string, std::string>& m) {
  auto get = [&](const std::string& k) -> const std::string* {
    auto it = m.find("preprocess." + k);
    return it == m.end() ? nullptr : &it->second;
  };
  if (!get("crop")) return std::nullopt;
  Preprocess p;
  p.crop = std::stoll(*get("crop"));
  p.resize = get("resize") ? std::stoll(*get("resize")) : p.crop;
  if (get("mean")) p.mean = parse_list(*get("mean"), "preprocess.mean");
  if (get("std")) p.std = parse_list(*get("std"), "preprocess.std");
  return p;
}

void Preprocess::to_metadata(std::map<std::string, std::string>& m) const {
  m["preprocess.resize"] = std::to_string(resize);
  m["preprocess.crop"] = std::to_string(crop);
  m["preprocess.mean"] = fmt::format("{}", fmt::join(mean, ","));
  m["preprocess.std"] = fmt::format("{}", fmt::join(std, ","));
}

#if RMNET_WITH_OPENCV
torch::Tensor Preprocess::apply(const cv::Mat& image, int64_t channels) const {
  TORCH_CHECK(!image.empty(), "empty image");
  TORCH_CHECK(image.depth() == CV_8U, "images must be 8-bit (got OpenCV depth ", image.depth(), ")");
  TORCH_CHECK(static_cast<int64_t>(mean.size()) == channels && static_cast<int64_t>(std.size()) == channels,
              "preprocessing has ", mean.size(), " channels, the model ", channels);
  cv::Mat img;
  if (channels == 1)
    img = image.channels() == 1 ? image : [&] { cv::Mat g; cv::cvtColor(image, g, image.channels() == 4 ? cv::COLOR_BGRA2GRAY : cv::COLOR_BGR2GRAY); return g; }();
  else if (image.channels() == 1)
    cv::cvtColor(image, img, cv::COLOR_GRAY2RGB);
  else
    cv::cvtColor(image, img, image.channels() == 4 ? cv::COLOR_BGRA2RGB : cv::COLOR_BGR2RGB);
  const double s = static_cast<double>(resize) / std::min(img.rows, img.cols);
  cv::Mat resized;
  cv::resize(img, resized, cv::Size(std::max(1, static_cast<int>(std::lround(img.cols * s))),
                                    std::max(1, static_cast<int>(std::lround(img.rows * s)))),
             0, 0, cv::INTER_LINEAR);
  TORCH_CHECK(resized.rows >= crop && resized.cols >= crop, "crop ", crop, " is larger than the resized image");
  cv::Mat cropped = resized(cv::Rect((resized.cols - static_cast<int>(crop)) / 2, (resized.rows - static_cast<int>(crop)) / 2,
                                     static_cast<int>(crop), static_cast<int>(crop)))
                        .clone();
  auto t = torch::from_blob(cropped.data, {crop, crop, channels}, torch::kUInt8).permute({2, 0, 1}).to(torch::kFloat) / 255.0;
  auto m = torch::tensor(mean, torch::kDouble).to(torch::kFloat).view({-1, 1, 1});
  auto sd = torch::tensor(std, torch::kDouble).to(torch::kFloat).view({-1, 1, 1});
  return ((t - m) / sd).contiguous();
}
#endif

Classifier::Classifier(const std::string& model_path, ClassifierOptions options) : options_(std::move(options)) {
  model_ = prepare_inference(load_model(model_path), options_.runtime(), DeployOptions().device(options_.device()));
  auto p = options_.preprocess() ? options_.preprocess() : Preprocess::from_metadata(model_->metadata());
  TORCH_CHECK(p, "model file '", model_path,
              "' stores no preprocessing (preprocess.* metadata); give ClassifierOptions::preprocess");
  preprocess_ = *p;
  if (!options_.labels().empty()) {
    std::ifstream in(options_.labels());
    TORCH_CHECK(in, "labels file '", options_.labels(), "': cannot open");
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) labels_.push_back(line);
    TORCH_CHECK(static_cast<int64_t>(labels_.size()) == model_->options().num_classes(), "labels file '",
                options_.labels(), "' has ", labels_.size(), " names, the model ", model_->options().num_classes(),
                " classes");
  }
}

#if RMNET_WITH_OPENCV
std::vector<std::vector<Prediction>> Classifier::classify(const std::vector<cv::Mat>& images, int64_t top_k) {
  torch::NoGradGuard no_grad;
  const int64_t k = std::min<int64_t>(top_k, model_->options().num_classes());
  const int64_t channels = model_->options().in_channels();
  std::vector<std::vector<Prediction>> out;
  for (size_t begin = 0; begin < images.size(); begin += static_cast<size_t>(options_.batch_size())) {
    const size_t end = std::min(images.size(), begin + static_cast<size_t>(options_.batch_size()));
    std::vector<torch::Tensor> batch;
    for (size_t i = begin; i < end; ++i) batch.push_back(preprocess_.apply(images[i], channels));
    auto probs = torch::softmax(model_->forward(torch::stack(batch).to(options_.device())), 1).cpu();
    auto [scores, idx] = probs.topk(k, 1);
    for (int64_t r = 0; r < scores.size(0); ++r) {
      std::vector<Prediction> preds;
      for (int64_t j = 0; j < k; ++j) {
        Prediction p;
        p.index = idx[r][j].item<int64_t>();
        p.score = scores[r][j].item<double>();
        if (!labels_.empty()) p.label = labels_[static_cast<size_t>(p.index)];
        preds.push_back(p);
      }
      out.push_back(std::move(preds));
    }
  }
  return out;
}

#endif

std::vector<std::vector<Prediction>> Classifier::classify_files(const std::vector<std::string>& paths, int64_t top_k) {
#if !RMNET_WITH_OPENCV
  TORCH_CHECK(false, "cannot decode images: this rmnet was built without OpenCV (RMNET_WITH_OPENCV=OFF)");
  return {};
#else
  std::vector<cv::Mat> images;
  for (const auto& p : paths) {
    cv::Mat m = cv::imread(p, cv::IMREAD_UNCHANGED);
    TORCH_CHECK(!m.empty(), "image '", p, "': cannot decode (missing, corrupt, or not an image)");
    if (m.depth() != CV_8U) m.convertTo(m, CV_8U);
    images.push_back(m);
  }
  return classify(images, top_k);
#endif
}

}  // namespace rmnet
