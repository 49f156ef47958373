import Compute
import Foundation
import JobWorker
import ModelStore

/// A dataset loaded for a job: row-major FP32 features, optional labels.
struct Table: Sendable {
    var features: [Float]
    var rows: Int
    var columns: Int
    var names: [String]
    var labels: [Float]?
    var labelColumn: String?
    /// Where it came from (`farm:NAME` or the path).
    var source: String

    /// The rows as a classification dataset (labels required, non-negative integers).
    func labeled() throws -> LabeledDataset {
        guard let labels, let labelColumn else {
            throw JobError.nonRetryable("dataset \(source): no label column given (set \"labelColumn\")")
        }
        var ints: [Int] = []
        ints.reserveCapacity(labels.count)
        for (row, value) in labels.enumerated() {
            guard value.isFinite, value >= 0, value == value.rounded(), value < 1e9 else {
                throw JobError.nonRetryable("dataset \(source): label column '\(labelColumn)' row \(row) holds \(value), not a non-negative integer class")
            }
            ints.append(Int(value))
        }
        return try LabeledDataset(features: features, labels: ints, featureCount: columns, featureNames: names)
    }

    /// The held-out part (or the rest) of a stratified split, as in `train`'s `holdout`.
    func split(_ holdout: Holdout?) throws -> (train: LabeledDataset, test: LabeledDataset?) {
        let data = try labeled()
        guard let holdout, holdout.fraction > 0 else { return (data, nil) }
        let parts = try data.stratifiedSplit(testFraction: holdout.fraction, seed: holdout.seed ?? 0)
        return (parts.train, parts.test)
    }
}

/// A stratified held-out split: `fraction` of each class, chosen by `seed`. The same values in `train` and
/// `validate` select the same rows.
public struct Holdout: Codable, Sendable, Equatable {
    /// Share of rows held out (0 < fraction < 1).
    public var fraction: Double
    /// Split seed (default 0).
    public var seed: UInt64?
}

extension MLEnvironment {
    /// Loads `reference` (`farm:NAME` or a file path; `.npy` by extension or magic, else CSV with a header row).
    func loadTable(_ reference: String, labelColumn: String?) async throws -> Table {
        let bytes: Data
        let isNpy: Bool
        if reference.hasPrefix("farm:") {
            let name = String(reference.dropFirst(5))
            let (record, raw) = try await classifying("dataset \(reference)") { try await datasets.bytes(name) }
            bytes = Data(raw)
            isNpy = record.format == "npy"
        } else {
            var path = reference
            if !path.hasPrefix("/"), let root = options.dataRoot { path = root + "/" + path }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw JobError.nonRetryable("dataset path '\(path)' does not exist (give a file on a volume every worker sees, or push it with `jobfarm dataset push` and use farm:NAME)")
            }
            guard let data = FileManager.default.contents(atPath: path) else {
                throw JobError.nonRetryable("dataset path '\(path)' cannot be read")
            }
            bytes = data
            isNpy = path.hasSuffix(".npy") || data.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59])
        }
        return try await executor.run {
            do {
                return try isNpy ? Self.npyTable(bytes, labelColumn: labelColumn, source: reference)
                    : Self.csvTable(bytes, labelColumn: labelColumn, source: reference)
            } catch let error as ComputeError {
                throw JobError.nonRetryable("dataset \(reference): \(error)")
            }
        }
    }

    private static func csvTable(_ data: Data, labelColumn: String?, source: String) throws -> Table {
        let reader = try CSVBlockReader(data: data, labelColumn: labelColumn, rowsPerBlock: 65_536)
        var features: [Float] = []
        var labels: [Float]? = labelColumn == nil ? nil : []
        while let block = try reader.next() {
            features.append(contentsOf: block.features)
            if let l = block.labels { labels?.append(contentsOf: l) }
        }
        let names = reader.featureNames
        guard !names.isEmpty else { throw JobError.nonRetryable("dataset \(source): no feature columns") }
        return Table(features: features, rows: features.count / names.count, columns: names.count, names: names,
                     labels: labels, labelColumn: labelColumn, source: source)
    }

    private static func npyTable(_ data: Data, labelColumn: String?, source: String) throws -> Table {
        let array = try NpyArray(data: data)
        let rows: Int, columns: Int
        switch array.shape.count {
        case 1: rows = array.shape[0]; columns = 1
        case 2: rows = array.shape[0]; columns = array.shape[1]
        default: throw JobError.nonRetryable("dataset \(source): .npy must be 1-D or 2-D, got shape \(array.shape)")
        }
        let values = array.floats()
        var names = (0..<columns).map { "col_\($0)" }
        guard let labelColumn else {
            return Table(features: values, rows: rows, columns: columns, names: names, labels: nil, labelColumn: nil, source: source)
        }
        // The label column of a .npy: `col_N`, `N`, or `last`.
        let index: Int?
        if labelColumn == "last" { index = columns - 1 }
        else if let n = Int(labelColumn) { index = n < 0 ? columns + n : n }
        else { index = names.firstIndex(of: labelColumn) }
        guard let index, (0..<columns).contains(index), columns >= 2 else {
            throw JobError.nonRetryable("dataset \(source): label column '\(labelColumn)' is not one of col_0…col_\(columns - 1) (or 'last')")
        }
        var features = [Float]()
        features.reserveCapacity(rows * (columns - 1))
        var labels = [Float]()
        labels.reserveCapacity(rows)
        for r in 0..<rows {
            for c in 0..<columns {
                if c == index { labels.append(values[r * columns + c]) } else { features.append(values[r * columns + c]) }
            }
        }
        names.remove(at: index)
        return Table(features: features, rows: rows, columns: columns - 1, names: names, labels: labels,
                     labelColumn: "col_\(index)", source: source)
    }
}

/// A dataset read in row blocks, so that `batch_analysis` and `validate` never hold more than one block of a file
/// given by path. `farm:NAME` datasets are held in Redis and come back whole; they are loaded and then cut into the
/// same blocks, so both kinds of reference go through one code path.
struct BlockedDataset: Sendable {
    enum Origin: Sendable {
        case npyFile(URL, labelIndex: Int?)
        case csvFile(URL)
        case table(Table)
    }

    let origin: Origin
    /// Where it came from (`farm:NAME` or the path).
    let source: String
    /// Rows per block.
    let blockRows: Int
    /// Feature columns (label excluded).
    let columns: Int
    let names: [String]
    /// The label column's name, if one was given.
    let labelColumn: String?
    /// Whether the whole dataset is in memory (farm datasets) rather than read from a file block by block.
    var inMemory: Bool { if case .table = origin { return true } else { return false } }

    /// Calls `body(features, labels, rows)` for each block in file order; blocks hold `blockRows` rows (the last may
    /// hold fewer). Format errors become `JobError.nonRetryable` naming the dataset.
    func forEachBlock(_ body: (_ features: [Float], _ labels: [Float]?, _ rows: Int) throws -> Void) throws {
        do {
            switch origin {
            case .table(let table):
                var start = 0
                while start < table.rows {
                    let n = min(blockRows, table.rows - start)
                    try body(Array(table.features[(start * columns)..<((start + n) * columns)]),
                             table.labels.map { Array($0[start..<(start + n)]) }, n)
                    start += n
                }
            case .csvFile(let url):
                let reader = try CSVBlockReader(url: url, labelColumn: labelColumn, rowsPerBlock: blockRows)
                while let block = try reader.next() { try body(block.features, block.labels, block.rowCount) }
            case .npyFile(let url, let labelIndex):
                let reader = try NpyRowReader(url: url, rowsPerBlock: blockRows)
                while let block = try reader.next() {
                    guard let labelIndex else { try body(block.values, nil, block.rowCount); continue }
                    let width = reader.rowLength
                    var features = [Float]()
                    features.reserveCapacity(block.rowCount * (width - 1))
                    var labels = [Float]()
                    labels.reserveCapacity(block.rowCount)
                    for r in 0..<block.rowCount {
                        for c in 0..<width {
                            let v = block.values[r * width + c]
                            if c == labelIndex { labels.append(v) } else { features.append(v) }
                        }
                    }
                    try body(features, labels, block.rowCount)
                }
            }
        } catch let error as ComputeError {
            throw JobError.nonRetryable("dataset \(source): \(error)")
        }
    }

    /// Labels as non-negative integer classes (the same check as `Table.labeled()`); `firstRow` is for messages.
    func classes(_ labels: [Float]?, firstRow: Int) throws -> [Int] {
        guard let labels, let labelColumn else {
            throw JobError.nonRetryable("dataset \(source): no label column given (set \"labelColumn\")")
        }
        return try labels.enumerated().map { offset, value in
            guard value.isFinite, value >= 0, value == value.rounded(), value < 1e9 else {
                throw JobError.nonRetryable("dataset \(source): label column '\(labelColumn)' row \(firstRow + offset) holds \(value), not a non-negative integer class")
            }
            return Int(value)
        }
    }
}

extension MLEnvironment {
    /// Opens `reference` for block-wise reading: a path is streamed (`.npy` through `NpyRowReader`, CSV through
    /// `CSVBlockReader`, `blockRows` rows at a time); `farm:NAME` is loaded whole and cut into blocks.
    func openBlocks(_ reference: String, labelColumn: String?, blockRows: Int) async throws -> BlockedDataset {
        guard blockRows >= 1, blockRows <= 16_777_216 else {
            throw JobError.nonRetryable("blockRows must be 1…16777216 (got \(blockRows))")
        }
        if reference.hasPrefix("farm:") {
            let table = try await loadTable(reference, labelColumn: labelColumn)
            return BlockedDataset(origin: .table(table), source: reference, blockRows: blockRows, columns: table.columns,
                                  names: table.names, labelColumn: table.labelColumn)
        }
        var path = reference
        if !path.hasPrefix("/"), let root = options.dataRoot { path = root + "/" + path }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
            throw JobError.nonRetryable("dataset path '\(path)' does not exist (give a file on a volume every worker sees, or push it with `jobfarm dataset push` and use farm:NAME)")
        }
        let url = URL(fileURLWithPath: path)
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw JobError.nonRetryable("dataset path '\(path)' cannot be read")
        }
        let magic = (try? handle.read(upToCount: 6)) ?? nil
        try? handle.close()
        let isNpy = path.hasSuffix(".npy") || (magic.map { $0.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) } ?? false)
        return try await executor.run {
            do {
                if isNpy {
                    let reader = try NpyRowReader(url: url, rowsPerBlock: blockRows)
                    guard reader.shape.count <= 2 else {
                        throw JobError.nonRetryable("dataset \(reference): .npy must be 1-D or 2-D, got shape \(reader.shape)")
                    }
                    let width = reader.rowLength
                    var names = (0..<width).map { "col_\($0)" }
                    guard let labelColumn else {
                        return BlockedDataset(origin: .npyFile(url, labelIndex: nil), source: reference, blockRows: blockRows,
                                              columns: width, names: names, labelColumn: nil)
                    }
                    let index = try npyLabelIndex(labelColumn, columns: width, source: reference)
                    names.remove(at: index)
                    return BlockedDataset(origin: .npyFile(url, labelIndex: index), source: reference, blockRows: blockRows,
                                          columns: width - 1, names: names, labelColumn: "col_\(index)")
                }
                let reader = try CSVBlockReader(url: url, labelColumn: labelColumn, rowsPerBlock: blockRows)
                let names = reader.featureNames
                guard !names.isEmpty else { throw JobError.nonRetryable("dataset \(reference): no feature columns") }
                return BlockedDataset(origin: .csvFile(url), source: reference, blockRows: blockRows, columns: names.count,
                                      names: names, labelColumn: labelColumn)
            } catch let error as ComputeError {
                throw JobError.nonRetryable("dataset \(reference): \(error)")
            }
        }
    }
}

/// The label column of a `.npy`: `col_N`, `N` (negative counts from the end), or `last`.
func npyLabelIndex(_ labelColumn: String, columns: Int, source: String) throws -> Int {
    let index: Int?
    if labelColumn == "last" { index = columns - 1 }
    else if let n = Int(labelColumn) { index = n < 0 ? columns + n : n }
    else if labelColumn.hasPrefix("col_"), let n = Int(labelColumn.dropFirst(4)) { index = n }
    else { index = nil }
    guard let index, (0..<columns).contains(index), columns >= 2 else {
        throw JobError.nonRetryable("dataset \(source): label column '\(labelColumn)' is not one of col_0…col_\(columns - 1) (or 'last')")
    }
    return index
}
