#pragma once
// Data sets by name, with their default transforms: what `rmnet train` and `rmnet eval` use.
#include <string>
#include <vector>

#include "rmnet/data/dataset.h"
#include "rmnet/data/preprocess.h"
#include "rmnet/data/transforms.h"

namespace rmnet {

/// "fashion-mnist", "mnist", "cifar10", "cifar100", "folder".
std::vector<std::string> dataset_names();

/// Opens the train or test split. `dir` may be empty for fashion-mnist (Debian's package).
/// "folder" expects dir/train and dir/val, one sub-folder per class.
DatasetPtr open_dataset(const std::string& name, const std::string& dir, bool train);

/// The side of a data set's images: 28 (fashion-mnist, mnist), 32 (cifar10, cifar100); 0 for
/// "folder" (any size).
int64_t native_image_size(const std::string& name);

/// The image side the transforms below produce for `image_size` (0: the default): folder: the
/// crop, default 224; the other data sets: their own side, or `image_size` where given (their
/// images resized to it after the augmentation: e.g. Fashion-MNIST at 64x64 for an ImageNet-stem
/// network).
int64_t image_size_for(const std::string& name, int64_t image_size);

/// Default training augmentation: CIFAR: pad 4 + crop + flip; (Fashion-)MNIST: pad 2 + crop
/// (+ flip for Fashion-MNIST); folder: RandomResizedCrop(image_size) + flip. Then, for the data
/// sets other than folder and image_size > 0, a bilinear resize to it (then_resize; an image of
/// that side passes unchanged).
Transform train_transform(const std::string& name, int64_t image_size = 0);
/// Default evaluation transform: normalisation (and the resize, as above); folder: resize to
/// image_size * 8/7, center crop.
Transform eval_transform(const std::string& name, int64_t image_size = 0);

/// The preprocessing the Classifier API should apply to a photo for a model trained on data set
/// `name` with eval_transform(name, image_size): the data set's normalisation; folder: resize to
/// image_size * 8/7, center crop image_size (default 224); otherwise resize to (and crop)
/// image_size where given, else the side of the test images (`test`).
Preprocess preprocess_for(const std::string& name, const Dataset& test, int64_t image_size = 0);

}  // namespace rmnet
