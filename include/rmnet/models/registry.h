#pragma once
// Create any model by name: the single entry point the CLI and the model-file loader use.
#include <string>
#include <vector>

#include "rmnet/models/model.h"

namespace rmnet {

/// All architecture names, sorted.
std::vector<std::string> model_names();
/// True when `arch` names a registered architecture.
bool is_model_name(const std::string& arch);
/// A one-line description of an architecture (for `rmnet list`).
std::string model_description(const std::string& arch);
/// Creates a randomly initialised model. Throws naming the problem for an unknown name or an
/// option out of range (num_classes < 1, in_channels < 1, width_mult <= 0).
ModelPtr create_model(const ModelOptions& options);

}  // namespace rmnet
