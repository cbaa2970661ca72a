#include <gtest/gtest.h>

#include "rmnet/core.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  rmnet::set_threads(0);
  return RUN_ALL_TESTS();
}
