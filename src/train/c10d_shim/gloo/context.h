#pragma once
// rmnet: stand-in for Gloo's header (see README.md). ProcessGroupGloo holds contexts by pointer;
// its inline setTimeout names Context::setTimeout, declared here and never called by rmnet.
#include <chrono>

namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
