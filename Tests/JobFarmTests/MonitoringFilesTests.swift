import FarmMetrics
import Foundation
import JobFarmTesting
import Testing

/// The Grafana dashboard and the Prometheus alert rules in docs/: they name only metrics that are exported, and the
/// rules pass `promtool check rules` and their unit tests (`promtool test rules`, sample series in alerts.test.yml).
@Suite("Monitoring files")
struct MonitoringFilesTests {
    /// What the exporter, the workers and the autoscaler (`jobfarm_desired_workers{pool}`) export.
    static var exported: Set<String> {
        Set(QueueExporter.metricNames + WorkerMetrics.metricNames + ["jobfarm_desired_workers"])
    }

    /// The `jobfarm_…` names in a PromQL expression, histogram series suffixes removed.
    static func metricNames(in expression: String) -> Set<String> {
        var names: Set<String> = []
        var scanner = expression[...]
        while let range = scanner.range(of: "jobfarm_") {
            let name = scanner[range.lowerBound...].prefix { $0.isLetter || $0.isNumber || $0 == "_" }
            scanner = scanner[name.endIndex...]
            var base = String(name)
            for suffix in ["_bucket", "_sum", "_count"] where base.hasSuffix(suffix) && !exported.contains(base) {
                base = String(base.dropLast(suffix.count))
            }
            names.insert(base)
        }
        return names
    }

    @Test func theDashboardQueriesOnlyExportedMetrics() throws {
        let data = try Data(contentsOf: PackagePaths.root.appendingPathComponent("docs/grafana/jobfarm.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        var expressions: [String] = []
        func collect(_ value: Any) {
            if let object = value as? [String: Any] {
                if let expr = object["expr"] as? String { expressions.append(expr) }
                for (_, child) in object { collect(child) }
            } else if let array = value as? [Any] {
                for child in array { collect(child) }
            }
        }
        collect(dashboard)
        #expect(expressions.count >= 15, "every panel has a query")
        let used = expressions.reduce(into: Set<String>()) { $0.formUnion(Self.metricNames(in: $1)) }
        #expect(used.subtracting(Self.exported).isEmpty, "not exported: \(used.subtracting(Self.exported).sorted())")
        for needed in ["jobfarm_desired_workers", "jobfarm_live_workers", "jobfarm_queue_depth", "jobfarm_queue_dead_letters",
                       "jobfarm_worker_queue_wait_seconds", "jobfarm_worker_job_run_seconds", "jobfarm_queue_succeeded_total"] {
            #expect(used.contains(needed), "the dashboard shows \(needed)")
        }
    }

    @Test func theAlertRulesNameOnlyExportedMetrics() throws {
        let text = try String(contentsOf: PackagePaths.root.appendingPathComponent("docs/prometheus/alerts.yml"), encoding: .utf8)
        let expressions = text.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).hasPrefix("#") }.joined(separator: "\n")
        let used = Self.metricNames(in: expressions)
        #expect(!used.isEmpty)
        #expect(used.subtracting(Self.exported).isEmpty, "not exported: \(used.subtracting(Self.exported).sorted())")
    }

    /// promtool from scripts/test (`JOBFARM_PROMTOOL`, which installs Debian's prometheus package when missing), else
    /// from PATH; nil when there is none.
    static var promtool: String? {
        if let path = ProcessInfo.processInfo.environment["JOBFARM_PROMTOOL"], FileManager.default.isExecutableFile(atPath: path) { return path }
        for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
            let path = "\(directory)/promtool"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    @Test(.timeLimit(.minutes(1))) func promtoolChecksTheRulesAndTheirUnitTestsPass() throws {
        guard let promtool = Self.promtool else {
            print("skipped: promtool is not installed (scripts/test installs Debian's prometheus package; it could not here)")
            return
        }
        let directory = PackagePaths.root.appendingPathComponent("docs/prometheus")
        for arguments in [["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: promtool)
            process.arguments = arguments
            process.currentDirectoryURL = directory
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "promtool \(arguments.joined(separator: " ")):\n\(text)")
        }
    }
}
