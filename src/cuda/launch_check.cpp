// cuda/launch_check.cpp — the post-launch check every kernel launcher calls.
#include "cuda/check.hpp"

namespace cudl::kernels {

void check_launch(const char* kernel_name) { CUDL_CHECK_LAUNCH(kernel_name); }

}  // namespace cudl::kernels
