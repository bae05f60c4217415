// Where a package's bytes come from, for a ProgressiveModel (or any loop
// driving a PackageDecoder): an app with its own HTTP stack, cache or file
// system implements ByteSource; the decode component brings one over a
// directory, the fetch component one over HTTP (make_package_source in
// bitinc/fetch.hpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "bitinc/decoder.hpp"

namespace bitinc {

// Takes bytes as they arrive; returns false to stop the read early.
using ByteSink = std::function<bool(std::span<const std::uint8_t>)>;

class ByteSource {
  public:
    virtual ~ByteSource() = default;
    // Names the package in messages (a URL or a directory).
    virtual std::string name() const = 0;
    // Reads bytes [range.begin, range.end) of the package file range.file
    // (end 0: to the end of the file — the manifest and its signature, whose
    // sizes only the server knows) and hands them to `sink` in order, in
    // chunks of any size, until the range is done or `sink` returns false.
    // Blocks; called from one thread at a time. Throws Error when the bytes
    // cannot be had (after whatever retries the source makes itself); the
    // bytes handed over before stay good, and the caller may read the rest
    // again.
    virtual void read(const ByteRange& range, const ByteSink& sink) = 0;
    // Asks a read under way to end soon (it may throw Error with
    // ErrorCode::cancelled); called from another thread when the reader
    // stops. Sources whose reads never wait long need not do anything.
    virtual void cancel() {}
};

// The files of a package directory on this machine (plain file reads).
std::unique_ptr<ByteSource> make_directory_source(std::filesystem::path directory);

}  // namespace bitinc
