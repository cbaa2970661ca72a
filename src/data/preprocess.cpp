#include "rmnet/data/preprocess.h"

#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>
#if RMNET_WITH_OPENCV
#include <opencv2/imgproc.hpp>
#endif

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

}  // namespace rmnet
