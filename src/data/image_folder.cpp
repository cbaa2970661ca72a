#include "rmnet/data/image_folder.h"

#include <algorithm>
#include <filesystem>

#include <torch/torch.h>
#if RMNET_WITH_OPENCV
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#endif

namespace rmnet {
namespace fs = std::filesystem;

namespace {
bool is_image(const fs::path& p) {
  auto ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}
}  // namespace

torch::Tensor read_image(const std::string& path, int64_t channels) {
  TORCH_CHECK(channels == 1 || channels == 3, "read_image: channels must be 1 or 3 (got ", channels, ")");
#if !RMNET_WITH_OPENCV
  TORCH_CHECK(false, "'", path, "': cannot decode images, this rmnet was built without OpenCV (RMNET_WITH_OPENCV=OFF)");
  return {};
#else
  cv::Mat m;
  try {  // OpenCV throws (rather than returning an empty image) for some bad files, e.g. huge sizes
    m = cv::imread(path, channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
  } catch (const cv::Exception& e) {
    TORCH_CHECK(false, "'", path, "': cannot decode image (", e.what(), ")");
  }
  TORCH_CHECK(!m.empty(), "'", path, "': cannot decode image (missing, corrupt, or not JPEG/PNG/BMP)");
  if (channels == 3) cv::cvtColor(m, m, cv::COLOR_BGR2RGB);
  auto t = torch::from_blob(m.data, {m.rows, m.cols, channels}, torch::kUInt8);
  return t.permute({2, 0, 1}).contiguous();
#endif
}

ImageFolder::ImageFolder(const std::string& root, int64_t channels) : channels_(channels) {
  TORCH_CHECK(fs::is_directory(root), "'", root, "': no such folder");
  for (const auto& e : fs::directory_iterator(root))
    if (e.is_directory()) classes_.push_back(e.path().filename().string());
  std::sort(classes_.begin(), classes_.end());
  TORCH_CHECK(!classes_.empty(), "'", root, "': no class folders (expected one sub-folder per class)");
  for (size_t c = 0; c < classes_.size(); ++c) {
    const auto dir = fs::path(root) / classes_[c];
    std::vector<std::string> files;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_regular_file() && is_image(e.path())) files.push_back(e.path().string());
    TORCH_CHECK(!files.empty(), "'", dir.string(), "': class folder holds no image (.jpg, .jpeg, .png, .bmp)");
    std::sort(files.begin(), files.end());
    for (auto& f : files) files_.emplace_back(std::move(f), static_cast<int64_t>(c));
  }
}

Sample ImageFolder::get(size_t index) const {
  TORCH_CHECK(index < files_.size(), "sample index ", index, " out of range (", files_.size(), " images)");
  return {read_image(files_[index].first, channels_), files_[index].second};
}

}  // namespace rmnet
