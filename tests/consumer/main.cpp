// Builds against the installed rmnet: create a ResNet, convert it, check equivalence; the package,
// header and library agree on one version.
#include <iostream>

#include <rmnet/convert/rm.h>
#include <rmnet/core.h>
#include <rmnet/models/registry.h>
#include <rmnet/version.h>

int main() {
  if (rmnet::version() != RMNET_VERSION || rmnet::version() != PACKAGE_VERSION) {
    std::cerr << "version mismatch: library " << rmnet::version() << ", header " << RMNET_VERSION << ", package "
              << PACKAGE_VERSION << "\n";
    return 1;
  }
  auto model = rmnet::create_model(rmnet::ModelOptions("resnet20").num_classes(10));
  auto result = rmnet::convert(*model);
  std::cout << "rmnet " << rmnet::version() << ": resnet20 -> " << result.plain->size() << " plain layers; "
            << result.report.to_string() << "\n";
  return result.report.passed ? 0 : 1;
}
