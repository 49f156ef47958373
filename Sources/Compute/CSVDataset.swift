#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// A block of parsed CSV rows from `CSVBlockReader`.
public struct CSVRowBlock: Sendable, Equatable {
    /// 1-based file line of the block's first row (the header is line 1).
    public let firstLine: Int
    /// Number of rows in the block.
    public let rowCount: Int
    /// `rowCount × featureNames.count` values, row-major.
    public let features: [Float]
    /// Label column values, when a label column was named.
    public let labels: [Float]?
    /// 1-based file line of each row (blank lines between rows are skipped), the numbering of parse errors.
    public let lines: [Int]
}

/// A numeric CSV file with a header row, split into feature columns and an optional label column.
///
/// Fields are separated by `delimiter` (no quoting inside data rows; header
/// names may be double-quoted). Blank lines are skipped; `\r\n` is accepted.
/// A row whose field count differs from the header, or a field that is not a
/// number, throws `ComputeError.invalidFormat` naming the line (and column).
public struct CSVDataset: Sendable, Equatable {
    /// Names of the feature columns, in file order (label column excluded).
    public let featureNames: [String]
    /// `rowCount × featureCount` values, row-major.
    public let features: [Float]
    /// Values of the label column, if one was named.
    public let labels: [Float]?
    /// The label column's name.
    public let labelColumn: String?

    /// Number of data rows.
    public var rowCount: Int { featureNames.isEmpty ? (labels?.count ?? 0) : features.count / featureNames.count }
    /// Number of feature columns.
    public var featureCount: Int { featureNames.count }

    /// Loads a whole CSV file.
    public init(contentsOf url: URL, labelColumn: String? = nil, delimiter: Character = ",") throws {
        let reader = try CSVBlockReader(url: url, labelColumn: labelColumn, rowsPerBlock: 65_536, delimiter: delimiter)
        try self.init(reader: reader)
    }

    /// Parses CSV text.
    public init(text: String, labelColumn: String? = nil, delimiter: Character = ",") throws {
        let reader = try CSVBlockReader(data: Data(text.utf8), labelColumn: labelColumn, rowsPerBlock: 65_536, delimiter: delimiter)
        try self.init(reader: reader)
    }

    private init(reader: CSVBlockReader) throws {
        var x: [Float] = []
        var y: [Float]? = reader.labelColumn == nil ? nil : []
        while let block = try reader.next() {
            x.append(contentsOf: block.features)
            if let l = block.labels { y?.append(contentsOf: l) }
        }
        featureNames = reader.featureNames
        features = x
        labels = y
        labelColumn = reader.labelColumn
    }

    /// The rows as a classification dataset; labels must be non-negative integers.
    public func labeledDataset() throws -> LabeledDataset {
        guard let labels, let name = labelColumn else {
            throw ComputeError.invalidArgument("no label column was named when loading the CSV")
        }
        let ints = try labels.enumerated().map { i, v -> Int in
            guard v >= 0, v == v.rounded(), v < 1e9 else {
                throw ComputeError.invalidFormat("label column \"\(name)\" row \(i + 1) holds \(v), not a non-negative integer class")
            }
            return Int(v)
        }
        return try LabeledDataset(features: features, labels: ints, featureCount: featureCount, featureNames: featureNames)
    }
}

/// Streams a CSV file as blocks of at most `rowsPerBlock` rows, reading 1 MiB at a time.
///
/// A reference type because it owns an open file; use it from one task.
public final class CSVBlockReader {
    /// Feature column names (label column excluded).
    public private(set) var featureNames: [String]
    /// The label column's name, if any.
    public let labelColumn: String?
    /// Rows per block.
    public let rowsPerBlock: Int
    /// Size of the input in bytes (the file's size when it was opened), for progress; nil when unknown.
    public let totalBytes: Int?
    /// Bytes of input parsed so far, up to the end of the last line read: `bytesConsumed / totalBytes` is the share
    /// of the file read.
    public var bytesConsumed: Int { discarded + pendingStart }

    private let source: ByteSource
    private let delimiter: UInt8
    private var labelIndex: Int?
    private var columnCount: Int
    private var pending: [UInt8] = []
    private var pendingStart = 0
    /// Bytes dropped from the front of `pending` so far.
    private var discarded = 0
    private var line = 0
    private var finished = false

    /// Opens `url` and reads the header row.
    public convenience init(url: URL, labelColumn: String? = nil, rowsPerBlock: Int = 4096, delimiter: Character = ",") throws {
        let handle: FileHandle
        do { handle = try FileHandle(forReadingFrom: url) } catch {
            throw ComputeError.io("cannot open CSV file \(url.path): \(error.localizedDescription)")
        }
        // The size of the file opened, not of whatever the path names (a `/proc/self/fd/N` link, a file replaced since).
        var info = stat()
        let size = fstat(handle.fileDescriptor, &info) == 0 && (info.st_mode & S_IFMT) == S_IFREG ? Int(info.st_size) : nil
        try self.init(source: .file(handle), totalBytes: size, labelColumn: labelColumn, rowsPerBlock: rowsPerBlock,
                      delimiter: delimiter)
    }

    /// Reads CSV from memory.
    public convenience init(data: Data, labelColumn: String? = nil, rowsPerBlock: Int = 4096, delimiter: Character = ",") throws {
        try self.init(source: .memory(data), totalBytes: data.count, labelColumn: labelColumn, rowsPerBlock: rowsPerBlock,
                      delimiter: delimiter)
    }

    private init(source: ByteSource, totalBytes: Int?, labelColumn: String?, rowsPerBlock: Int, delimiter: Character) throws {
        guard rowsPerBlock >= 1 else { throw ComputeError.invalidArgument("rowsPerBlock must be >= 1, got \(rowsPerBlock)") }
        guard let d = delimiter.asciiValue, delimiter != "\n", delimiter != "\r" else {
            throw ComputeError.invalidArgument("CSV delimiter must be a single ASCII character other than a line break")
        }
        self.source = source
        self.totalBytes = totalBytes
        self.delimiter = d
        self.rowsPerBlock = rowsPerBlock
        self.labelColumn = labelColumn
        // Placeholders until the header is read.
        featureNames = []
        labelIndex = nil
        columnCount = 0
        var headerLine: ArraySlice<UInt8>?
        while let l = try nextLine() {
            if !isBlank(l) { headerLine = l; break }
        }
        guard let headerLine else { throw ComputeError.invalidFormat("CSV has no header row") }
        let names = split(headerLine).map { field -> String in
            var s = String(decoding: field, as: UTF8.self).trimmingCharacters(in: .whitespaces)
            if s.count >= 2, s.hasPrefix("\""), s.hasSuffix("\"") { s = String(s.dropFirst().dropLast()) }
            return s
        }
        var li: Int?
        if let labelColumn {
            guard let i = names.firstIndex(of: labelColumn) else {
                throw ComputeError.invalidFormat("label column \"\(labelColumn)\" is not in the CSV header (columns: \(names.joined(separator: ", ")))")
            }
            li = i
        }
        self.labelIndex = li
        self.columnCount = names.count
        self.featureNames = names.enumerated().filter { $0.offset != li }.map { $0.element }
    }

    /// The next block of rows, or nil at the end of the file.
    public func next() throws -> CSVRowBlock? {
        var x: [Float] = []
        var y: [Float]? = labelIndex == nil ? nil : []
        x.reserveCapacity(rowsPerBlock * featureNames.count)
        var rows = 0
        var firstLine = 0
        var lines: [Int] = []
        lines.reserveCapacity(rowsPerBlock)
        while rows < rowsPerBlock, let l = try nextLine() {
            if isBlank(l) { continue }
            let fields = split(l)
            guard fields.count == columnCount else {
                throw ComputeError.invalidFormat("CSV line \(line) has \(fields.count) fields, the header has \(columnCount)")
            }
            if rows == 0 { firstLine = line }
            lines.append(line)
            for (c, field) in fields.enumerated() {
                let v = try parseNumber(field, column: c)
                if c == labelIndex { y?.append(v) } else { x.append(v) }
            }
            rows += 1
        }
        guard rows > 0 else { return nil }
        return CSVRowBlock(firstLine: firstLine, rowCount: rows, features: x, labels: y, lines: lines)
    }

    private func parseNumber(_ field: ArraySlice<UInt8>, column: Int) throws -> Float {
        var f = field
        while let b = f.first, b == 0x20 || b == 0x09 { f.removeFirst() }
        while let b = f.last, b == 0x20 || b == 0x09 { f.removeLast() }
        let s = String(decoding: f, as: UTF8.self)
        guard !s.isEmpty, let v = Float(s) else {
            let name = column < columnCount ? columnName(column) : "#\(column + 1)"
            throw ComputeError.invalidFormat("CSV line \(line) column \"\(name)\": \(s.isEmpty ? "empty field" : "\"\(s)\" is not a number")")
        }
        return v
    }

    private func columnName(_ c: Int) -> String {
        guard let li = labelIndex else { return featureNames[c] }
        if c == li { return labelColumn ?? "" }
        return featureNames[c < li ? c : c - 1]
    }

    private func split(_ line: ArraySlice<UInt8>) -> [ArraySlice<UInt8>] {
        line.split(separator: delimiter, omittingEmptySubsequences: false)
    }

    private func isBlank(_ line: ArraySlice<UInt8>) -> Bool {
        line.allSatisfy { $0 == 0x20 || $0 == 0x09 }
    }

    /// The next line without its terminator (`\n` or `\r\n`), or nil at end of input.
    private func nextLine() throws -> ArraySlice<UInt8>? {
        while true {
            if let nl = pending[pendingStart...].firstIndex(of: 0x0A) {
                var l = pending[pendingStart..<nl]
                pendingStart = nl + 1
                if l.last == 0x0D { l = l.dropLast() }
                line += 1
                return l
            }
            if finished {
                guard pendingStart < pending.count else { return nil }
                var l = pending[pendingStart...]
                pendingStart = pending.count
                if l.last == 0x0D { l = l.dropLast() }
                line += 1
                return l
            }
            // Compact and refill.
            if pendingStart > 0 {
                pending.removeSubrange(0..<pendingStart)
                discarded += pendingStart
                pendingStart = 0
            }
            let chunk = try source.read(1 << 20)
            if chunk.isEmpty { finished = true } else { pending.append(contentsOf: chunk) }
        }
    }
}

/// Where a block reader's bytes come from.
final class ByteSource {
    private let handle: FileHandle?
    private var data: Data?
    private let label: String

    static func file(_ h: FileHandle) -> ByteSource { ByteSource(handle: h, data: nil, label: "file") }
    static func memory(_ d: Data) -> ByteSource { ByteSource(handle: nil, data: d, label: "memory") }

    private init(handle: FileHandle?, data: Data?, label: String) {
        self.handle = handle
        self.data = data
        self.label = label
    }

    deinit { try? handle?.close() }

    /// Up to `count` bytes; empty at end.
    func read(_ count: Int) throws -> Data {
        if let handle {
            do { return try handle.read(upToCount: count) ?? Data() } catch {
                throw ComputeError.io("read failed: \(error.localizedDescription)")
            }
        }
        guard let d = data, !d.isEmpty else { return Data() }
        let n = min(count, d.count)
        let chunk = d.prefix(n)
        data = d.dropFirst(n)
        return Data(chunk)
    }

    /// Reads exactly `count` bytes or throws.
    func readExactly(_ count: Int, what: String) throws -> Data {
        var out = Data()
        while out.count < count {
            let c = try read(count - out.count)
            if c.isEmpty { throw ComputeError.invalidFormat("\(what): file ends \(count - out.count) bytes early") }
            out.append(c)
        }
        return out
    }
}
