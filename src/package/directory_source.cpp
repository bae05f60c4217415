// A ByteSource over a package directory on this machine.
#include <algorithm>
#include <vector>

#include "bitinc/byte_source.hpp"
#include "bitinc/error.hpp"
#include "core/file_io.hpp"

namespace bitinc {

namespace {

class DirectorySource : public ByteSource {
  public:
    explicit DirectorySource(std::filesystem::path directory) : directory_(std::move(directory)) {}

    std::string name() const override { return directory_.string(); }

    void read(const ByteRange& range, const ByteSink& sink) override {
        // Names come from the manifest: only files of the directory itself.
        if (range.file.empty() || range.file == "." || range.file == ".." ||
            range.file.find('/') != std::string::npos) {
            throw Error(ErrorCode::corrupt_data,
                        name() + ": '" + range.file + "' is not a file of the package");
        }
        const core::ReadableFile file(directory_ / range.file);
        const std::uint64_t end = range.end == 0 ? file.size() : range.end;
        if (end > file.size() || range.begin > end) {
            throw Error(ErrorCode::corrupt_data,
                        file.path().string() + ": bytes " + std::to_string(range.begin) + " to " +
                            std::to_string(end) + " wanted, the file has " +
                            std::to_string(file.size()));
        }
        // Pieces, so that the reader can apply (and stop) as the bytes come.
        std::vector<std::uint8_t> buffer(std::size_t{1} << 20);
        for (std::uint64_t at = range.begin; at < end;) {
            const std::size_t length =
                std::size_t(std::min<std::uint64_t>(buffer.size(), end - at));
            file.read_at(at, buffer.data(), length);
            at += length;
            if (!sink(std::span(buffer.data(), length))) return;
        }
    }

  private:
    std::filesystem::path directory_;
};

}  // namespace

std::unique_ptr<ByteSource> make_directory_source(std::filesystem::path directory) {
    return std::make_unique<DirectorySource>(std::move(directory));
}

}  // namespace bitinc
