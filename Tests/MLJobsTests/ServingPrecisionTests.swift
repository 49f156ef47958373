import Compute
import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import Logging
import MLJobs
import ModelStore
import Testing

/// A compressed version is served by its precision (`name:latest@fp16`) only once a `validate` against its FP32
/// source passed; the registry records every validation, and the refusal says which job to run.
@Suite("Serving precision", .enabled(if: TestRedis.available))
struct ServingPrecisionTests {
    func context(_ kind: String) -> JobContext {
        JobContext(id: "serving-\(UUID().uuidString.prefix(8))", kind: kind, queue: "ml", tier: "standard", attempt: 1, maxAttempts: 1,
                   deadline: .now + .seconds(600), trace: [:], logger: Logger(label: "test"), progress: { _ in })
    }

    func dataset() throws -> (directory: URL, path: String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-serving-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var rng = SeededRandom(seed: 5)
        var text = "f0,f1,f2,f3,f4,f5,f6,f7,label\n"
        for _ in 0..<200 {
            for _ in 0..<8 { text += String(format: "%.3f,", rng.nextUnitFloat() * 4 - 2) }
            text += "\(rng.nextIndex(below: 4))\n"
        }
        let path = directory.appendingPathComponent("serving.csv").path
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return (directory, path)
    }

    func infer(_ environment: MLEnvironment, _ reference: String) async throws -> InferenceJob.Output {
        try await InferenceJob(environment: environment).run(
            try JSONValue(parsing: #"{"model": "\#(reference)", "inputs": [[0.1, -0.2, 0.3, 0.4, -0.5, 0.6, 0.7, -0.8]]}"#),
            context: context("inference"))
    }

    func validate(_ environment: MLEnvironment, candidate: String, reference: String, dataset: String, thresholds: String) async throws -> Bool {
        let output = try await ValidateJob(environment: environment).run(try JSONValue(parsing: """
            {"candidate": "\(candidate)", "reference": "\(reference)", "dataset": "\(dataset)", "labelColumn": "label",
             "thresholds": \(thresholds)}
            """), context: context("validate"))
        return output.passed
    }

    func expectRefused(_ environment: MLEnvironment, _ reference: String, saying words: [String]) async {
        do {
            let output = try await infer(environment, reference)
            Issue.record("\(reference) was served as \(output.model)")
        } catch {
            for word in words { #expect("\(error)".contains(word), "\(error)") }
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func onlyAVersionValidatedAgainstItsSourceIsServedByPrecision() async throws {
        let (directory, path) = try dataset()
        defer { try? FileManager.default.removeItem(at: directory) }
        let farm = try mlTestFarm()
        var options = testOptions(batching: false)
        options.referenceTTL = .zero
        let environment = MLEnvironment(farm: farm, options: options)
        _ = try await environment.models.push(model: try randomModel(inputs: 8, hidden: 16, outputs: 4), name: "sp")       // 1 fp32
        _ = try await QuantizeJob(environment: environment).run(try JSONValue(parsing: #"{"model": "sp:1", "precision": "fp16"}"#),
                                                                 context: context("quantize"))                               // 2 fp16

        // Not validated: refused, naming the job to run; the FP32 name and the explicit version still serve.
        await expectRefused(environment, "sp:latest@fp16", saying: ["no fp16 version validated against its FP32 source",
                                                                     "sp:2 not validated against its source sp:1",
                                                                     "run a validate job with candidate sp:2 and reference sp:1"])
        #expect(try await infer(environment, "sp").model == "sp:1")
        #expect(try await infer(environment, "sp:2").precision == "fp16")

        // A failed validation is recorded and refused too.
        #expect(try await validate(environment, candidate: "sp:2", reference: "sp:1", dataset: path, thresholds: #"{"maxAbsDiff": -1}"#) == false)
        await expectRefused(environment, "sp:latest@fp16", saying: ["sp:2 failed validation against sp:1"])
        let failed = try #require(try await environment.models.validation(of: try await environment.models.version("sp", 2)))
        #expect(!failed.passed && failed.reference == "sp:1" && failed.referencePrecision == "fp32")

        // Passed: served.
        #expect(try await validate(environment, candidate: "sp:2", reference: "sp:1", dataset: path, thresholds: #"{"minTop1Agreement": 0.9}"#))
        let served = try await infer(environment, "sp:latest@fp16")
        #expect(served.model == "sp:2" && served.precision == "fp16")

        // A newer fp16 version without a validation does not take over; one pushed by hand (no source) never can.
        _ = try await environment.models.push(model: try Quantization.convert(try randomModel(inputs: 8, hidden: 16, outputs: 4), to: .fp16).model,
                                              name: "sp")                                                                   // 3 fp16, no source
        #expect(try await infer(environment, "sp:latest@fp16").model == "sp:2")
        // A validation with no threshold checks nothing: it does not count.
        _ = try await QuantizeJob(environment: environment).run(try JSONValue(parsing: #"{"model": "sp:1", "precision": "int8"}"#),
                                                                 context: context("quantize"))                               // 4 int8
        #expect(try await validate(environment, candidate: "sp:4", reference: "sp:1", dataset: path, thresholds: "null"))
        await expectRefused(environment, "sp:latest@int8", saying: ["sp:4 failed validation against sp:1"])
        try await deleteNamespace(environment.models.client, farm.configuration.namespace)
    }
}
