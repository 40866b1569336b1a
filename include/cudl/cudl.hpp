// cudl/cudl.hpp — the whole public API in one include.
#pragma once

#include "cudl/device.hpp"
#include "cudl/dtype.hpp"
#include "cudl/error.hpp"
#include "cudl/export.hpp"
#include "cudl/shape.hpp"
#include "cudl/tensor.hpp"
#include "cudl/version.hpp"
