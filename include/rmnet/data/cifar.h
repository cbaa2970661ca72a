#pragma once
// CIFAR-10 / CIFAR-100 in their official binary layout.
#include <string>

#include "rmnet/data/dataset.h"

namespace rmnet {

/// CIFAR-10: data_batch_1.bin ... data_batch_5.bin (train) or test_batch.bin (test) in `dir`;
/// records of 1 label byte + 3072 pixel bytes (R, G, B planes of 32x32).
std::shared_ptr<TensorDataset> load_cifar10(const std::string& dir, bool train);
/// CIFAR-100: train.bin / test.bin; records of coarse label, fine label, 3072 bytes (fine labels).
std::shared_ptr<TensorDataset> load_cifar100(const std::string& dir, bool train);
/// Reads CIFAR records from one file: `label_bytes` label bytes (the last is used) then 3072.
/// Throws naming the file if its size is not a whole number of records or a label is >= classes.
void read_cifar_file(const std::string& path, int64_t label_bytes, int64_t num_classes,
                     std::vector<torch::Tensor>& images, std::vector<torch::Tensor>& labels);

}  // namespace rmnet
