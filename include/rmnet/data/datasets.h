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

/// Default training augmentation: CIFAR: pad 4 + crop + flip; (Fashion-)MNIST: pad 2 + crop
/// (+ flip for Fashion-MNIST); folder: RandomResizedCrop(image_size) + flip.
Transform train_transform(const std::string& name, int64_t image_size = 224);
/// Default evaluation transform: normalisation; folder: resize to image_size * 8/7, center crop.
Transform eval_transform(const std::string& name, int64_t image_size = 224);

/// The preprocessing the Classifier API should apply to a photo for a model trained on data set
/// `name` with eval_transform(name, image_size): the data set's normalisation; folder: resize to
/// image_size * 8/7, center crop image_size; otherwise the side of the test images (`test`).
Preprocess preprocess_for(const std::string& name, const Dataset& test, int64_t image_size = 224);

}  // namespace rmnet
