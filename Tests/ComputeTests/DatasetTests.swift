import Foundation
import Testing
@testable import Compute

@Suite struct NpyTests {
    @Test func readsEverySupportedDType() throws {
        let f32 = try NpyArray(contentsOf: Fixtures.url("npy_f32_2d.npy"))
        #expect(f32.shape == [3, 4] && f32.dtype == .float32)
        #expect(f32.floats() == (0..<12).map { Float($0) * 0.5 })
        let f16 = try NpyArray(contentsOf: Fixtures.url("npy_f16_1d.npy"))
        #expect(f16.shape == [4] && f16.dtype == .float16)
        #expect(f16.floats() == [0.5, -2, 65504, Float(Float16(1e-3))])
        let f64 = try NpyArray(contentsOf: Fixtures.url("npy_f64_2d.npy"))
        #expect(f64.dtype == .float64 && f64.doubles() == [1.25, -3.5, 1e10, 0])
        let i32 = try NpyArray(contentsOf: Fixtures.url("npy_i32_2d.npy"))
        #expect(i32.shape == [2, 3] && i32.storage == .int32([1, -2, 3, 4, 5, -6]))
        let i64 = try NpyArray(contentsOf: Fixtures.url("npy_i64_1d.npy"))
        #expect(i64.storage == .int64([7, -8, 9]))
        let v2 = try NpyArray(contentsOf: Fixtures.url("npy_v2_f32.npy"))
        #expect(v2.shape == [5, 2] && v2.floats() == (0..<10).map { Float($0) - 3 })
    }

    @Test func rejectsFortranOrderClearly() {
        let e = computeError { _ = try NpyArray(contentsOf: Fixtures.url("npy_fortran.npy")) }
        guard case .invalidFormat(let m)? = e else { Issue.record("expected invalidFormat, got \(String(describing: e))"); return }
        #expect(m.contains("Fortran order"))
    }

    @Test func rejectsBadFiles() throws {
        #expect(computeError { _ = try NpyArray(data: Data("hello world, not numpy".utf8)) }?.message.contains("magic") == true)
        let good = try Data(contentsOf: Fixtures.url("npy_f32_2d.npy"))
        #expect(computeError { _ = try NpyArray(data: good.prefix(good.count - 4)) }?.message.contains("needs 48") == true)
        let bigEndian = try NpyArray(shape: [1], storage: .float32([1])).serialized()
        var be = [UInt8](bigEndian)
        if let i = be.firstIndex(of: UInt8(ascii: "<")) { be[i] = UInt8(ascii: ">") }
        guard case .unsupportedDType(let m)? = computeError({ _ = try NpyArray(data: Data(be)) }) else {
            Issue.record("expected unsupportedDType"); return
        }
        #expect(m.contains(">f4"))
    }

    @Test func writeReadRoundTripAndStreaming() throws {
        let values = (0..<(1000 * 3)).map { Double($0) * 0.5 }
        let array = try NpyArray(shape: [1000, 3], storage: .float64(values))
        let url = temporaryURL(".npy")
        defer { try? FileManager.default.removeItem(at: url) }
        try array.write(to: url)
        #expect(try NpyArray(contentsOf: url) == array)
        let reader = try NpyRowReader(url: url, rowsPerBlock: 300)
        var blocks: [NpyRowBlock] = []
        while let b = try reader.next() { blocks.append(b) }
        #expect(blocks.map(\.rowCount) == [300, 300, 300, 100])
        #expect(blocks.map(\.firstRow) == [0, 300, 600, 900])
        #expect(blocks.flatMap(\.values) == values.map { Float($0) })
        // Streaming a Python-written v2 file.
        let v2 = try NpyRowReader(url: Fixtures.url("npy_v2_f32.npy"), rowsPerBlock: 2)
        #expect(v2.rowLength == 2)
        var rows = 0
        while let b = try v2.next() { rows += b.rowCount }
        #expect(rows == 5)
    }
}

@Suite struct CSVTests {
    @Test func readsHeaderLabelAndSkipsBlankLines() throws {
        let csv = try CSVDataset(contentsOf: Fixtures.url("small.csv"), labelColumn: "species")
        #expect(csv.featureNames == ["a", "b", "c"])
        #expect(csv.rowCount == 3)
        #expect(csv.features == [1.5, 2, -3, 4, 5.25, 600, 7, -8, 9])
        #expect(csv.labels == [0, 2, 1])
        let labeled = try csv.labeledDataset()
        #expect(labeled.labels == [0, 2, 1] && labeled.classCount == 3)
        let unlabeled = try CSVDataset(contentsOf: Fixtures.url("small.csv"))
        #expect(unlabeled.featureCount == 4 && unlabeled.labels == nil)
    }

    @Test func raggedRowNamesTheLine() {
        let e = computeError { _ = try CSVDataset(contentsOf: Fixtures.url("ragged.csv"), labelColumn: "label") }
        guard case .invalidFormat(let m)? = e else { Issue.record("expected invalidFormat"); return }
        #expect(m.contains("line 4") && m.contains("2 fields"))
    }

    @Test func badValuesAndMissingLabelColumn() {
        let e1 = computeError { _ = try CSVDataset(text: "x,y\n1,2\n3,abc\n") }
        #expect(e1?.message.contains("line 3") == true && e1?.message.contains("\"y\"") == true)
        let e2 = computeError { _ = try CSVDataset(text: "x,y\n1,2\n", labelColumn: "target") }
        #expect(e2?.message.contains("target") == true)
        let e3 = computeError { _ = try CSVDataset(text: "x,y\n1,\n") }
        #expect(e3?.message.contains("empty field") == true)
        #expect(computeError { _ = try CSVDataset(text: "x,y\n1,0.5\n", labelColumn: "y").labeledDataset() } != nil)
        #expect(computeError { _ = try CSVDataset(text: "") } != nil)
    }

    @Test func streamsBlocksAcrossChunkBoundaries() throws {
        // Large enough to span several 1 MiB read chunks.
        var text = "f0,f1,label\n"
        let rows = 120_000
        for i in 0..<rows { text += "\(i),\(Double(i) * 0.25),\(i % 3)\n" }
        let url = temporaryURL(".csv")
        defer { try? FileManager.default.removeItem(at: url) }
        try text.write(to: url, atomically: true, encoding: .utf8)
        let reader = try CSVBlockReader(url: url, labelColumn: "label", rowsPerBlock: 50_000)
        var total = 0, stats = RunningStatistics(columns: 2)
        var firstLines: [Int] = []
        while let block = try reader.next() {
            firstLines.append(block.firstLine)
            total += block.rowCount
            try stats.add(block.features)
            #expect(block.labels?.count == block.rowCount)
            #expect(block.features[0] == Float(firstLines.last! - 2))
        }
        #expect(total == rows)
        #expect(firstLines == [2, 50_002, 100_002])
        #expect(abs(stats.means[0] - Double(rows - 1) / 2) < 1e-6)
        #expect(stats.maximums[1] == Double(rows - 1) * 0.25)
    }

    @Test func reportsBytesConsumedForProgress() throws {
        // Lines of known length: after each block the reader has consumed exactly the header and those rows.
        var text = "a,b\n"
        for i in 0..<30_000 { text += String(format: "%05d,%05d\n", i, i) }
        let url = temporaryURL(".csv")
        defer { try? FileManager.default.removeItem(at: url) }
        try text.write(to: url, atomically: true, encoding: .utf8)
        for reader in [try CSVBlockReader(url: url, rowsPerBlock: 7_000), try CSVBlockReader(data: Data(text.utf8), rowsPerBlock: 7_000)] {
            #expect(reader.totalBytes == text.utf8.count)
            #expect(reader.bytesConsumed == 4, "the header line")
            var rows = 0
            while let block = try reader.next() {
                rows += block.rowCount
                #expect(reader.bytesConsumed == 4 + rows * 12, "after \(rows) rows")
            }
            #expect(reader.bytesConsumed == reader.totalBytes)
        }
    }

    @Test func digitsLoads() throws {
        let d = try digitsDataset(from: Fixtures.digitsCSV)
        #expect(d.count == 1797 && d.featureCount == 64)
        #expect(d.features.allSatisfy { $0 >= 0 && $0 <= 16 })
        #expect(Set(d.labels) == Set(0...9))
    }
}
