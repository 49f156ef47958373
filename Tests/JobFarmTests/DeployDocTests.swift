import Foundation
import JobFarmTesting
import Testing
import WorkerPools
import Yams

/// docs/deploy.md: every YAML block parses, the KEDA ScaledObject and the HPA scale the pool's Deployment on the
/// autoscaler's metric for that pool, and the workers file in its ConfigMap is a valid workers.yaml.
@Suite("docs/deploy.md")
struct DeployDocTests {
    /// The documents of every ```yaml block, in order.
    static func documents() throws -> [[String: Any]] {
        let text = try String(contentsOf: PackagePaths.root.appendingPathComponent("docs/deploy.md"), encoding: .utf8)
        var blocks: [String] = []
        var current: [String]?
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if current == nil && line == "```yaml" {
                current = []
            } else if current != nil && line == "```" {
                blocks.append(current!.joined(separator: "\n"))
                current = nil
            } else if current != nil {
                current!.append(String(line))
            }
        }
        var documents: [[String: Any]] = []
        for block in blocks {
            for document in try Yams.load_all(yaml: block) {
                documents.append(try #require(document as? [String: Any], "each YAML document is a mapping:\n\(block)"))
            }
        }
        return documents
    }

    static func object(_ documents: [[String: Any]], kind: String) throws -> [String: Any] {
        try #require(documents.first { $0["kind"] as? String == kind }, "docs/deploy.md has a \(kind)")
    }

    static func value(_ root: Any?, _ path: String...) -> Any? {
        var node = root
        for key in path {
            if let index = Int(key), let list = node as? [Any] { node = index < list.count ? list[index] : nil } else { node = (node as? [String: Any])?[key] }
        }
        return node
    }

    @Test func theDeploymentScaledObjectAndHPANameTheMetricAndThePool() throws {
        let documents = try Self.documents()
        #expect(documents.count == 5, "ConfigMap, exporter Deployment, pool Deployment, ScaledObject, HPA")

        let deployment = try #require(documents.first { $0["kind"] as? String == "Deployment" && Self.value($0, "metadata", "name") as? String == "jobfarm-general" })
        let args = Self.value(deployment, "spec", "template", "spec", "containers", "0", "args") as? [String] ?? []
        #expect(Array(args.prefix(3)) == ["worker", "--pool", "general"])
        let grace = Self.value(deployment, "spec", "template", "spec", "terminationGracePeriodSeconds") as? Int ?? 0

        let scaled = try Self.object(documents, kind: "ScaledObject")
        #expect(scaled["apiVersion"] as? String == "keda.sh/v1alpha1")
        #expect(Self.value(scaled, "spec", "scaleTargetRef", "name") as? String == "jobfarm-general")
        #expect(Self.value(scaled, "spec", "triggers", "0", "type") as? String == "prometheus")
        #expect(Self.value(scaled, "spec", "triggers", "0", "metricType") as? String == "AverageValue")
        let query = Self.value(scaled, "spec", "triggers", "0", "metadata", "query") as? String ?? ""
        #expect(query.contains("jobfarm_desired_workers{pool=\"general\"}"), "\(query)")
        #expect(Self.value(scaled, "spec", "triggers", "0", "metadata", "threshold") as? String == "1")

        let hpa = try Self.object(documents, kind: "HorizontalPodAutoscaler")
        #expect(hpa["apiVersion"] as? String == "autoscaling/v2")
        #expect(Self.value(hpa, "spec", "scaleTargetRef", "name") as? String == "jobfarm-general")
        #expect(Self.value(hpa, "spec", "metrics", "0", "type") as? String == "External")
        #expect(Self.value(hpa, "spec", "metrics", "0", "external", "metric", "name") as? String == "jobfarm_desired_workers")
        #expect(Self.value(hpa, "spec", "metrics", "0", "external", "metric", "selector", "matchLabels", "pool") as? String == "general")
        #expect(Self.value(hpa, "spec", "metrics", "0", "external", "target", "averageValue") as? String == "1")

        // The bounds and the window agree with the workers file; the grace outlasts the pool's shutdown_grace.
        let configMap = try Self.object(documents, kind: "ConfigMap")
        let workersText = try #require(Self.value(configMap, "data", "workers.yaml") as? String)
        let pool = try PoolsConfiguration.parse(workersText, path: "docs/deploy.md ConfigMap", cores: 2).pool(named: "general")
        #expect(Self.value(scaled, "spec", "minReplicaCount") as? Int == pool.minProcesses)
        #expect(Self.value(scaled, "spec", "maxReplicaCount") as? Int == pool.maxProcesses)
        #expect(Self.value(hpa, "spec", "minReplicas") as? Int == pool.minProcesses)
        #expect(Self.value(hpa, "spec", "maxReplicas") as? Int == pool.maxProcesses)
        #expect(Self.value(hpa, "spec", "behavior", "scaleDown", "stabilizationWindowSeconds") as? Int == Int(pool.autoscale.scaleDownWindowSeconds))
        #expect(Double(grace) > pool.shutdownGraceSeconds)

        // The exporter serves the port Prometheus is told to scrape.
        let exporter = try #require(documents.first { Self.value($0, "metadata", "name") as? String == "jobfarm-autoscale" })
        let exporterArgs = Self.value(exporter, "spec", "template", "spec", "containers", "0", "args") as? [String] ?? []
        #expect(exporterArgs.starts(with: ["autoscale", "--metrics-port", "9400"]))
        #expect(Self.value(exporter, "spec", "template", "metadata", "annotations", "prometheus.io/port") as? String == "9400")
    }
}
