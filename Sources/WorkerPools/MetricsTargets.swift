import Foundation

/// The Prometheus `file_sd` targets of supervised workers: one group per pool, the `/metrics` port of each running
/// process (`metrics_port_base` + index − 1), labelled with the pool. Prometheus re-reads the file when it changes
/// (`file_sd_configs`), so a supervisor that changes a pool's process count writes it again.
public enum MetricsTargets {
    /// The file's JSON for `counts` processes per pool (pools without `metrics_port_base` are left out).
    public static func json(pools: [PoolConfiguration], counts: [String: Int], host: String) -> String {
        var groups: [String] = []
        for pool in pools {
            guard let base = pool.metricsPortBase, let count = counts[pool.name], count > 0 else { continue }
            let targets = (0..<count).map { "\"\(host):\(base + $0)\"" }.joined(separator: ", ")
            groups.append("  {\"targets\": [\(targets)], \"labels\": {\"job\": \"jobfarm-worker\", \"pool\": \"\(pool.name)\"}}")
        }
        return "[\n" + groups.joined(separator: ",\n") + "\n]\n"
    }

    /// Writes the file atomically (Prometheus never reads half a file).
    public static func write(to path: String, pools: [PoolConfiguration], counts: [String: Int], host: String) throws {
        try json(pools: pools, counts: counts, host: host).write(toFile: path, atomically: true, encoding: .utf8)
    }
}
