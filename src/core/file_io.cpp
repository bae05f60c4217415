#include "core/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>
#include <utility>

#include "bitinc/error.hpp"
#include "core/sha256.hpp"

namespace bitinc::core {

namespace {

std::string describe_errno(int error_number) {
    return std::strerror(error_number);
}

}  // namespace

std::string read_file(const std::filesystem::path& path, std::uint64_t max_bytes) {
    std::error_code error;
    const auto status = std::filesystem::status(path, error);
    if (error || !std::filesystem::exists(status)) {
        throw Error(ErrorCode::io, path.string() + ": no such file");
    }
    if (!std::filesystem::is_regular_file(status)) {
        throw Error(ErrorCode::io, path.string() + ": not a regular file");
    }
    const std::uint64_t size = std::filesystem::file_size(path, error);
    if (error) {
        throw Error(ErrorCode::io, path.string() + ": cannot read size: " + error.message());
    }
    if (size > max_bytes) {
        throw Error(ErrorCode::unsupported, path.string() + ": file is " + std::to_string(size) +
                                                " bytes, more than the " +
                                                std::to_string(max_bytes) + " this reader accepts");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw Error(ErrorCode::io, path.string() + ": cannot open: " + describe_errno(errno));
    }
    std::string bytes(static_cast<std::size_t>(size), '\0');
    in.read(bytes.data(), static_cast<std::streamsize>(size));
    if (static_cast<std::uint64_t>(in.gcount()) != size) {
        throw Error(ErrorCode::io, path.string() + ": read failed (file changed while reading?)");
    }
    return bytes;
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes,
                           unsigned mode) {
    const std::filesystem::path directory =
        path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    std::string temporary = (directory / ("." + path.filename().string() + ".XXXXXX")).string();
    const int fd = ::mkstemp(temporary.data());
    if (fd < 0) {
        throw Error(ErrorCode::io,
                    path.string() + ": cannot create a file here: " + describe_errno(errno));
    }
    auto fail = [&](const std::string& what, int error_number) {
        ::close(fd);
        ::unlink(temporary.c_str());
        throw Error(ErrorCode::io,
                    path.string() + ": " + what + ": " + describe_errno(error_number));
    };
    std::size_t written = 0;
    while (written < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
        if (n < 0) {
            if (errno == EINTR) continue;
            fail("write failed", errno);
        }
        written += static_cast<std::size_t>(n);
    }
    if (::fchmod(fd, static_cast<mode_t>(mode)) != 0) fail("cannot set permissions", errno);
    if (::fsync(fd) != 0) fail("cannot flush to disk", errno);
    if (::close(fd) != 0) {
        const int error_number = errno;
        ::unlink(temporary.c_str());
        throw Error(ErrorCode::io,
                    path.string() + ": close failed: " + describe_errno(error_number));
    }
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
        const int error_number = errno;
        ::unlink(temporary.c_str());
        throw Error(ErrorCode::io,
                    path.string() + ": cannot rename into place: " + describe_errno(error_number));
    }
}

ReadableFile::ReadableFile(const std::filesystem::path& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
        const int error_number = errno;
        throw Error(ErrorCode::io,
                    path.string() + (error_number == ENOENT
                                         ? ": no such file"
                                         : ": cannot open: " + describe_errno(error_number)));
    }
    struct stat status {};
    if (::fstat(fd_, &status) != 0 || !S_ISREG(status.st_mode)) {
        ::close(fd_);
        throw Error(ErrorCode::io, path.string() + ": not a regular file");
    }
    size_ = static_cast<std::uint64_t>(status.st_size);
}

ReadableFile::~ReadableFile() {
    if (fd_ >= 0) ::close(fd_);
}

ReadableFile::ReadableFile(ReadableFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

void ReadableFile::read_at(std::uint64_t offset, std::span<std::byte> out) const {
    std::size_t done = 0;
    while (done < out.size()) {
        const ssize_t n =
            ::pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            throw Error(ErrorCode::io, path_.string() + ": read failed: " + describe_errno(errno));
        if (n == 0)
            throw Error(ErrorCode::io,
                        path_.string() + ": file ends early (changed while reading?)");
        done += static_cast<std::size_t>(n);
    }
}

std::string file_sha256_hex(const ReadableFile& file) {
    constexpr std::uint64_t block = std::uint64_t{1} << 20;
    Sha256 hash;
    std::string buffer;
    for (std::uint64_t offset = 0; offset < file.size(); offset += block) {
        buffer.resize(static_cast<std::size_t>(std::min(block, file.size() - offset)));
        file.read_at(offset, buffer.data(), buffer.size());
        hash.update(buffer);
    }
    return hash.finish_hex();
}

namespace {

constexpr std::size_t write_buffer_bytes = std::size_t{1} << 20;

void write_all(int fd, std::string_view bytes, const std::filesystem::path& path) {
    std::size_t written = 0;
    while (written < bytes.size()) {
        const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0)
            throw Error(ErrorCode::io, path.string() + ": write failed: " + describe_errno(errno));
        written += static_cast<std::size_t>(n);
    }
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::filesystem::path path) : path_(std::move(path)) {
    const std::filesystem::path directory =
        path_.has_parent_path() ? path_.parent_path() : std::filesystem::path(".");
    temporary_ = (directory / ("." + path_.filename().string() + ".XXXXXX")).string();
    fd_ = ::mkstemp(temporary_.data());
    if (fd_ < 0) {
        throw Error(ErrorCode::io,
                    path_.string() + ": cannot create a file here: " + describe_errno(errno));
    }
}

AtomicFileWriter::~AtomicFileWriter() {
    if (fd_ >= 0) ::close(fd_);
    if (!renamed_) ::unlink(temporary_.c_str());
}

void AtomicFileWriter::flush_buffer() {
    write_all(fd_, buffer_, path_);
    buffer_.clear();
}

void AtomicFileWriter::write(std::string_view bytes) {
    written_ += bytes.size();
    if (buffer_.size() + bytes.size() <= write_buffer_bytes) {
        buffer_.append(bytes);
        return;
    }
    flush_buffer();
    if (bytes.size() >= write_buffer_bytes) {
        write_all(fd_, bytes, path_);
    } else {
        buffer_.append(bytes);
    }
}

void AtomicFileWriter::finish() {
    if (finished_) return;
    flush_buffer();
    if (::fchmod(fd_, 0644) != 0) {
        throw Error(ErrorCode::io,
                    path_.string() + ": cannot set permissions: " + describe_errno(errno));
    }
    if (::fsync(fd_) != 0) {
        throw Error(ErrorCode::io,
                    path_.string() + ": cannot flush to disk: " + describe_errno(errno));
    }
    const int fd = std::exchange(fd_, -1);
    if (::close(fd) != 0)
        throw Error(ErrorCode::io, path_.string() + ": close failed: " + describe_errno(errno));
    finished_ = true;
}

void AtomicFileWriter::rename() {
    finish();
    if (::rename(temporary_.c_str(), path_.c_str()) != 0) {
        throw Error(ErrorCode::io,
                    path_.string() + ": cannot rename into place: " + describe_errno(errno));
    }
    renamed_ = true;
}

}  // namespace bitinc::core
