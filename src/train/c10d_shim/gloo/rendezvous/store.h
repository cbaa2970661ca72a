#pragma once
// rmnet: stand-in for Gloo's header (see README.md). ProcessGroupGloo::GlooStore derives from
// this interface with `override`, so its virtual functions are declared; rmnet never creates a
// GlooStore (the library does, with the real declaration).
#include <chrono>
#include <string>
#include <vector>

namespace gloo::rendezvous {
class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const std::vector<char>& data) = 0;
  virtual std::vector<char> get(const std::string& key) = 0;
  virtual void wait(const std::vector<std::string>& keys) = 0;
  virtual void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) = 0;
};
}  // namespace gloo::rendezvous
