#pragma once
// State dicts: name -> tensor lists, the common currency of the readers (torch.save files, rmnet
// model files) and the one routine that copies them into a model.
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "rmnet/models/model.h"

namespace rmnet {

/// name -> tensor, in file order.
using StateDict = std::vector<std::pair<std::string, torch::Tensor>>;

/// Reads a state_dict from a torch.save file (zip format) or a TorchScript archive (its
/// parameters and buffers). No code from the file is executed: the pickle is interpreted by
/// rmnet's own reader, which knows only the objects a state_dict holds. Throws naming the file for
/// a missing file, a file that is not a zip archive or pickle, an unsupported object, or a
/// truncated storage.
StateDict read_state_dict(const std::string& path);

/// Checks every pickle of the LibTorch archive (zip) at `path` for what LibTorch's own unpickler
/// trusts (record lengths, memo indices, opcodes it reads, a STOP), reading nothing out of bounds;
/// throws a c10::Error naming `what` and the problem. Call it before handing an outside archive to
/// torch::load or torch::serialize::InputArchive (the checkpoint reader does).
void check_torch_archive(const std::string& path, const std::string& what);

/// Copies a state_dict into a model: every parameter and buffer of the model must be in `state`
/// with its shape, and nothing else may be. Errors name the tensor ("missing tensor 'fc.bias'",
/// "tensor 'fc.weight' has shape [5, 64] in the file, but the resnet20 model expects [10, 64]",
/// "unexpected tensor 'x'"), prefixed by `source` when it is not empty. Values are converted to
/// the model's dtype.
void load_state_dict(ModelImpl& model, const StateDict& state, const std::string& source = "");

}  // namespace rmnet
