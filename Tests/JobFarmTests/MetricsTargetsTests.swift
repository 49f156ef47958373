import Foundation
import Testing
import WorkerPools

/// workers.yaml's `metrics_port_base` and the supervisor's Prometheus file_sd targets.
@Suite("Metrics ports of pools")
struct MetricsTargetsTests {
    @Test func portsComeFromEachPoolsBaseAndTheTargetsFileListsThem() throws {
        let pools = try PoolsConfiguration.parse("""
            pools:
              - name: general
                queues: default
                processes: {min: 2, max: 4}
                metrics_port_base: 9500
              - name: ml
                queues: ml
                processes: 1
                metrics_port_base: 9510
              - name: quiet
                queues: other
            """, path: "w.yaml", cores: 2)
        #expect(pools.pools.map(\.metricsPortBase) == [9500, 9510, nil])
        let json = MetricsTargets.json(pools: pools.pools, counts: ["general": 2, "ml": 1, "quiet": 1], host: "10.0.0.5")
        let groups = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [[String: Any]])
        #expect(groups.count == 2, "the pool without a base has no targets")
        #expect(groups[0]["targets"] as? [String] == ["10.0.0.5:9500", "10.0.0.5:9501"])
        #expect((groups[0]["labels"] as? [String: String])?["pool"] == "general")
        #expect(groups[1]["targets"] as? [String] == ["10.0.0.5:9510"])
    }

    @Test func overlappingOrOversizedPortRangesAreRefusedWithFileLineAndKey() {
        func error(_ text: String) -> String? {
            do {
                _ = try PoolsConfiguration.parse(text, path: "w.yaml", cores: 2)
                return nil
            } catch {
                return "\(error)"
            }
        }
        let overlap = error("""
            pools:
              - name: a
                queues: default
                processes: {min: 1, max: 4}
                metrics_port_base: 9500
              - name: b
                queues: ml
                metrics_port_base: 9502
            """)
        #expect(overlap?.hasPrefix("w.yaml:6: pools[1].metrics_port_base is 9502") == true, "\(overlap ?? "no error")")
        #expect(overlap?.contains("overlap pool a's 9500…9503") == true)
        let high = error("""
            pools:
              - name: a
                queues: default
                processes: {min: 1, max: 4}
                metrics_port_base: 65534
            """)
        #expect(high?.contains("pools[0].metrics_port_base is 65534") == true, "\(high ?? "no error")")
    }
}
