#pragma once
// Weights trained in Python: state_dicts saved the ordinary way (torch.save(model.state_dict(),
// "w.pth")) and TorchScript archives (torch.jit.save), read natively in C++.
//
// LibTorch's torch::pickle_load cannot read a state_dict file: the unpickler turns
// collections.OrderedDict into None ("Expected GenericDict but got None", pytorch/pytorch#100741;
// still so in 2.14). rmnet reads the zip archive with LibTorch's PyTorchStreamReader and
// interprets the pickle itself (read_state_dict, io/state_dict.h): the opcodes of protocol 2 and
// the few globals a state_dict uses (OrderedDict, _rebuild_tensor_v2, _rebuild_parameter, the
// typed storages).
#include <string>

#include "rmnet/io/state_dict.h"
#include "rmnet/models/model.h"

namespace rmnet {

/// A torchvision model (resnet18/34/50/101/152, mobilenet_v2) with the weights of `path`.
/// `num_classes` 0 infers it from the classifier. Missing or unexpected keys and shape mismatches
/// are errors naming the key (and both shapes).
ModelPtr import_torchvision(const std::string& arch, const std::string& path, int64_t num_classes = 0);

}  // namespace rmnet
