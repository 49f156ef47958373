import Compute
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import ModelStore
import Synchronization
import Testing

/// batch_analysis, validate and train report progress after every block of their passes, not only between phases.
@Suite("Progress inside streaming passes", .enabled(if: TestRedis.available))
struct ProgressTests {
    /// A CSV of `rows` rows × 8 features + a 10-class label, in a fresh directory (removed by the caller).
    func syntheticCSV(rows: Int) throws -> (directory: URL, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-progress-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var rng = SeededRandom(seed: 9)
        var text = "f0,f1,f2,f3,f4,f5,f6,f7,label\n"
        for _ in 0..<rows {
            for _ in 0..<8 { text += String(format: "%.3f,", rng.nextUnitFloat() * 10) }
            text += "\(rng.nextIndex(below: 10))\n"
        }
        let path = directory.appendingPathComponent("synthetic.csv").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return (directory, path)
    }

    /// Runs a handler directly with a context that records every progress report.
    func recordProgress<H: JobHandler>(_ handler: H, _ payload: String) async throws -> (output: H.Output, reports: [Double]) {
        let reports = Mutex<[Double]>([])
        let context = JobContext(
            id: "progress-test", kind: H.kind, queue: "ml", tier: "standard", attempt: 1, maxAttempts: 1,
            deadline: .now + .seconds(600), trace: [:], logger: Logger(label: "test"),
            progress: { fraction in reports.withLock { $0.append(fraction) } })
        let parameters = try JSONDecoder().decode(H.Parameters.self, from: Data(payload.utf8))
        let output = try await handler.run(parameters, context: context)
        return (output, reports.withLock { $0 })
    }

    @Test("batch_analysis over 200 blocks reports fractions inside both of its passes, rising to 1")
    func batchAnalysisReportsPerBlock() async throws {
        let (directory, path) = try syntheticCSV(rows: 40_000)
        defer { try? FileManager.default.removeItem(at: directory) }
        let environment = MLEnvironment(farm: try mlTestFarm(), options: testOptions())
        // A small quantile budget keeps a sample, so the histograms need a second pass over the file.
        let (output, reports) = try await recordProgress(BatchAnalysisJob(environment: environment), """
            {"dataset": "\(path)", "labelColumn": "label", "blockRows": 200, "memoryBudgetBytes": 32000, "pcaComponents": 0}
            """)
        #expect(output.streaming.blocks == 200 && output.streaming.passes == 2)
        let inFirstPass = Set(reports.filter { $0 > 0.05 && $0 < 0.4 })
        let inSecondPass = Set(reports.filter { $0 > 0.4 && $0 < 0.6 })
        #expect(inFirstPass.count >= 2, "per-block progress in pass 1: \(reports)")
        #expect(inSecondPass.count >= 2, "per-block progress in pass 2: \(reports)")
        #expect(zip(reports, reports.dropFirst()).allSatisfy { $0 <= $1 }, "never goes back: \(reports)")
        #expect(reports.last == 1)
    }

    @Test("validate with a holdout reports fractions inside its label pass and its metrics pass")
    func validateReportsPerBlock() async throws {
        let (directory, path) = try syntheticCSV(rows: 40_000)
        defer { try? FileManager.default.removeItem(at: directory) }
        let farm = try mlTestFarm()
        let environment = MLEnvironment(farm: farm, options: testOptions())
        let model = try await environment.models.push(model: try randomModel(inputs: 8, hidden: 16, outputs: 10), name: "progress")
        let (output, reports) = try await recordProgress(ValidateJob(environment: environment), """
            {"candidate": "\(model.reference)", "dataset": "\(path)", "labelColumn": "label", "blockRows": 200,
             "holdout": {"fraction": 0.5, "seed": 1}}
            """)
        #expect(output.blocks == 200 && abs(output.rows - 20_000) <= 10)
        #expect(Set(reports.filter { $0 > 0.1 && $0 < 0.3 }).count >= 2, "label pass: \(reports)")
        #expect(Set(reports.filter { $0 > 0.3 && $0 < 0.8 }).count >= 2, "metrics pass: \(reports)")
        #expect(zip(reports, reports.dropFirst()).allSatisfy { $0 <= $1 }, "never goes back: \(reports)")
    }

    @Test("through the queue, a running batch_analysis publishes intermediate progress in its status")
    func statusShowsProgress() async throws {
        let (directory, path) = try syntheticCSV(rows: 60_000)
        defer { try? FileManager.default.removeItem(at: directory) }
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm) { _ in
            let id = try await farm.enqueue(EnqueueRequest(kind: "batch_analysis", queue: "ml", payload: try JSONValue(parsing: """
                {"dataset": "\(path)", "labelColumn": "label", "blockRows": 100, "memoryBudgetBytes": 32000, "pcaComponents": 0}
                """), maxAttempts: 1))
            let seen = Mutex<[Double]>([])
            let status = try await farm.wait(for: id, queue: "ml", timeout: .seconds(120)) { status in
                if status.state == .running, let progress = status.progress { seen.withLock { $0.append(progress) } }
            }
            #expect(status.state == .succeeded, "\(status.error ?? "")")
            let observed = seen.withLock { $0 }
            // Between phases the job reports 0.05, 0.4, 0.6, 0.8; anything else came from inside a pass.
            let insidePasses = observed.filter { ![0.05, 0.4, 0.6, 0.8, 1].contains($0) && $0 > 0 }
            #expect(!insidePasses.isEmpty, "progress seen while running: \(observed)")
        }
    }
}
