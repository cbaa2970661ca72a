// The image half of Preprocess (rmnet::data, OpenCV); the metadata half is preprocess_metadata.cpp
// (rmnet::core, which writes it for torchvision checkpoints).
#include "rmnet/data/preprocess.h"

#include <torch/torch.h>
#if RMNET_WITH_OPENCV
#include <opencv2/imgproc.hpp>
#endif

namespace rmnet {
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
