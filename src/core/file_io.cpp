#include "core/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "bitinc/error.hpp"

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
        throw Error(path.string() + ": no such file");
    }
    if (!std::filesystem::is_regular_file(status)) {
        throw Error(path.string() + ": not a regular file");
    }
    const std::uint64_t size = std::filesystem::file_size(path, error);
    if (error) {
        throw Error(path.string() + ": cannot read size: " + error.message());
    }
    if (size > max_bytes) {
        throw Error(path.string() + ": file is " + std::to_string(size) + " bytes, more than the " +
                    std::to_string(max_bytes) + " this reader accepts");
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw Error(path.string() + ": cannot open: " + describe_errno(errno));
    }
    std::string bytes(static_cast<std::size_t>(size), '\0');
    in.read(bytes.data(), static_cast<std::streamsize>(size));
    if (static_cast<std::uint64_t>(in.gcount()) != size) {
        throw Error(path.string() + ": read failed (file changed while reading?)");
    }
    return bytes;
}

void write_file_atomically(const std::filesystem::path& path, std::string_view bytes) {
    const std::filesystem::path directory =
        path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
    std::string temporary = (directory / ("." + path.filename().string() + ".XXXXXX")).string();
    const int fd = ::mkstemp(temporary.data());
    if (fd < 0) {
        throw Error(path.string() + ": cannot create a file here: " + describe_errno(errno));
    }
    auto fail = [&](const std::string& what, int error_number) {
        ::close(fd);
        ::unlink(temporary.c_str());
        throw Error(path.string() + ": " + what + ": " + describe_errno(error_number));
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
    if (::fchmod(fd, 0644) != 0) fail("cannot set permissions", errno);
    if (::fsync(fd) != 0) fail("cannot flush to disk", errno);
    if (::close(fd) != 0) {
        const int error_number = errno;
        ::unlink(temporary.c_str());
        throw Error(path.string() + ": close failed: " + describe_errno(error_number));
    }
    if (::rename(temporary.c_str(), path.c_str()) != 0) {
        const int error_number = errno;
        ::unlink(temporary.c_str());
        throw Error(path.string() + ": cannot rename into place: " + describe_errno(error_number));
    }
}

}  // namespace bitinc::core
