#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "bitinc/error.hpp"
#include "core/file_io.hpp"
#include "test_support.hpp"

namespace bitinc::core {
namespace {

TEST(FileIo, ReadsAWholeFile) {
    const testing::TemporaryDirectory directory;
    const auto path = directory.path() / "data.bin";
    std::ofstream(path, std::ios::binary) << std::string("abc\0def", 7);
    EXPECT_EQ(read_file(path, 100), std::string("abc\0def", 7));
}

TEST(FileIo, MissingFileNamesThePath) {
    try {
        read_file("/nonexistent/model.onnx", 100);
        FAIL() << "no error";
    } catch (const Error& error) {
        EXPECT_NE(std::string(error.what()).find("/nonexistent/model.onnx"), std::string::npos);
    }
}

TEST(FileIo, RefusesFilesOverTheLimit) {
    const testing::TemporaryDirectory directory;
    const auto path = directory.path() / "big.bin";
    std::ofstream(path) << std::string(101, 'x');
    EXPECT_THROW(read_file(path, 100), Error);
    EXPECT_THROW(read_file(directory.path(), 100), Error);  // a directory
}

TEST(FileIo, AtomicWriteReplacesAndLeavesNoTemporaryFile) {
    const testing::TemporaryDirectory directory;
    const auto path = directory.path() / "out.onnx";
    write_file_atomically(path, "first");
    write_file_atomically(path, "second");
    EXPECT_EQ(read_file(path, 100), "second");
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(directory.path()), {}), 1);
}

TEST(FileIo, FailedWriteKeepsWhatWasThere) {
    const testing::TemporaryDirectory directory;
    // Renaming a file over a non-empty directory fails after the data is written.
    const auto target = directory.path() / "occupied";
    std::filesystem::create_directory(target);
    std::ofstream(target / "keep.txt") << "keep";
    EXPECT_THROW(write_file_atomically(target, "data"), Error);
    EXPECT_EQ(read_file(target / "keep.txt", 100), "keep");
    EXPECT_EQ(std::distance(std::filesystem::directory_iterator(directory.path()), {}), 1);
    EXPECT_THROW(write_file_atomically(directory.path() / "missing-dir" / "x.onnx", "data"), Error);
}

}  // namespace
}  // namespace bitinc::core
