#include <gtest/gtest.h>

#include "rmnet/core.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // ctest runs tests side by side (-j2): each gets OMP_NUM_THREADS=1 from tests/CMakeLists.txt,
  // so that parallel regions never wait on a descheduled thread (oversubscription made tiny-op
  // float64 tests over 100x slower on a loaded 2-core machine).
  rmnet::set_threads(0);
  return RUN_ALL_TESTS();
}
