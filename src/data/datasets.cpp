#include "rmnet/data/datasets.h"

#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "rmnet/data/cifar.h"
#include "rmnet/data/idx.h"
#include "rmnet/data/image_folder.h"

namespace rmnet {

std::vector<std::string> dataset_names() { return {"fashion-mnist", "mnist", "cifar10", "cifar100", "folder"}; }

DatasetPtr open_dataset(const std::string& name, const std::string& dir, bool train) {
  if (name == "fashion-mnist") return load_mnist(dir.empty() ? kFashionMnistDir : dir, train, fashion_mnist_classes());
  TORCH_CHECK(!dir.empty(), "data set '", name, "' needs the folder of its files (no default location)");
  if (name == "mnist") return load_mnist(dir, train);
  if (name == "cifar10") return load_cifar10(dir, train);
  if (name == "cifar100") return load_cifar100(dir, train);
  if (name == "folder") return std::make_shared<ImageFolder>((std::filesystem::path(dir) / (train ? "train" : "val")).string());
  TORCH_CHECK(false, "unknown data set '", name, "'; available: ", fmt::format("{}", fmt::join(dataset_names(), ", ")));
}

int64_t native_image_size(const std::string& name) {
  if (name == "fashion-mnist" || name == "mnist") return 28;
  if (name == "cifar10" || name == "cifar100") return 32;
  return 0;
}

int64_t image_size_for(const std::string& name, int64_t image_size) {
  TORCH_CHECK(image_size >= 0, "image size must be >= 0 (0: the data set's default), got ", image_size);
  if (image_size > 0) return image_size;
  return name == "folder" ? 224 : native_image_size(name);
}

namespace {
/// `t`, then resized to image_size where that is given (then_resize passes an image of that side
/// through unchanged).
Transform sized(int64_t image_size, Transform t) {
  return image_size > 0 ? then_resize(std::move(t), image_size) : t;
}
}  // namespace

Transform train_transform(const std::string& name, int64_t image_size) {
  const auto norm = normalization_for(name);
  if (name == "cifar10" || name == "cifar100") return sized(image_size, random_crop_flip(4, norm));
  if (name == "fashion-mnist") return sized(image_size, random_crop_flip(2, norm, true));
  if (name == "mnist") return sized(image_size, random_crop_flip(2, norm, false));
  return random_resized_crop_flip(image_size_for(name, image_size), norm);
}

Transform eval_transform(const std::string& name, int64_t image_size) {
  const auto norm = normalization_for(name);
  if (name == "folder") {
    const int64_t size = image_size_for(name, image_size);
    return resize_center_crop(size * 8 / 7, size, norm);
  }
  return sized(image_size, normalize(norm));
}

Preprocess preprocess_for(const std::string& name, const Dataset& test, int64_t image_size) {
  const auto norm = normalization_for(name);
  Preprocess p;
  p.crop = name == "folder" ? image_size_for(name, image_size) : image_size > 0 ? image_size : test.get(0).image.size(1);
  p.resize = name == "folder" ? p.crop * 8 / 7 : p.crop;
  p.mean = norm.mean;
  p.std = norm.std;
  return p;
}

}  // namespace rmnet
