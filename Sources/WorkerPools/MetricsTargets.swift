import Foundation

/// The Prometheus `file_sd` targets of supervised workers: one group per pool, the `/metrics` port of each running
/// process (`metrics_port_base` + index − 1), labelled with the pool. Prometheus re-reads the file when it changes
/// (`file_sd_configs`): `jobfarm supervise` writes it again whenever a pool's processes change (a scale-up adds their
/// ports, a scale-in removes them), so Prometheus finds new workers and forgets removed ones.
public enum MetricsTargets {
    /// The file's JSON for `counts` processes per pool, numbered 1…count (pools without `metrics_port_base` are
    /// left out).
    public static func json(pools: [PoolConfiguration], counts: [String: Int], host: String) -> String {
        json(pools: pools, slots: counts.mapValues { $0 > 0 ? Array(1...$0) : [] }, host: host)
    }

    /// The file's JSON for the process slots (1-based indexes) each pool runs.
    public static func json(pools: [PoolConfiguration], slots: [String: [Int]], host: String) -> String {
        var groups: [String] = []
        for pool in pools {
            guard let base = pool.metricsPortBase, let indexes = slots[pool.name], !indexes.isEmpty else { continue }
            let targets = indexes.sorted().map { "\"\(host):\(base + $0 - 1)\"" }.joined(separator: ", ")
            groups.append("  {\"targets\": [\(targets)], \"labels\": {\"job\": \"jobfarm-worker\", \"pool\": \"\(pool.name)\"}}")
        }
        return "[\n" + groups.joined(separator: ",\n") + "\n]\n"
    }

    /// Writes the file for `counts` processes per pool, atomically.
    public static func write(to path: String, pools: [PoolConfiguration], counts: [String: Int], host: String) throws {
        try replace(path, with: json(pools: pools, counts: counts, host: host))
    }

    /// Writes the file for the slots each pool runs, atomically.
    public static func write(to path: String, pools: [PoolConfiguration], slots: [String: [Int]], host: String) throws {
        try replace(path, with: json(pools: pools, slots: slots, host: host))
    }

    /// Writes `text` to a temporary file beside `path`, then renames it over `path`: Prometheus never reads half a
    /// file, and a reader sees the old file or the new one.
    static func replace(_ path: String, with text: String) throws {
        let temporary = "\(path).tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(text.utf8)) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw POSIXError(POSIXErrorCode(rawValue: code) ?? .EIO)
        }
    }
}
