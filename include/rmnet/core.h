#pragma once
// Library-wide basics: version, thread control, error helpers.
#include <cstdint>
#include <map>
#include <optional>
#include <string>

namespace rmnet {

/// The library version, "MAJOR.MINOR.PATCH".
std::string version();

/// Sets the number of intra-op threads LibTorch uses; n <= 0 means OMP_NUM_THREADS when that is
/// set to a positive number, else all hardware threads.
/// Returns the number actually set.
int set_threads(int n);

/// Reproducible runs (PyTorch's torch.use_deterministic_algorithms(True, warn_only=True) plus
/// cudnn.deterministic, no cudnn.benchmark and no TF32): the same inputs then give the same
/// results on a GPU run after run, at some speed. cuBLAS also needs CUBLAS_WORKSPACE_CONFIG=:4096:8
/// in the environment. on = false restores PyTorch's defaults.
void set_deterministic(bool on);

/// The message of an exception without LibTorch's C++ backtrace (c10::Error carries one).
std::string error_message(const std::exception& e);

/// An integer stored in string metadata (a model's "input_size", "verify_input_size",
/// "preprocess.crop", ...): nullopt when the key is absent; throws, naming the key and the value,
/// when the value is not a whole decimal integer.
std::optional<int64_t> metadata_int(const std::map<std::string, std::string>& metadata, const std::string& key);

}  // namespace rmnet
