// Reading and writing whole files with the guarantees the tools promise:
// bounded reads, and writes that never leave a half-written file behind.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace bitinc::core {

// Reads `path` whole. Throws Error naming the file if it is missing, not a
// regular file, unreadable, or larger than `max_bytes`.
std::string read_file(const std::filesystem::path& path, std::uint64_t max_bytes);

// Writes `bytes` to a temporary file beside `path`, flushes it to disk and
// renames it over `path`. On any failure the temporary file is removed, an
// existing `path` is left untouched, and Error is thrown. The file gets
// `mode` (0600 for a private key: the temporary file is 0600 from its
// creation, so the bytes are never readable by others).
void write_file_atomically(const std::filesystem::path& path, std::string_view bytes,
                           unsigned mode = 0644);

// A regular file opened for reads at any offset (pread), for readers that
// take one piece of a large file at a time. Throws Error naming the file.
class ReadableFile {
  public:
    explicit ReadableFile(const std::filesystem::path& path);
    ~ReadableFile();
    ReadableFile(ReadableFile&& other) noexcept;
    ReadableFile& operator=(ReadableFile&&) = delete;
    ReadableFile(const ReadableFile&) = delete;
    ReadableFile& operator=(const ReadableFile&) = delete;

    std::uint64_t size() const { return size_; }
    const std::filesystem::path& path() const { return path_; }
    // Reads exactly `out.size()` bytes at `offset`; throws Error if the file
    // is shorter (it changed while reading).
    void read_at(std::uint64_t offset, std::span<std::byte> out) const;
    void read_at(std::uint64_t offset, void* out, std::size_t length) const {
        read_at(offset, std::span(static_cast<std::byte*>(out), length));
    }

  private:
    std::filesystem::path path_;
    int fd_ = -1;
    std::uint64_t size_ = 0;
};

// Lowercase hex SHA-256 of the whole of `file`, read a block at a time.
std::string file_sha256_hex(const ReadableFile& file);

// Writes a file piece by piece to a temporary name beside `path`; commit()
// flushes it to disk and renames it over `path`. Destroyed without commit()
// (an error on the way), it removes the temporary file, so `path` is never
// left half-written and an existing `path` survives.
class AtomicFileWriter {
  public:
    explicit AtomicFileWriter(std::filesystem::path path);
    ~AtomicFileWriter();
    AtomicFileWriter(const AtomicFileWriter&) = delete;
    AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

    void write(std::string_view bytes);
    void write(std::span<const std::byte> bytes) {
        write(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    }
    std::uint64_t bytes_written() const { return written_; }
    // Flushes and closes the temporary file; rename() then moves it into
    // place. Split in two so that several files can all be complete before
    // any of them replaces its target.
    void finish();
    void rename();
    void commit() {
        finish();
        rename();
    }

  private:
    void flush_buffer();

    std::filesystem::path path_;
    std::string temporary_;
    int fd_ = -1;
    std::string buffer_;
    std::uint64_t written_ = 0;
    bool finished_ = false;
    bool renamed_ = false;
};

}  // namespace bitinc::core
