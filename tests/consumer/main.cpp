// Builds against the installed rmnet: create a ResNet, convert it, check equivalence.
#include <iostream>

#include <rmnet/convert/rm.h>
#include <rmnet/models/registry.h>

int main() {
  auto model = rmnet::create_model(rmnet::ModelOptions("resnet20").num_classes(10));
  auto result = rmnet::convert(*model);
  std::cout << "resnet20 -> " << result.plain->size() << " plain layers; " << result.report.to_string() << "\n";
  return result.report.passed ? 0 : 1;
}
