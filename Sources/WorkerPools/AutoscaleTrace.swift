import Foundation

/// An arrival trace for the simulator: jobs per tier arriving in each interval (`jobs/traces/*.csv`).
///
/// CSV: `#` lines are comments; the header is `seconds,` then tier names; each row is a start time in seconds
/// (increasing) and the jobs of each tier that arrive, spread at random, between it and the next row's time. The last
/// row ends the trace: its counts must be 0.
public struct AutoscaleTrace: Sendable, Equatable {
    /// One interval of the trace.
    public struct Bucket: Sendable, Equatable {
        /// Start, in seconds from the trace's start.
        public var start: Double
        /// End (the next row's time).
        public var end: Double
        /// Jobs arriving, per tier (the order of `tiers`).
        public var counts: [Int]
    }

    /// The tiers, in priority order as the header lists them.
    public var tiers: [String]
    /// The intervals in time order.
    public var buckets: [Bucket]
    /// The trace's length in seconds.
    public var duration: Double { buckets.last?.end ?? 0 }
    /// Jobs in the whole trace.
    public var jobs: Int { buckets.reduce(0) { $0 + $1.counts.reduce(0, +) } }

    /// Parses a trace; `path` names it in errors.
    public init(csv text: String, path: String = "trace.csv") throws {
        var header: [String]?
        var rows: [(Double, [Int], Int)] = []
        for (number, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line.hasPrefix("#") { continue }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard let columns = header else {
                guard fields.first == "seconds", fields.count >= 2, !fields.dropFirst().contains(where: \.isEmpty) else {
                    throw AutoscaleTraceError(path: path, line: number + 1, message: "the header must be `seconds,` and the tier names (seconds,premium,standard,free)")
                }
                header = Array(fields.dropFirst())
                continue
            }
            guard fields.count == columns.count + 1 else {
                throw AutoscaleTraceError(path: path, line: number + 1, message: "has \(fields.count) fields; the header has \(columns.count + 1)")
            }
            guard let time = Double(fields[0]), time.isFinite, time >= 0, time > (rows.last?.0 ?? -1) else {
                throw AutoscaleTraceError(path: path, line: number + 1, message: "'\(fields[0])' is not a time in seconds after the previous row's")
            }
            var counts: [Int] = []
            for field in fields.dropFirst() {
                guard let count = Int(field), count >= 0, count <= 100_000_000 else {
                    throw AutoscaleTraceError(path: path, line: number + 1, message: "'\(field)' is not a job count (a whole number 0…100000000)")
                }
                counts.append(count)
            }
            rows.append((time, counts, number + 1))
        }
        guard let header, rows.count >= 2 else {
            throw AutoscaleTraceError(path: path, line: nil, message: "needs a header and at least two rows (the last one ends the trace)")
        }
        guard let last = rows.last, last.1.allSatisfy({ $0 == 0 }) else {
            throw AutoscaleTraceError(path: path, line: rows.last?.2, message: "the last row ends the trace: its counts must be 0")
        }
        tiers = header
        buckets = zip(rows, rows.dropFirst()).map { Bucket(start: $0.0, end: $1.0, counts: $0.1) }
    }

    /// Reads a trace file.
    public init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AutoscaleTraceError(path: path, line: nil, message: "cannot be read; check the path (samples: jobs/traces/)")
        }
        try self.init(csv: String(decoding: data, as: UTF8.self), path: path)
    }
}

/// A mistake in a trace file, with its line.
public struct AutoscaleTraceError: Error, CustomStringConvertible, Equatable {
    /// The file.
    public var path: String
    /// The 1-based line, when known.
    public var line: Int?
    /// What is wrong.
    public var message: String

    public var description: String { "\(path)\(line.map { ":\($0)" } ?? ""): \(message)" }
}
