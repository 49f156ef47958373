import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import MLJobs
import ModelStore
import Pipelines
import Testing

/// jobs/pipelines/nightly-retrain.yaml run by the pipeline engine, two nights in a row, against the real Redis:
/// analyse → train → quantize FP16 ∥ int8 → validate each → promote the smallest candidate that passed.
@Suite("Nightly retraining pipeline", .enabled(if: TestRedis.available))
struct NightlyPipelineTests {
    static func ended(_ farm: JobFarm, _ runID: String, timeout: Duration = .seconds(900)) async throws -> RunStatus {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let status = try await farm.runStatus(runID), status.isFinal { return status }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestFailure("run \(runID) did not end within \(timeout)")
    }

    static func result(_ status: RunStatus, _ step: String) throws -> JSONValue {
        let found = try #require(status.steps.first { $0.id == step }, "no step \(step)")
        #expect(found.state == "passed", "\(step) ended \(found.state): \(found.reason ?? "")")
        return try #require(found.result, "\(step) has no result")
    }

    @Test(.timeLimit(.minutes(15)))
    func twoNightsEndToEnd() async throws {
        let farm = try mlTestFarm()
        let file = PackagePaths.root.appendingPathComponent("jobs/pipelines/nightly-retrain.yaml").path
        let pipeline = try ValidatedPipeline.load(path: file, knownKinds: nil)
        try await withMLWorker(farm: farm) { environment in
            // Night 1: no `production` alias yet: each validation compares with the fresh FP32 model and says so.
            let first = try await farm.startRun(pipeline, runID: "night-1")
            let night1 = try await Self.ended(farm, first.runID)
            #expect(night1.state == "succeeded", "\(night1.steps.map { "\($0.id) \($0.state) \($0.reason ?? "")" })")
            let trained = try Self.result(night1, "train").text("model")
            let check1 = try Self.result(night1, "validate-int8")
            #expect(check1.text("reference") == trained)
            #expect(check1.text("note")?.contains("does not exist yet") == true, "\(check1.jsonText)")
            #expect(check1.text("sizeReference") == trained)
            let promoted1 = try Self.result(night1, "promote")
            #expect(promoted1.text("previous") == "none")
            let production1 = try #require(promoted1.text("model"))
            // The smallest candidate that passed: int8 (both pass on digits).
            #expect(promoted1.text("precision") == "int8", "\(promoted1.jsonText)")
            #expect(try await environment.models.resolve("digits-mlp:production").reference == production1)

            // Night 2: validated against the production model the first night promoted.
            let second = try await farm.startRun(pipeline, runID: "night-2")
            let night2 = try await Self.ended(farm, second.runID)
            #expect(night2.state == "succeeded", "\(night2.steps.map { "\($0.id) \($0.state) \($0.reason ?? "")" })")
            let check2 = try Self.result(night2, "validate-fp16")
            #expect(check2.text("reference") == production1)
            #expect(check2["note"] == nil || check2["note"] == .null)
            let promoted2 = try Self.result(night2, "promote")
            #expect(promoted2.text("previous") == production1)
            let production2 = try #require(promoted2.text("model"))
            #expect(production2 != production1)

            // `jobfarm model rollback digits-mlp`: back to the first night's model, and a second rollback undoes it.
            let back = try await environment.models.rollbackAlias("production", name: "digits-mlp")
            #expect("digits-mlp:\(back.to)" == production1 && "digits-mlp:\(back.from)" == production2)
            let again = try await environment.models.rollbackAlias("production", name: "digits-mlp")
            #expect("digits-mlp:\(again.to)" == production2)
            #expect(try await environment.models.aliases("digits-mlp").keys.allSatisfy { !$0.contains(":") })
        }
    }
}
