// data/safetensors.hpp — helpers the safetensors reader shares with the checkpoint loader.
#pragma once

#include <cstdint>
#include <string>

namespace cudl::safetensors {

/// Text shown in an error: printable ASCII as is, anything else as \xNN, at most 64 characters.
std::string shown(const std::string& s);
/// A decimal integer written with digits only (no sign, space, exponent or fraction) that fits in
/// uint64_t; false otherwise.
bool parse_u64(const std::string& s, uint64_t* out);

}  // namespace cudl::safetensors
