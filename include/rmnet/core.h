#pragma once
// Library-wide basics: version, thread control, error helpers.
#include <string>

namespace rmnet {

/// The library version, "MAJOR.MINOR.PATCH".
std::string version();

/// Sets the number of intra-op threads LibTorch uses; n <= 0 means OMP_NUM_THREADS when that is
/// set to a positive number, else all hardware threads.
/// Returns the number actually set.
int set_threads(int n);

/// The message of an exception without LibTorch's C++ backtrace (c10::Error carries one).
std::string error_message(const std::exception& e);

}  // namespace rmnet
