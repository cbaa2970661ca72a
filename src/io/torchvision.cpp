#include "rmnet/io/torchvision.h"

#include <algorithm>

#include <torch/torch.h>

#include "rmnet/data/preprocess.h"
#include "rmnet/models/registry.h"

namespace rmnet {

ModelPtr import_torchvision(const std::string& arch, const std::string& path, int64_t num_classes) {
  static const std::vector<std::string> supported = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                                                     "mobilenet_v2"};
  TORCH_CHECK(std::find(supported.begin(), supported.end(), arch) != supported.end(), "import_torchvision: architecture '",
              arch, "' is not one of resnet18, resnet34, resnet50, resnet101, resnet152, mobilenet_v2");
  const auto state = read_state_dict(path);
  const std::string fc_key = arch == "mobilenet_v2" ? "classifier.1.weight" : "fc.weight";
  int64_t classes = num_classes;
  for (const auto& [k, t] : state)
    if (k == fc_key && num_classes == 0) classes = t.size(0);
  TORCH_CHECK(classes > 0, "weights file '", path, "': no '", fc_key, "' to infer the number of classes from (is it a ",
              arch, "?)");
  auto model = create_model(ModelOptions(arch).num_classes(classes));
  load_state_dict(*model, state, "weights file '" + path + "'");
  model->metadata()["imported_from"] = path;
  Preprocess().to_metadata(model->metadata());  // torchvision's ImageNet evaluation transform
  model->eval();
  return model;
}

}  // namespace rmnet
