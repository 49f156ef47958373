import Compute
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import JobPayloads
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

}

extension LabeledDataset {
    /// The rest and the held-out part of a stratified split, as in `train`'s `holdout` (no holdout: all, nil).
    func holdoutSplit(_ holdout: Holdout?) throws -> (train: LabeledDataset, test: LabeledDataset?) {
        guard let holdout, holdout.fraction > 0 else { return (self, nil) }
        let parts = try stratifiedSplit(testFraction: holdout.fraction, seed: holdout.seed ?? 0)
        return (parts.train, parts.test)
    }
}

extension MLEnvironment {
    /// Loads `reference` whole (`farm:NAME`, spooled to the local cache first, or a file path; `.npy` by extension or
    /// magic, else CSV with a header row), for code that needs every row in memory. Reads through `openBlocks`, so
    /// the values are those the block readers give.
    func loadTable(_ reference: String, labelColumn: String?) async throws -> Table {
        let data = try await openBlocks(reference, labelColumn: labelColumn, blockRows: 65_536)
        return try await executor.run {
            var features: [Float] = []
            var labels: [Float]? = data.labelColumn == nil ? nil : []
            var rows = 0
            try data.forEachBlock { x, y, n in
                features.append(contentsOf: x)
                if let y { labels?.append(contentsOf: y) }
                rows += n
            }
            return Table(features: features, rows: rows, columns: data.columns, names: data.names, labels: labels,
                         labelColumn: data.labelColumn, source: reference)
        }
    }

    /// The local copy of farm dataset `reference` (`farm:NAME`), content-addressed:
    /// `<spoolDirectory or the temporary directory>/jobfarm-datasets/<sha256>.<npy|csv>`, opened and leased: while
    /// the returned lease lives, no trim of this process deletes the file, and reads go through its descriptor.
    ///
    /// On first use the blob is streamed from Redis chunk by chunk (`DatasetStore.write`: inflated, hashed and
    /// written as it arrives, size and SHA-256 checked at the end) into a temporary name in the same directory, then
    /// renamed into place, so concurrent jobs and worker processes never see half a file. A copy already there (same
    /// SHA-256, same size) is reused, and its modification time set to now (its recency for the LRU).
    ///
    /// After a new file is spooled the directory is trimmed (`SpoolCache.trim`): least recently used complete copies
    /// are deleted until they fit `spoolCacheBytes`, never the one just written nor one a job of this process has
    /// open, and `.partial` files older than an hour (left by a worker that died) go too. The first use of the
    /// directory by a process deletes those stale partials as well.
    func spoolFarmDataset(_ reference: String) async throws -> (url: URL, record: DatasetRecord, lease: SpoolLease) {
        let name = String(reference.dropFirst(5))
        let record = try await classifying("dataset \(reference)") { try await datasets.record(name) }
        let directory = URL(fileURLWithPath: options.spoolDirectory ?? NSTemporaryDirectory())
            .appendingPathComponent("jobfarm-datasets", isDirectory: true)
        let url = directory.appendingPathComponent("\(record.sha256).\(record.format == "npy" ? "npy" : "csv")")
        let spool = SpoolCache.shared
        spool.sweepOnFirstUse(directory)
        // Open first, then check: a copy found is held from that moment, whatever another trim does next.
        if let lease = spool.lease(url) {
            if lease.bytes == record.bytes {
                lease.touch()
                return (url, record, lease)
            }
            // Not the dataset's size (written by something else): spooled again below, renamed over it.
        }
        let fileManager = FileManager.default
        do {
            try fileManager.createDirectory(at: directory, withIntermediateDirectories: true)
        } catch {
            throw JobError.retryable("dataset \(reference): cannot create the spool directory \(directory.path) (\(error.localizedDescription)); set JOBFARM_SPOOL_DIR to a writable directory")
        }
        let partial = directory.appendingPathComponent(".\(record.sha256).\(ProcessInfo.processInfo.processIdentifier).\(UUID().uuidString).partial")
        do {
            try await datasets.write(record, to: partial)
        } catch ModelStoreError.corrupt(let message) {
            throw JobError.nonRetryable("dataset \(reference): corrupt: \(message) (push the dataset again with `jobfarm dataset push`)")
        } catch ModelStoreError.io(let message) {
            throw JobError.retryable("dataset \(reference): cannot spool to \(directory.path): \(message) (free space there or set JOBFARM_SPOOL_DIR)")
        } catch {
            throw classify(error, "dataset \(reference)")
        }
        // Leased before the rename, so the file is held from the moment it is visible under its name.
        guard let lease = spool.lease(partial, cachedAs: url) else {
            let reason = String(cString: strerror(errno))
            try? fileManager.removeItem(at: partial)
            throw JobError.retryable("dataset \(reference): cannot open the spooled copy \(partial.path): \(reason)")
        }
        // rename(2) replaces atomically: a reader sees the old complete file or the new one, never a partial one.
        guard rename(partial.path, url.path) == 0 else {
            let reason = String(cString: strerror(errno))
            try? fileManager.removeItem(at: partial)
            throw JobError.retryable("dataset \(reference): cannot move the spooled copy into \(url.path): \(reason)")
        }
        spool.trim(directory, limit: options.spoolCacheBytes, keep: lease.id)
        return (url, record, lease)
    }
}

/// A dataset read in row blocks from a file, so that `batch_analysis`, `validate` and `train` never hold more than
/// one block of it. A `farm:NAME` dataset is read from its local spooled copy (`MLEnvironment.spoolFarmDataset`), so
/// both kinds of reference go through one code path.
struct BlockedDataset: Sendable {
    enum Origin: Sendable {
        case npyFile(URL, labelIndex: Int?)
        case csvFile(URL)
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
    /// Whether the file is the local spooled copy of a farm dataset.
    let spooled: Bool
    /// For a spooled copy: the open file that keeps it from being evicted while this dataset (any copy of it) lives,
    /// and through which every pass reads it.
    var lease: SpoolLease? = nil

    /// Where a pass opens `url`: through the lease's descriptor for a spooled copy, else the path.
    private func readable(_ url: URL) -> URL { lease?.readableURL ?? url }

    /// Calls `body(features, labels, rows)` for each block in file order; blocks hold `blockRows` rows (the last may
    /// hold fewer). After each block, `progress` gets the share of the dataset read (rows of rows for `.npy`, bytes of
    /// the file's size for CSV), and 1 at the end; throwing from it stops the pass (a cancelled job). Format errors
    /// become `JobError.nonRetryable` naming the dataset.
    ///
    /// `finite`: a NaN or infinite feature stops the pass with a `JobError.nonRetryable` naming the dataset and the
    /// row as the file numbers it (the CSV line, as CSV parse errors do; the `.npy` row) and the column.
    func forEachBlock(finite: Bool = false, progress: (Double) throws -> Void = { _ in },
                      _ body: (_ features: [Float], _ labels: [Float]?, _ rows: Int) throws -> Void) throws {
        /// The first non-finite feature of a block: its row in the block and its column.
        func nonFinite(_ features: [Float]) -> (row: Int, column: Int, value: Float)? {
            guard finite, let index = features.firstIndex(where: { !$0.isFinite }) else { return nil }
            return (index / max(1, columns), index % max(1, columns), features[index])
        }
        let fix = "features must be finite to train or validate: fix or drop that row"
        do {
            switch origin {
            case .csvFile(let url):
                let reader = try CSVBlockReader(url: readable(url), labelColumn: labelColumn, rowsPerBlock: blockRows)
                while let block = try reader.next() {
                    if let bad = nonFinite(block.features) {
                        let name = bad.column < names.count ? names[bad.column] : "#\(bad.column + 1)"
                        throw JobError.nonRetryable("dataset \(source): CSV line \(block.lines[bad.row]) column \"\(name)\" is \(bad.value); \(fix)")
                    }
                    try body(block.features, block.labels, block.rowCount)
                    try progress(reader.totalBytes.map { min(1, Double(reader.bytesConsumed) / Double(max(1, $0))) } ?? 0)
                }
            case .npyFile(let url, let labelIndex):
                let reader = try NpyRowReader(url: readable(url), rowsPerBlock: blockRows)
                let rows = Double(max(1, reader.rowCount))
                while let block = try reader.next() {
                    guard let labelIndex else {
                        if let bad = nonFinite(block.values) {
                            throw JobError.nonRetryable("dataset \(source): .npy row \(block.firstRow + bad.row) column \(bad.column) is \(bad.value) (rows and columns counted from 0, as NumPy indexes them); \(fix)")
                        }
                        try body(block.values, nil, block.rowCount)
                        try progress(Double(block.firstRow + block.rowCount) / rows)
                        continue
                    }
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
                    if let bad = nonFinite(features) {
                        let column = bad.column < labelIndex ? bad.column : bad.column + 1
                        throw JobError.nonRetryable("dataset \(source): .npy row \(block.firstRow + bad.row) column \(column) is \(bad.value) (rows and columns counted from 0, as NumPy indexes them); \(fix)")
                    }
                    try body(features, labels, block.rowCount)
                    try progress(Double(block.firstRow + block.rowCount) / rows)
                }
            }
            try progress(1)
        } catch let error as ComputeError {
            throw JobError.nonRetryable("dataset \(source): \(error)")
        }
    }

    /// As `forEachBlock`, but each block keeps only the rows whose indices are in `selected` (sorted ascending, as
    /// `LabeledDataset.stratifiedIndices` gives them); a block with none of them is passed with 0 rows.
    func forEachBlock(selecting selected: [Int], progress: (Double) throws -> Void = { _ in },
                      _ body: (_ features: [Float], _ labels: [Float]?, _ rows: Int) throws -> Void) throws {
        var firstRow = 0, next = 0
        try forEachBlock(progress: progress) { features, labels, n in
            defer { firstRow += n }
            var keep: [Int] = []
            while next < selected.count, selected[next] < firstRow + n { keep.append(selected[next] - firstRow); next += 1 }
            var x: [Float] = []
            x.reserveCapacity(keep.count * columns)
            for r in keep { x.append(contentsOf: features[(r * columns)..<((r + 1) * columns)]) }
            try body(x, labels.map { l in keep.map { l[$0] } }, keep.count)
        }
    }

    /// One pass that reads every label as a class (checked as `classes` does) and checks every feature is finite
    /// (the first pass of training: a NaN is reported by its row in the file), keeping the features too while
    /// `rows × columns × 4` bytes fit `budget`. Nil features: the dataset is larger than the budget (and only the
    /// labels, 4 bytes a row, were kept).
    func readClasses(keepingFeaturesWithin budget: Int, progress: (Double) throws -> Void = { _ in })
        throws -> (classes: [Int32], features: [Float]?) {
        var classes: [Int32] = []
        var features: [Float]? = []
        try forEachBlock(finite: true, progress: progress) { x, y, _ in
            classes.append(contentsOf: try self.classes(y, firstRow: classes.count).map { Int32($0) })
            if features != nil {
                if classes.count * columns * MemoryLayout<Float>.size <= budget { features?.append(contentsOf: x) } else { features = nil }
            }
        }
        return (classes, features)
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
    /// Opens `reference` for block-wise reading, `blockRows` rows at a time (`.npy` through `NpyRowReader`, CSV
    /// through `CSVBlockReader`): a path as it is, `farm:NAME` from its local spooled copy (streamed from Redis on first
    /// use, see `spoolFarmDataset`).
    func openBlocks(_ reference: String, labelColumn: String?, blockRows: Int) async throws -> BlockedDataset {
        guard blockRows >= 1, blockRows <= 16_777_216 else {
            throw JobError.nonRetryable("blockRows must be 1…16777216 (got \(blockRows))")
        }
        let url: URL
        let isNpy: Bool
        var lease: SpoolLease?
        let spooled = reference.hasPrefix("farm:")
        if spooled {
            let (file, record, held) = try await spoolFarmDataset(reference)
            url = file
            isNpy = record.format == "npy"
            lease = held
        } else {
            var path = reference
            if !path.hasPrefix("/"), let root = options.dataRoot { path = root + "/" + path }
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else {
                throw JobError.nonRetryable("dataset path '\(path)' does not exist (give a file on a volume every worker sees, or push it with `jobfarm dataset push` and use farm:NAME)")
            }
            url = URL(fileURLWithPath: path)
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw JobError.nonRetryable("dataset path '\(path)' cannot be read")
            }
            let magic = (try? handle.read(upToCount: 6)) ?? nil
            try? handle.close()
            isNpy = path.hasSuffix(".npy") || (magic.map { $0.starts(with: [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) } ?? false)
        }
        // The spooled copy is read through the lease's descriptor, which the dataset keeps (and so the file) for as
        // long as the job holds it.
        let readable = lease?.readableURL ?? url
        return try await executor.run { [lease] in
            do {
                if isNpy {
                    let reader = try NpyRowReader(url: readable, rowsPerBlock: blockRows)
                    guard reader.shape.count <= 2 else {
                        throw JobError.nonRetryable("dataset \(reference): .npy must be 1-D or 2-D, got shape \(reader.shape)")
                    }
                    let width = reader.rowLength
                    var names = (0..<width).map { "col_\($0)" }
                    guard let labelColumn else {
                        return BlockedDataset(origin: .npyFile(url, labelIndex: nil), source: reference, blockRows: blockRows,
                                              columns: width, names: names, labelColumn: nil, spooled: spooled, lease: lease)
                    }
                    let index = try npyLabelIndex(labelColumn, columns: width, source: reference)
                    names.remove(at: index)
                    return BlockedDataset(origin: .npyFile(url, labelIndex: index), source: reference, blockRows: blockRows,
                                          columns: width - 1, names: names, labelColumn: "col_\(index)", spooled: spooled, lease: lease)
                }
                let reader = try CSVBlockReader(url: readable, labelColumn: labelColumn, rowsPerBlock: blockRows)
                let names = reader.featureNames
                guard !names.isEmpty else { throw JobError.nonRetryable("dataset \(reference): no feature columns") }
                return BlockedDataset(origin: .csvFile(url), source: reference, blockRows: blockRows, columns: names.count,
                                      names: names, labelColumn: labelColumn, spooled: spooled, lease: lease)
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
