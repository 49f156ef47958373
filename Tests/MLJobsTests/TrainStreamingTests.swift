import Compute
import Foundation
import JobPayloads
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import ModelStore
import Synchronization
import Testing

/// `train` on a dataset larger than its `memoryBudgetBytes`: labels held, features streamed from the file each epoch.
@Suite("train streams datasets over its memory budget", .enabled(if: TestRedis.available))
struct TrainStreamingTests {
    @Test("digits with a tiny budget and 200-row blocks: streamed, ≥ 95 % held out, the same held-out rows as in memory and as validate")
    func streamedDigits() async throws {
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm) { _ in
            let payload = """
                {"dataset": "data/digits/digits.csv", "labelColumn": "target", "name": "NAME",
                 "holdout": {"fraction": 0.25, "seed": 0}EXTRA}
                """
            let inMemory = try await succeed(farm, "train", payload.replacingOccurrences(of: "NAME", with: "digits-mem")
                .replacingOccurrences(of: "EXTRA", with: ""), timeout: .seconds(600))
            let streamed = try await succeed(farm, "train", payload.replacingOccurrences(of: "NAME", with: "digits-stream")
                .replacingOccurrences(of: "EXTRA", with: #", "memoryBudgetBytes": 1024, "blockRows": 200"#), timeout: .seconds(600))
            #expect(inMemory["streamed"] == .bool(false) && inMemory["blockRows"] == nil)
            #expect(streamed["streamed"] == .bool(true) && streamed.number("blockRows") == 200)
            let accuracy = try #require(streamed.number("holdoutAccuracy"))
            #expect(accuracy >= 0.95, "streamed held-out accuracy \(accuracy)")
            #expect(streamed.number("holdoutRows") == inMemory.number("holdoutRows"))
            #expect(streamed.number("trainRows") == inMemory.number("trainRows"))
            #expect(streamed.number("features") == 64 && streamed.number("classes") == 10)
            let test = try digitsDataset(from: PackagePaths.digits).stratifiedSplit(testFraction: 0.25, seed: 0).test
            #expect(streamed.number("holdoutRows") == Double(test.count))
            // validate with the same holdout scores the streamed model on the same rows, to the same accuracy.
            let checked = try await succeed(farm, "validate", """
                {"candidate": "digits-stream:1", "dataset": "data/digits/digits.csv", "labelColumn": "target",
                 "holdout": {"fraction": 0.25, "seed": 0}, "blockRows": 200}
                """)
            #expect(checked.number("rows") == streamed.number("holdoutRows"))
            #expect(checked.number("accuracy") == accuracy)
        }
    }

    @Test("streaming with a separate validation dataset (a farm dataset) evaluates it every epoch")
    func streamedWithValidationDataset() async throws {
        let farm = try mlTestFarm()
        try await withMLWorker(farm: farm) { environment in
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: PackagePaths.digits)))
            try await environment.datasets.push(name: "digits-val", bytes: bytes)
            let trained = try await succeed(farm, "train", """
                {"dataset": "data/digits/digits.csv", "labelColumn": "target", "name": "digits-val",
                 "validationDataset": "farm:digits-val", "hiddenSizes": [16], "epochs": 3,
                 "memoryBudgetBytes": 1024, "blockRows": 300}
                """)
            #expect(trained["streamed"] == .bool(true))
            let history = trained["history"]?.items ?? []
            #expect(history.count == 3)
            #expect(history.allSatisfy { ($0.number("validationAccuracy") ?? 0) > 0.5 }, "\(trained.jsonText)")
            #expect(trained.number("trainRows") == 1797 && trained.number("holdoutRows") == nil)
        }
    }

    @Test("a cancelled streaming train stops its compute thread within a block")
    func cancelledStreamingTrainStops() async throws {
        let farm = try mlTestFarm()
        let environment = MLEnvironment(farm: farm, options: testOptions())
        let job = TrainJob(environment: environment)
        let parameters = try JSONValue(parsing: """
            {"dataset": "data/digits/digits.csv", "labelColumn": "target", "name": "never", "epochs": 100000,
             "memoryBudgetBytes": 0, "blockRows": 50}
            """)
        let reports = Mutex<[Double]>([])
        let context = JobContext(
            id: "cancel-test", kind: TrainJob.kind, queue: "ml", tier: "standard", attempt: 1, maxAttempts: 1,
            deadline: .now + .seconds(600), trace: [:], logger: Logger(label: "test"),
            progress: { fraction in reports.withLock { $0.append(fraction) } })
        let task = Task { try await job.run(parameters, context: context) }
        let clock = ContinuousClock()
        // Wait until the epochs run (progress past the label pass).
        let started = clock.now
        while reports.withLock({ $0.last ?? 0 }) <= 0.05 + 1e-9 {
            guard clock.now - started < .seconds(60) else { task.cancel(); throw TestFailure("training never reported progress") }
            try await Task.sleep(for: .milliseconds(20))
        }
        let asked = clock.now
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(clock.now - asked < .seconds(5), "stopped within a block, not after 100000 epochs")
        let count = reports.withLock { $0.count }
        try await Task.sleep(for: .milliseconds(200))
        #expect(reports.withLock { $0.count } == count, "nothing is reported after the job ended")
    }
}
