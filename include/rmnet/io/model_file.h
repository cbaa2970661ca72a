#pragma once
// rmnet model files: self-describing (architecture, options, layers, metadata) plus tensors.
// The file is a torch.save-compatible archive of a dict {"rmnet": <JSON text>, "state":
// {name: tensor}}, written with torch::pickle_save, so Python's torch.load reads it too.
#include <string>

#include "rmnet/models/model.h"

namespace rmnet {

/// Writes `model` to `path` atomically (temporary file in the same folder, then rename); on
/// failure the previous file, if any, is untouched. Tensors are stored on CPU.
void save_model(const ModelImpl& model, const std::string& path);

/// Loads a model file written by save_model. Throws with the file name and the problem for a
/// missing file, a file that is not an rmnet model, an unknown architecture, a missing or
/// unexpected tensor, or a shape mismatch (naming the key and both shapes).
ModelPtr load_model(const std::string& path);

/// The bytes of a model file (what save_model writes), and the model back from them; `name`
/// names the source in error messages.
std::string serialize_model(const ModelImpl& model);
ModelPtr deserialize_model(const std::string& bytes, const std::string& name);

/// Writes bytes to `path` atomically (tmp + rename). Throws naming the path on failure.
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace rmnet
